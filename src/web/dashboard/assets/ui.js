// Small helpers shared by the pages: building elements (never from HTML strings), calling
// the API with the token, badges, times, JSON shown pretty, and notices.

import { t, getLang } from './i18n.js';

const SVG_NS = 'http://www.w3.org/2000/svg';

/** Appends children (nodes, text, arrays; null and false are skipped). */
export function append(el, ...children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') el.addEventListener(k.slice(2), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else if (k === 'value' && 'value' in el && !(el instanceof SVGElement)) el.value = v;
    else if (k === 'checked' && el instanceof HTMLInputElement) el.checked = Boolean(v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  return append(el, children);
}

/** An HTML element: h('a', {href: '#/'}, 'text', child...). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG_NS, tag), attrs, children);
}

// ---- API -------------------------------------------------------------------------------

const TOKEN_KEY = 'vigil.token';

/** The token typed into this browser, or ''. */
export function token() {
  try {
    return localStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

export function setToken(value) {
  try {
    if (value) localStorage.setItem(TOKEN_KEY, value);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    /* storage refused: the token lasts until the page is closed */
  }
}

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/** Tells the header whether the API answers: 'ok', 'offline' or 'auth'. */
function connection(state) {
  window.dispatchEvent(new CustomEvent('vigil:connection', { detail: state }));
}

/** Calls the JSON API; throws an ApiError with the server's message on failure. */
export async function api(path, { method = 'GET', body } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const tk = token();
  if (tk) headers.Authorization = `Bearer ${tk}`;
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
  } catch {
    connection('offline');
    throw new ApiError(0, t('error.offline'));
  }
  if (resp.status === 401) {
    connection('auth');
    throw new ApiError(401, t('error.auth'));
  }
  connection('ok');
  let data = null;
  try {
    data = await resp.json();
  } catch {
    data = null;
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, (data && data.error) || `${resp.status} ${resp.statusText}`);
  }
  return data;
}

/** Calls `fn` now and then `every` ms after each call ends, until the returned stop. */
export function poll(fn, every) {
  let stopped = false;
  let timer = null;
  const run = async () => {
    try {
      await fn();
    } finally {
      if (!stopped) timer = setTimeout(run, every);
    }
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---- Formatting ------------------------------------------------------------------------

export const SEVERITIES = ['info', 'low', 'medium', 'high', 'critical'];

export function num(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return String(n ?? '—');
  return new Intl.NumberFormat(getLang(), { maximumFractionDigits: 2 }).format(n);
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

/** The browser's time zone at `d`, short: `UTC`, `UTC+8`, `UTC-3:30`. */
function zone(d) {
  const off = -d.getTimezoneOffset();
  if (off === 0) return 'UTC';
  const abs = Math.abs(off);
  const mins = abs % 60;
  return `UTC${off < 0 ? '-' : '+'}${Math.floor(abs / 60)}${mins ? `:${pad(mins)}` : ''}`;
}

/**
 * `YYYY-MM-DD HH:MM:SS UTC+8` in local time, with its zone (same in every language:
 * analysts compare them, and with times from mails and logs in UTC).
 */
export function time(value) {
  if (value === null || value === undefined || value === '') return '—';
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())} ${zone(d)}`;
}

/** Bytes per unit of a size unit (`B`, `KiB` … `PiB`, and `KB` … read as binary); null otherwise. */
function unitBytes(unit) {
  const i = ['b', 'kib', 'mib', 'gib', 'tib', 'pib'].indexOf(String(unit).toLowerCase().replace(/^([kmgtp])b$/, '$1ib'));
  return i < 0 ? null : 1024 ** i;
}

/** `n` (counted in `unit`) as a size in the binary unit its magnitude calls for: `2.14 TiB`. */
export function size(n, unit = 'B') {
  const per = unitBytes(unit);
  if (per === null || !Number.isFinite(n)) return null;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'];
  let v = Math.abs(n * per);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  const text = i === 0 ? String(Math.round(v)) : String(Number(v.toFixed(2)));
  return `${n < 0 ? '-' : ''}${text} ${units[i]}`;
}

/** A <time> element with the local time shown and the UTC instant in its title. */
export function timeEl(value) {
  const d = new Date(value);
  const iso = Number.isNaN(d.getTime()) ? '' : d.toISOString();
  return h('time', { datetime: iso || null, title: iso || null }, time(value));
}

/** "in 2 hours" / "3 minutes ago", in the current language. */
export function relative(ms) {
  const diff = (typeof ms === 'number' ? ms : new Date(ms).getTime()) - Date.now();
  const abs = Math.abs(diff);
  const rtf = new Intl.RelativeTimeFormat(getLang(), { numeric: 'auto' });
  const units = [
    ['day', 86400000],
    ['hour', 3600000],
    ['minute', 60000],
    ['second', 1000],
  ];
  for (const [unit, size] of units) {
    if (abs >= size || unit === 'second') return rtf.format(Math.round(diff / size), unit);
  }
  return '';
}

export function severityBadge(sev) {
  if (!sev) return h('span', { class: 'muted' }, '—');
  return h('span', { class: `badge sev sev-${sev}` }, t(`sev.${sev}`));
}

export function stateBadge(state) {
  return h('span', { class: `badge state state-${state}` }, t(`state.${state}`));
}

/** An alert's lifecycle: `firing` or `resolved`; a one-off alert (not an episode, never
 * resolved) has a neutral badge. */
export function statusBadge(alert) {
  const status = alert.status === 'resolved' ? 'resolved' : 'firing';
  const oneOff = alert.episode === false;
  return h(
    'span',
    {
      class: `badge status status-${status}${oneOff ? ' one-off' : ''}`,
      'data-status': status,
      title: oneOff ? t('status.one_off_help') : t(`status.${status}_help`),
    },
    t(`status.${status}`),
  );
}

const DURATION_UNITS = [
  ['dur.d', 86400000],
  ['dur.h', 3600000],
  ['dur.m', 60000],
  ['dur.s', 1000],
];

/** A span of time in its largest unit and the next one: "2h 5m", "45s", "0s". */
export function duration(ms) {
  const total = Math.max(0, Math.round((Number(ms) || 0) / 1000)) * 1000;
  const i = DURATION_UNITS.findIndex(([, size]) => total >= size);
  if (i < 0) return t('dur.s', { n: 0 });
  const [key, size] = DURATION_UNITS[i];
  const parts = [t(key, { n: Math.floor(total / size) })];
  const next = DURATION_UNITS[i + 1];
  if (next) {
    const n = Math.floor((total % size) / next[1]);
    if (n) parts.push(t(next[0], { n }));
  }
  return parts.join(' ');
}

// ---- JSON ------------------------------------------------------------------------------

/** A <pre> with `value` pretty-printed and coloured by token kind. */
export function jsonView(value) {
  const pre = h('pre', { class: 'json', tabindex: '0' });
  const parts = [];
  const tok = (cls, text) => parts.push(h('span', { class: cls }, text));
  const walk = (v, ind) => {
    if (v === null) tok('j-null', 'null');
    else if (Array.isArray(v)) {
      if (v.length === 0) return void parts.push('[]');
      parts.push('[\n');
      v.forEach((x, i) => {
        parts.push(`${ind}  `);
        walk(x, `${ind}  `);
        parts.push(i < v.length - 1 ? ',\n' : '\n');
      });
      parts.push(`${ind}]`);
    } else if (typeof v === 'object') {
      const keys = Object.keys(v);
      if (keys.length === 0) return void parts.push('{}');
      parts.push('{\n');
      keys.forEach((k, i) => {
        parts.push(`${ind}  `);
        tok('j-key', JSON.stringify(k));
        parts.push(': ');
        walk(v[k], `${ind}  `);
        parts.push(i < keys.length - 1 ? ',\n' : '\n');
      });
      parts.push(`${ind}}`);
    } else if (typeof v === 'string') tok('j-str', JSON.stringify(v));
    else if (typeof v === 'number') tok('j-num', String(v));
    else if (typeof v === 'boolean') tok('j-bool', String(v));
    else parts.push(String(v));
  };
  walk(value, '');
  return append(pre, parts);
}

/** One line of JSON, cut at `max` characters. */
export function compact(value, max = 160) {
  const text = JSON.stringify(value) ?? '';
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

// ---- Notices ---------------------------------------------------------------------------

/** A short notice in the corner; `kind` is 'ok' or 'error'. */
/** Toasts shown at once at most: a burst of alerts replaces the oldest. */
export const MAX_TOASTS = 3;

/**
 * A notice in the corner that goes away by itself. At most MAX_TOASTS at once (a new one
 * drops the oldest), and the stack never reaches up over the header: its height is kept
 * below the space between the header and the bottom of the window.
 */
export function toast(message, kind = 'ok') {
  const box = document.getElementById('toasts');
  if (!box) return;
  const el = h('div', { class: `toast toast-${kind}`, title: String(message) }, message);
  box.append(el);
  while (box.children.length > MAX_TOASTS) box.firstElementChild.remove();
  fitToasts(box);
  setTimeout(() => el.remove(), kind === 'error' ? 8000 : 4000);
}

function fitToasts(box) {
  const header = document.querySelector('.topbar');
  const below = header ? header.getBoundingClientRect().bottom : 0;
  const gap = 16;
  const room = Math.max(0, window.innerHeight - below - 2 * gap);
  box.style.maxHeight = `${room}px`;
}

window.addEventListener('resize', () => {
  const box = document.getElementById('toasts');
  if (box) fitToasts(box);
});

/** An error message box for a page. */
export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err && err.message ? err.message : String(err));
}

/** A panel with a heading. */
export function panel(title, attrs, ...children) {
  const id = `h-${Math.random().toString(36).slice(2, 9)}`;
  return h(
    'section',
    { class: 'panel', 'aria-labelledby': id, ...(attrs || {}) },
    h('h2', { id }, title),
    ...children,
  );
}

/** A <select> of `[value, label]` options with `current` selected. */
export function select(attrs, options, current) {
  const el = h('select', attrs);
  for (const [value, label] of options) {
    const o = h('option', { value }, label);
    if (String(value) === String(current ?? '')) o.selected = true;
    el.append(o);
  }
  return el;
}

/** A labelled control: <label>text</label> + control, in a wrapper. */
export function field(label, control) {
  if (!control.id) control.id = `f-${Math.random().toString(36).slice(2, 9)}`;
  return h('div', { class: 'field' }, h('label', { for: control.id }, label), control);
}

/** The pipelines' names (for filters); [] when the API does not answer. */
export async function pipelineNames() {
  try {
    const data = await api('/api/v1/pipelines');
    return (data.pipelines || []).map((p) => p.name);
  } catch {
    return [];
  }
}
