// Alerts: the history (filters, paging) and one alert in detail: its lifecycle, its raw
// samples, the top-N table, its deliveries (one per notification message), and a silence
// for its rule and group.
//
// The history keeps one row per alert id: an episode (one per rule and group key while
// its condition holds) is `firing`, updated in place, then `resolved` — the same row.

import { t } from './i18n.js';
import {
  h,
  append,
  api,
  poll,
  num,
  time,
  timeEl,
  relative,
  severityBadge,
  stateBadge,
  statusBadge,
  duration,
  jsonView,
  panel,
  select,
  field,
  errorBox,
  toast,
  pipelineNames,
  SEVERITIES,
  size,
} from './ui.js';
import { processView } from './process.js';

const LIMITS = [25, 50, 100, 200];
const STATUSES = ['firing', 'resolved'];
const REFRESH_MS = 5000;

/** Alerts seen lately, by id: the detail view shows them at once. */
const seen = new Map();

function remember(alerts) {
  for (const a of alerts) seen.set(a.id, a);
  while (seen.size > 2000) seen.delete(seen.keys().next().value);
}

function go(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== '' && v !== null && v !== undefined) q.set(k, v);
  const qs = q.toString();
  location.hash = qs ? `#/alerts?${qs}` : '#/alerts';
}

function valueText(a) {
  // A size reads in the unit its magnitude calls for (2.14 TiB / 1 GiB).
  const v = a.unit ? size(a.value, a.unit) : null;
  if (v !== null) return `${v} / ${size(a.threshold, a.unit)}`;
  const unit = a.unit ? ` ${a.unit}` : '';
  return `${num(a.value)} / ${num(a.threshold)}${unit}`;
}

/** `first_seen` or `last_seen` of `a`; null when unknown (a row stored before alerts
 * had them reads as the epoch). */
function seenAt(a, key) {
  const v = a[key];
  const ms = v ? new Date(v).getTime() : NaN;
  return Number.isFinite(ms) && ms > 0 ? v : null;
}

function seenEl(a, key) {
  const v = seenAt(a, key);
  return v ? timeEl(v) : h('span', { class: 'muted' }, '—');
}

/** A change of a delivery: new, still firing, resolved. */
function changeText(change) {
  return h('span', { class: `change change-${change}` }, t(`change.${change}`));
}

/** The messages of `a`, oldest first. */
function messages(a) {
  return [...(a.deliveries || [])].sort((x, y) => (x.at || 0) - (y.at || 0) || String(x.sink).localeCompare(String(y.sink)));
}

/** Per sink: where its latest message stands (how many messages it made, in the title). */
function deliveriesCell(a) {
  const d = messages(a);
  if (!d.length) return h('span', { class: 'badge state state-none', title: t('delivery.none_help') }, t('delivery.none'));
  const bySink = new Map();
  for (const x of d) bySink.set(x.sink, [...(bySink.get(x.sink) || []), x]);
  return [...bySink].map(([sink, list]) => {
    const last = list[list.length - 1];
    const title = [
      list.length > 1 ? t('delivery.messages', { n: list.length }) : null,
      ...list.map((x) => `${time(x.at)} ${t(`change.${x.change}`)}: ${t(`state.${x.state}`)}${x.last_error ? ` (${x.last_error})` : ''}`),
    ]
      .filter(Boolean)
      .join('\n');
    return h(
      'span',
      { class: 'delivery', title, 'data-sink': sink, 'data-messages': list.length },
      h('span', { class: 'sink' }, sink),
      stateBadge(last.state),
      list.length > 1 ? h('span', { class: 'count muted' }, `×${list.length}`) : null,
    );
  });
}

function updatesCell(a) {
  const n = Number(a.updates) || 0;
  if (!n) return h('span', { class: 'muted' }, '—');
  return h('span', { title: n === 1 ? t('alert.updates_one') : t('alert.updates_n', { n: num(n) }) }, num(n));
}

