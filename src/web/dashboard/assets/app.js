// The dashboard's entry: the header (language, theme, token, API status) and the hash
// router that mounts one page at a time. Each page's mount() returns its cleanup.

import { t, getLang, setLang, applyStatic } from './i18n.js';
import { h, token, setToken } from './ui.js';
import * as overview from './overview.js';
import * as alerts from './alerts.js';
import * as stream from './stream.js';
import * as silences from './silences.js';
import * as bans from './bans.js';

const ROUTES = [
  { re: /^\/$/, page: overview, nav: '/', title: 'nav.overview' },
  { re: /^\/alerts$/, page: alerts.list, nav: '/alerts', title: 'nav.alerts' },
  { re: /^\/alerts\/([^/]+)$/, page: alerts.detail, nav: '/alerts', title: 'alert.title' },
  { re: /^\/stream$/, page: stream, nav: '/stream', title: 'nav.stream' },
  { re: /^\/silences$/, page: silences, nav: '/silences', title: 'nav.silences' },
  { re: /^\/bans$/, page: bans, nav: '/bans', title: 'nav.bans' },
];

let cleanup = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  return { path: path || '/', params };
}

/** Mounts the page of the current hash; `focus`: move the focus to it (navigation). */
function render(focus) {
  const keep = document.activeElement && document.activeElement.id;
  if (cleanup) {
    try {
      cleanup();
    } catch {
      /* a page that fails to clean up must not block the next one */
    }
    cleanup = null;
  }
  const { path, params } = parseHash();
  const main = document.getElementById('main');
  main.replaceChildren();
  let route = null;
  let match = null;
  for (const r of ROUTES) {
    match = path.match(r.re);
    if (match) {
      route = r;
      break;
    }
  }
  for (const a of document.querySelectorAll('nav.main-nav a')) {
    if (route && a.getAttribute('href') === `#${route.nav}`) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!route) {
    main.append(h('h1', {}, t('page.not_found')), h('p', {}, h('a', { href: '#/' }, t('page.home'))));
    document.title = `${t('page.not_found')} · vigil`;
    return;
  }
  document.title = `${t(route.title)} · vigil`;
  const args = match.slice(1).map((a) => decodeURIComponent(a));
  cleanup = route.page.mount(main, { params, args }) || null;
  // Filters re-render the page: give the focus back to the control that had it.
  const again = keep && document.getElementById(keep);
  if (again && main.contains(again)) again.focus();
  else if (focus) main.focus({ preventScroll: true });
}

// ---- Header ----------------------------------------------------------------------------

function applyTheme(theme, remember) {
  document.documentElement.setAttribute('data-theme', theme);
  const btn = document.getElementById('theme-toggle');
  btn.setAttribute('aria-pressed', String(theme === 'dark'));
  if (remember) {
    try {
      localStorage.setItem('vigil.theme', theme);
    } catch {
      /* not remembered */
    }
  }
}

function storedTheme() {
  try {
    return localStorage.getItem('vigil.theme');
  } catch {
    return null;
  }
}

function showConnection(state) {
  const el = document.getElementById('conn');
  el.dataset.state = state;
  el.textContent = { ok: t('conn.ok'), offline: t('conn.offline'), auth: t('conn.auth') }[state] || '';
  if (state === 'auth' && !document.getElementById('token-dialog').open) {
    el.replaceChildren(
      h('button', { type: 'button', class: 'link', onclick: openTokenDialog }, t('conn.auth')),
    );
  }
}

function openTokenDialog() {
  const dialog = document.getElementById('token-dialog');
  const input = document.getElementById('token-input');
  input.value = token();
  dialog.showModal();
  input.focus();
}

function init() {
  const lang = document.getElementById('lang');
  lang.value = getLang();
  applyStatic(document);
  lang.addEventListener('change', () => {
    setLang(lang.value);
    applyStatic(document);
    showConnection(document.getElementById('conn').dataset.state);
    render(false);
  });

  applyTheme(document.documentElement.getAttribute('data-theme') || 'light', false);
  document.getElementById('theme-toggle').addEventListener('click', () => {
    const dark = document.documentElement.getAttribute('data-theme') === 'dark';
    applyTheme(dark ? 'light' : 'dark', true);
  });
  // Follow the system's choice until the user makes one here.
  if (window.matchMedia) {
    window.matchMedia('(prefers-color-scheme: dark)').addEventListener('change', (e) => {
      if (!storedTheme()) applyTheme(e.matches ? 'dark' : 'light', false);
    });
  }

  document.getElementById('token-btn').addEventListener('click', openTokenDialog);
  const dialog = document.getElementById('token-dialog');
  dialog.addEventListener('close', () => {
    if (dialog.returnValue === 'save') setToken(document.getElementById('token-input').value.trim());
    else if (dialog.returnValue === 'clear') setToken('');
    else return;
    render(false);
  });
  window.addEventListener('vigil:connection', (e) => showConnection(e.detail));
  window.addEventListener('hashchange', () => render(true));
  render(false);
}

init();