function statusCell(a) {
  return [statusBadge(a), a.episode === false ? h('span', { class: 'one-off-note muted' }, t('status.one_off')) : null];
}

/** Whether an active silence holds the alert's notifications, and until when. */
function silencedCell(a) {
  const until = a.silenced && a.silenced.until;
  if (!until) return h('span', { class: 'muted' }, '—');
  return h(
    'a',
    { href: '#/silences', class: 'silenced', title: t('alert.silenced_help', { until: time(until) }) },
    '🔕 ',
    h('span', {}, t('alert.silenced_until', { until: time(until) })),
  );
}

function row(a) {
  const href = `#/alerts/${encodeURIComponent(a.id)}`;
  const resolved = a.status === 'resolved';
  const tr = h(
    'tr',
    {
      'data-id': a.id,
      'data-status': a.status,
      class: `clickable status-${resolved ? 'resolved' : 'firing'}${resolved ? '' : ` sev-row-${a.severity}`}`,
    },
    h('td', { class: 'status-cell nowrap' }, statusCell(a)),
    h('td', { class: 'silenced-cell' }, silencedCell(a)),
    h('td', {}, severityBadge(a.severity)),
    h('td', { class: 'title-cell' }, h('a', { href }, a.title || a.id)),
    h('td', { class: 'rule-cell' }, h('code', {}, a.pipeline, h('wbr', {}), `.${a.stage}`)),
    h('td', { class: 'group-cell' }, h('code', {}, a.group_key || '—')),
    h('td', { class: 'num nowrap' }, valueText(a)),
    h('td', { class: 'nowrap first-seen' }, seenEl(a, 'first_seen')),
    h('td', { class: 'nowrap last-seen' }, seenEl(a, 'last_seen')),
    h('td', { class: 'num updates' }, updatesCell(a)),
    h('td', { class: 'deliveries' }, deliveriesCell(a)),
  );
  tr.addEventListener('click', (e) => {
    if (e.target.closest('a')) return;
    location.hash = href;
  });
  return tr;
}

export const list = {
  mount(main, { params }) {
    const severity = params.get('severity') || '';
    const pipeline = params.get('pipeline') || '';
    const status = STATUSES.includes(params.get('status')) ? params.get('status') : '';
    const limit = LIMITS.includes(Number(params.get('limit'))) ? Number(params.get('limit')) : 50;
    const offset = Math.max(0, Number(params.get('offset')) || 0);
    const state = { status, severity, pipeline, limit, offset };

    const statusSel = select({ id: 'f-status' }, [['', t('filter.any_status')], ...STATUSES.map((s) => [s, t(`status.${s}`)])], status);

    const sevSel = select(
      { id: 'f-severity' },
      [['', t('filter.any_severity')], ...SEVERITIES.map((s) => [s, t('filter.at_least', { sev: t(`sev.${s}`) })])],
      severity,
    );
    const pipeSel = select({ id: 'f-pipeline' }, [['', t('filter.all_pipelines')], ...(pipeline ? [[pipeline, pipeline]] : [])], pipeline);
    const limitSel = select({ id: 'f-limit' }, LIMITS.map((n) => [n, String(n)]), limit);
    statusSel.addEventListener('change', () => go({ ...state, status: statusSel.value, offset: 0 }));
    sevSel.addEventListener('change', () => go({ ...state, severity: sevSel.value, offset: 0 }));
    pipeSel.addEventListener('change', () => go({ ...state, pipeline: pipeSel.value, offset: 0 }));
    limitSel.addEventListener('change', () => go({ ...state, limit: limitSel.value, offset: 0 }));
    pipelineNames().then((names) => {
      for (const n of names) if (n !== pipeline) pipeSel.append(h('option', { value: n }, n));
    });

    const tbody = h('tbody', { id: 'alerts-rows' });
    const info = h('span', { class: 'muted', id: 'alerts-range', 'aria-live': 'polite' });
    const prev = h('button', { type: 'button', class: 'btn', id: 'alerts-prev', disabled: offset === 0 }, t('paging.prev'));
    const next = h('button', { type: 'button', class: 'btn', id: 'alerts-next', disabled: true }, t('paging.next'));
    prev.addEventListener('click', () => go({ ...state, offset: Math.max(0, offset - limit) }));
    next.addEventListener('click', () => go({ ...state, offset: offset + limit }));
    // The first and the last page: the history says how many alerts match (`total`), and
    // reads a page near its end as fast as one near its start.
    const newest = h('button', { type: 'button', class: 'btn', id: 'alerts-newest', disabled: offset === 0 }, t('paging.newest'));
    const oldest = h('button', { type: 'button', class: 'btn', id: 'alerts-oldest', disabled: true }, t('paging.oldest'));
    let lastOffset = null;
    newest.addEventListener('click', () => go({ ...state, offset: 0 }));
    oldest.addEventListener('click', () => {
      if (lastOffset !== null) go({ ...state, offset: lastOffset });
    });
    const problem = h('div', { class: 'problem' });

    main.append(
      h('h1', {}, t('nav.alerts')),
      h(
        'form',
        { class: 'filters', role: 'search', 'aria-label': t('filter.label'), onsubmit: (e) => e.preventDefault() },
        field(t('filter.status'), statusSel),
        field(t('filter.severity'), sevSel),
        field(t('filter.pipeline'), pipeSel),
        field(t('filter.per_page'), limitSel),
      ),
      problem,
      h(
        'table',
        { class: 'table alerts', id: 'alerts-table' },
        h('caption', { class: 'visually-hidden' }, t('alerts.caption')),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...[
              ['col.status'],
              ['col.silenced'],
              ['col.severity'],
              ['col.title'],
              ['col.rule'],
              ['col.group'],
              ['col.value', 'num'],
              ['col.first_seen'],
              ['col.last_seen'],
              ['col.updates', 'num'],
              ['col.delivery'],
            ].map(([k, cls]) => h('th', { scope: 'col', class: cls || null }, t(k))),
          ),
        ),
        tbody,
      ),
      h('div', { class: 'paging' }, h('span', { class: 'paging-group' }, newest, prev), info, h('span', { class: 'paging-group' }, next, oldest)),
    );

    let shownSig = '';
    async function refresh() {
      const q = new URLSearchParams({ limit: String(limit + 1), offset: String(offset) });
      if (status) q.set('status', status);
      if (severity) q.set('severity', severity);
      if (pipeline) q.set('pipeline', pipeline);
      let data;
      try {
        data = await api(`/api/v1/alerts?${q}`);
      } catch (e) {
        problem.replaceChildren(errorBox(e));
        return;
      }
      problem.replaceChildren();
      const all = data.alerts || [];
      remember(all);
      const shown = all.slice(0, limit);
      next.disabled = all.length <= limit;
      const total = Number.isFinite(data.total) ? data.total : null;
      lastOffset = total ? Math.floor((total - 1) / limit) * limit : null;
      oldest.disabled = lastOffset === null || offset === lastOffset;
      if (!shown.length) {
        const empty = offset ? t('alerts.no_more') : status || severity || pipeline ? t('alerts.none_match') : t('alerts.empty');
        tbody.replaceChildren(h('tr', {}, h('td', { colspan: 10, class: 'empty' }, empty)));
        shownSig = '';
        info.textContent = '';
        return;
      }
      // Re-render only on a change: keeps the keyboard focus in the table.
      const sig = JSON.stringify(shown.map((a) => [a.id, a.status, a.updates, a.value, a.last_seen, a.deliveries]));
      if (sig !== shownSig) tbody.replaceChildren(...shown.map(row));
      shownSig = sig;
      const range = { from: num(offset + 1), to: num(offset + shown.length) };
      info.textContent = total === null ? t('paging.range', range) : t('paging.range_of', { ...range, total: num(total) });
    }
    // The newest page follows new alerts; older pages stay put.
    if (offset === 0) return poll(refresh, REFRESH_MS);
    refresh();
    return null;
  },
};

/** Finds one alert: from the list already seen, else by walking the history (by
 * cursor: each page costs the same at any depth). */
async function find(id) {
  let after = null;
  for (let n = 0; n < 20000; n += 500) {
    const q = new URLSearchParams({ limit: '500' });
    if (after) q.set('after', after);
    const data = await api(`/api/v1/alerts?${q}`);
    const alerts = data.alerts || [];
    remember(alerts);
    const hit = alerts.find((a) => a.id === id);
    if (hit) return hit;
    if (!data.next) return null;
    after = data.next;
  }
  return null;
}

/** How long the episode went on: from first to last seen (event time, as in the
 * notifications' `lasted`); "firing for …" while it still fires. */
function lasted(a) {
  const first = seenAt(a, 'first_seen');
  const last = seenAt(a, 'last_seen');
  if (!first || !last) return null;
  const d = duration(new Date(last).getTime() - new Date(first).getTime());
  return a.status === 'resolved' ? t('alert.lasted', { d }) : t('alert.firing_for', { d });
}

function facts(a) {
  const episode = a.episode !== false;
  const resolved = a.status === 'resolved';
  const n = Number(a.updates) || 0;
  const rows = [
    ['alert.status', 'status', [statusBadge(a), episode ? null : h('span', { class: 'muted' }, ` ${t('status.one_off_help')}`)]],
    ['alert.first_seen', 'first-seen', seenEl(a, 'first_seen')],
    ['alert.last_seen', 'last-seen', seenEl(a, 'last_seen')],
    episode ? ['alert.duration', 'duration', h('span', { title: t('alert.duration_help') }, lasted(a) || '—')] : null,
    episode && resolved ? ['alert.resolved_at', 'resolved-at', timeEl(a.window.end)] : null,
    [
      'alert.updates',
      'updates',
      episode ? h('span', { title: t('alert.updates_help') }, n > 1 ? t('alert.updates_n', { n: num(n) }) : n === 1 ? t('alert.updates_one') : t('alert.updates_none')) : '—',
    ],
    ['alert.id', 'id', h('code', {}, a.id)],
    ['alert.rule', 'rule', h('code', {}, `${a.pipeline}.${a.stage}`)],
    ['alert.group', 'group', h('code', {}, a.group_key || '—')],
    ['alert.value', 'value', `${valueText(a)}${a.estimate ? ` (${t('alert.estimate', { kind: a.estimate })})` : ''}`],
    ['alert.window', 'window', [timeEl(a.window.start), ' – ', timeEl(a.window.end)]],
  ];
  return h(
    'dl',
    { class: `facts status-${episode ? (resolved ? 'resolved' : 'firing') : 'one-off'}`, id: 'facts' },
    rows.filter(Boolean).map(([k, name, v]) => h('div', { class: 'kv', 'data-fact': name }, h('dt', {}, t(k)), h('dd', {}, v))),
  );
}

/**
 * The workloads and VENs the raw samples name, once each (at most 10): role, name (else
 * hostname, else href), labels and href — read before the raw JSON. The mail lists the
 * same (render.rs `workloads_of`).
 */
function workloadsOf(a) {
  const out = [];
  const seen = new Set();
  const add = (role, w, connection) => {
    if (!w || typeof w !== 'object' || Array.isArray(w) || out.length >= 10) return;
    const name = w.name || w.hostname || w.href;
    if (!name || seen.has(`${w.href}\u0000${name}`)) return;
    seen.add(`${w.href}\u0000${name}`);
    const labels = (Array.isArray(w.labels) ? w.labels : []).filter((l) => l && l.key).map((l) => `${l.key}=${l.value}`);
    out.push({ role, name, href: w.href || '', labels, connection });
  };
  for (const s of a.samples || []) {
    const r = s.record || {};
    // A PCE flow names the connection it was read from.
    const connection = r.vigil && typeof r.vigil.connection === 'string' ? r.vigil.connection : null;
    add('source', r.src && r.src.workload, connection);
    add('destination', r.dst && r.dst.workload, connection);
    add('agent', r.created_by && r.created_by.agent);
    for (const n of Array.isArray(r.notifications) ? r.notifications : []) {
      for (const ag of (n && n.info && Array.isArray(n.info.agents) ? n.info.agents : [])) add('agent', ag);
    }
  }
  return out;
}

/**
 * The workload's page on the PCE console (`<console>/#/workloads/<uuid>`, the route
 * Illumio's own integrations link to), when the connection it came from is known — or is
 * the only one; null otherwise.
 */
function consoleLink(w, consoles) {
  const m = /^\/orgs\/\d+\/workloads\/([^/?#]+)$/.exec(w.href || '');
  if (!m || !consoles) return null;
  const names = Object.keys(consoles);
  const base = w.connection ? consoles[w.connection] : names.length === 1 ? consoles[names[0]] : null;
  return base ? `${base}/#/workloads/${encodeURIComponent(decodeURIComponent(m[1]))}` : null;
}

function workloads(list, consoles) {
  return h(
    'table',
    { class: 'table workloads', id: 'workloads-table' },
    h('tbody', {}, ...list.map((w) =>
      h(
        'tr',
        {},
        h('td', { class: 'muted' }, t(`alert.workload_${w.role}`)),
        h('td', {}, h('strong', {}, w.name)),
        h('td', {}, ...w.labels.map((l) => h('span', { class: 'badge label' }, l))),
        h('td', {}, h('code', {}, w.href)),
        h('td', {}, (() => {
          const link = consoleLink(w, consoles);
          return link ? h('a', { href: link, target: '_blank', rel: 'noopener noreferrer', class: 'pce-link' }, t('alert.open_in_pce')) : null;
        })()),
      ),
    )),
  );
}

function samples(a) {
  const list = a.samples || [];
  if (!list.length) return h('p', { class: 'muted' }, t('alert.no_samples'));
  return h(
    'div',
    { class: 'samples' },
    list.map((s, i) =>
      h(
        'article',
        { class: 'sample', 'aria-label': t('alert.sample_n', { n: i + 1 }) },
        h('header', {}, h('strong', {}, `#${i + 1}`), ' ', timeEl(s.time), ' · ', h('code', {}, s.source)),
        // A Tetragon event: its process tree first, the raw line under it.
        processView(s.record) || jsonView(s.record),
      ),
    ),
  );
}

function topTable(top) {
  const total = top.total || 0;
  const cell = (v) => (typeof v === 'string' ? v : JSON.stringify(v));
  return h(
    'div',
    {},
    h(
      'table',
      { class: 'table top-n', id: 'top-table' },
      h('caption', {}, t('top.caption', { measure: top.measure, by: top.by.join(', ') })),
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          h('th', { scope: 'col', class: 'num' }, '#'),
          ...top.by.map((b) => h('th', { scope: 'col' }, b)),
          h('th', { scope: 'col', class: 'num' }, top.measure),
          h('th', { scope: 'col', class: 'num' }, t('top.share')),
        ),
      ),
      h(
        'tbody',
        {},
        top.rows.map((r, i) =>
          h(
            'tr',
            {},
            h('td', { class: 'num' }, String(i + 1)),
            ...r.key.map((k) => h('td', {}, h('code', {}, cell(k)))),
            h('td', { class: 'num' }, num(r.value)),
            h('td', { class: 'num' }, total > 0 ? `${num((100 * r.value) / total)} %` : '—'),
          ),
        ),
      ),
    ),
    h('p', { class: 'muted' }, t('top.footer', { shown: num(top.rows.length), keys: num(top.keys), total: num(total) })),
  );
}

/** What the peer answered (for a ban, what was banned: `banned 203.0.113.7 for 1h`),
 * and the bans made in the message, with how each stands or ended. */
function outcomeCell(x) {
  const bans = (x.bans || []).map((b) =>
    h(
      'div',
      { class: 'ban', 'data-address': b.address, 'data-state': b.state },
      h('a', { href: '#/bans' }, h('code', {}, b.address)),
      ' ',
      h('span', { class: `badge ${b.state === 'active' ? 'failed' : 'state-none'}` }, t(`banstate.${b.state}`)),
      ' ',
      b.state === 'active' ? h('span', { class: 'muted' }, relative(b.expires_at)) : b.ended_at ? timeEl(b.ended_at) : '',
    ),
  );
  if (!x.answer && !bans.length) return '—';
  return h('div', {}, x.answer ? h('span', { class: 'answer' }, x.answer) : null, ...bans);
}

/** One row per notification message the alert went out in (its first, reminders, its
 * resolution), oldest first. */
function deliveries(a) {
  const d = messages(a);
  if (!d.length) return h('p', { class: 'muted', id: 'deliveries-none' }, t('delivery.none_long'));
  return h(
    'div',
    { class: 'table-scroll' },
    h(
      'table',
      { class: 'table', id: 'deliveries-table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...[['col.sink'], ['col.change'], ['col.state'], ['col.attempts', 'num'], ['col.time'], ['col.outcome'], ['col.last_error'], ['col.message']].map(([k, cls]) =>
            h('th', { scope: 'col', class: cls || null }, t(k)),
          ),
        ),
      ),
      h(
        'tbody',
        {},
        d.map((x) =>
          h(
            'tr',
            { 'data-change': x.change, 'data-message': x.message },
            h('td', {}, h('code', {}, x.sink)),
            h('td', { class: 'change-cell' }, changeText(x.change)),
            h('td', {}, stateBadge(x.state)),
            h('td', { class: 'num' }, num(x.attempts)),
            h('td', { class: 'nowrap' }, x.at ? timeEl(x.at) : '—'),
            h('td', { class: 'outcome' }, outcomeCell(x)),
            h('td', {}, x.last_error ? h('span', { class: 'error-text' }, x.last_error) : '—'),
            // The message id (the webhook's X-Vigil-Delivery): its start, whole on hover.
            h('td', {}, h('code', { class: 'muted message-id', title: x.message }, String(x.message).slice(0, 8))),
          ),
        ),
      ),
    ),
  );
}

/** The silence this alert's "Silence" button makes: its rule and its group. */
export function matchersFor(a) {
  return [
    { field: 'pipeline', value: a.pipeline },
    { field: 'stage', value: a.stage },
    { field: 'group_key', value: a.group_key },
  ];
}

function user() {
  try {
    return localStorage.getItem('vigil.user') || '';
  } catch {
    return '';
  }
}

function silenceForm(a) {
  const matchers = matchersFor(a);
  const duration = select(
    { id: 'silence-duration' },
    ['30m', '1h', '2h', '4h', '8h', '24h', '7d'].map((d) => [d, d]),
    '2h',
  );
  const comment = h('input', { id: 'silence-comment', type: 'text', value: t('silence.default_comment', { title: a.title }) });
  const by = h('input', { id: 'silence-by', type: 'text', value: user() || 'dashboard', autocomplete: 'username' });
  const out = h('div', { id: 'silence-result', 'aria-live': 'polite' });
  const button = h('button', { type: 'submit', class: 'btn primary', id: 'silence-btn' }, t('silence.button'));
  const form = h(
    'form',
    { class: 'silence-form', id: 'silence-form' },
    h('p', {}, t('silence.from_alert_help')),
    h('ul', { class: 'matchers' }, matchers.map((m) => h('li', {}, h('code', { class: 'chip' }, `${m.field} = ${m.value}`)))),
    h('div', { class: 'form-row' }, field(t('silence.duration'), duration), field(t('silence.comment'), comment), field(t('silence.created_by'), by)),
    h('div', { class: 'row-actions' }, button),
    out,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    button.disabled = true;
    try {
      localStorage.setItem('vigil.user', by.value.trim());
    } catch {
      /* not remembered */
    }
    try {
      const created = await api('/api/v1/silences', {
        method: 'POST',
        body: { matchers, duration: duration.value, comment: comment.value, created_by: by.value.trim() },
      });
      out.replaceChildren(
        h(
          'p',
          { class: 'ok-text', id: 'silence-created', 'data-silence': created.id },
          t('silence.created_until', { until: time(created.expires_at), rel: relative(created.expires_at) }),
          ' ',
          h('a', { href: '#/silences' }, t('silence.see_all')),
        ),
      );
      toast(t('silence.created'));
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      button.disabled = false;
    }
  });
  return form;
}

/** Whether the page should look again: the episode still fires, or a message of it is
 * still on its way. */
function live(a) {
  return (a.episode !== false && a.status === 'firing') || (a.deliveries || []).some((x) => x.state === 'pending' || x.state === 'gathering' || x.state === 'sending');
}

function heading(a) {
  return h('h1', { class: 'alert-title', id: 'alert-heading' }, severityBadge(a.severity), ' ', a.title, ' ', statusBadge(a));
}

export const detail = {
  mount(main, { args: [id] }) {
    const body = h('div', {}, h('p', { class: 'muted' }, t('common.loading')));
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/alerts' }, `← ${t('nav.alerts')}`)), body);
    let gone = false;
    let shown = null;
    // The PCE consoles, for links to each workload's page.
    let consoles = null;
    const consolesLoaded = api('/api/v1/pipelines')
      .then((d) => (d && d.pce_consoles) || {})
      .catch(() => ({}));
    const workloadsPanel = (a) =>
      workloadsOf(a).length ? panel(t('alert.workloads'), { id: 'workloads' }, workloads(workloadsOf(a), consoles)) : null;
    consolesLoaded.then((c) => {
      consoles = c;
      if (!gone && shown) body.querySelector('#workloads')?.replaceWith(workloadsPanel(shown));
    });
    const show = (a) => {
      if (gone) return;
      shown = a;
      document.title = `${a.title} · vigil`;
      body.replaceChildren();
      append(
        body,
        heading(a),
        a.summary ? h('pre', { class: 'summary' }, a.summary) : null,
        facts(a),
        h(
          'div',
          { class: 'grid2' },
          panel(t('alert.deliveries'), { id: 'deliveries' }, deliveries(a)),
          panel(t('silence.title'), { id: 'silence' }, silenceForm(a)),
        ),
        a.top ? panel(t('alert.top'), { id: 'top' }, topTable(a.top)) : null,
        workloadsPanel(a),
        panel(t('alert.samples', { n: (a.samples || []).length }), { id: 'samples' }, samples(a)),
        a.fields && Object.keys(a.fields).length ? panel(t('alert.fields'), {}, jsonView(a.fields)) : null,
      );
    };
    // A newer report of the same alert: its lifecycle and deliveries change; what the
    // user typed in the silence form stays.
    const update = (a) => {
      if (gone) return;
      const before = shown;
      shown = a;
      const sig = (x) => JSON.stringify([x.status, x.updates, x.value, x.first_seen, x.last_seen, x.window, x.deliveries]);
      if (sig(before) === sig(a)) return;
      body.querySelector('#alert-heading')?.replaceWith(heading(a));
      body.querySelector('#facts')?.replaceWith(facts(a));
      body.querySelector('#deliveries')?.replaceWith(panel(t('alert.deliveries'), { id: 'deliveries' }, deliveries(a)));
    };
    const cached = seen.get(id);
    if (cached) show(cached);
    let looked = false;
    const look = async () => {
      // Once it is resolved and delivered there is nothing more to follow.
      if (looked && (!shown || !live(shown))) return;
      looked = true;
      try {
        const a = await find(id);
        if (gone) return;
        if (a) {
          if (shown) update(a);
          else show(a);
        } else if (!shown) {
          body.replaceChildren(h('h1', {}, t('alert.not_found')), h('p', {}, h('code', {}, id)));
        }
      } catch (e) {
        if (!gone && !shown) body.replaceChildren(errorBox(e));
      }
    };
    const stop = poll(look, REFRESH_MS);
    return () => {
      gone = true;
      stop();
    };
  },
};
