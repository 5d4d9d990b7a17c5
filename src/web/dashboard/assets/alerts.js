// Alerts: the history (filters, paging) and one alert in detail: its raw samples, the
// top-N table, the delivery per sink, and a silence for its rule and group.

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
  jsonView,
  panel,
  select,
  field,
  errorBox,
  toast,
  pipelineNames,
  SEVERITIES,
} from './ui.js';

const LIMITS = [25, 50, 100, 200];
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
  const unit = a.unit ? ` ${a.unit}` : '';
  return `${num(a.value)} / ${num(a.threshold)}${unit}`;
}

function deliveriesCell(a) {
  const d = a.deliveries || [];
  if (!d.length) return h('span', { class: 'badge state state-none', title: t('delivery.none_help') }, t('delivery.none'));
  return d.map((x) => h('span', { class: 'delivery', title: x.last_error || x.sink }, h('span', { class: 'sink' }, x.sink), stateBadge(x.state)));
}

function row(a) {
  const href = `#/alerts/${encodeURIComponent(a.id)}`;
  const tr = h(
    'tr',
    { 'data-id': a.id, class: `clickable sev-row-${a.severity}` },
    h('td', { class: 'nowrap' }, timeEl(a.window && a.window.end)),
    h('td', {}, severityBadge(a.severity)),
    h('td', { class: 'title-cell' }, h('a', { href }, a.title || a.id)),
    h('td', {}, h('code', {}, `${a.pipeline}.${a.stage}`)),
    h('td', {}, h('code', {}, a.group_key || '—')),
    h('td', { class: 'num nowrap' }, valueText(a)),
    h('td', {}, t(`status.${a.status}`)),
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
    const limit = LIMITS.includes(Number(params.get('limit'))) ? Number(params.get('limit')) : 50;
    const offset = Math.max(0, Number(params.get('offset')) || 0);
    const state = { severity, pipeline, limit, offset };

    const sevSel = select(
      { id: 'f-severity' },
      [['', t('filter.any_severity')], ...SEVERITIES.map((s) => [s, t('filter.at_least', { sev: t(`sev.${s}`) })])],
      severity,
    );
    const pipeSel = select({ id: 'f-pipeline' }, [['', t('filter.all_pipelines')], ...(pipeline ? [[pipeline, pipeline]] : [])], pipeline);
    const limitSel = select({ id: 'f-limit' }, LIMITS.map((n) => [n, String(n)]), limit);
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
    const problem = h('div', { class: 'problem' });

    main.append(
      h('h1', {}, t('nav.alerts')),
      h(
        'form',
        { class: 'filters', role: 'search', 'aria-label': t('filter.label'), onsubmit: (e) => e.preventDefault() },
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
            ...['col.time', 'col.severity', 'col.title', 'col.rule', 'col.group', 'col.value', 'col.status', 'col.delivery'].map((k) =>
              h('th', { scope: 'col' }, t(k)),
            ),
          ),
        ),
        tbody,
      ),
      h('div', { class: 'paging' }, prev, info, next),
    );

    let shownSig = '';
    async function refresh() {
      const q = new URLSearchParams({ limit: String(limit + 1), offset: String(offset) });
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
      if (!shown.length) {
        tbody.replaceChildren(h('tr', {}, h('td', { colspan: 8, class: 'empty' }, offset ? t('alerts.no_more') : t('alerts.empty'))));
        shownSig = '';
        info.textContent = '';
        return;
      }
      // Re-render only on a change: keeps the keyboard focus in the table.
      const sig = JSON.stringify(shown.map((a) => [a.id, a.status, a.deliveries]));
      if (sig !== shownSig) tbody.replaceChildren(...shown.map(row));
      shownSig = sig;
      info.textContent = t('paging.range', { from: num(offset + 1), to: num(offset + shown.length) });
    }
    // The newest page follows new alerts; older pages stay put.
    if (offset === 0) return poll(refresh, REFRESH_MS);
    refresh();
    return null;
  },
};

/** Finds one alert: from the list already seen, else by walking the history. */
async function find(id) {
  for (let offset = 0; offset < 20000; offset += 500) {
    const data = await api(`/api/v1/alerts?limit=500&offset=${offset}`);
    const alerts = data.alerts || [];
    remember(alerts);
    const hit = alerts.find((a) => a.id === id);
    if (hit) return hit;
    if (alerts.length < 500) return null;
  }
  return null;
}

function facts(a) {
  const rows = [
    ['alert.id', h('code', {}, a.id)],
    ['alert.status', t(`status.${a.status}`)],
    ['alert.rule', h('code', {}, `${a.pipeline}.${a.stage}`)],
    ['alert.group', h('code', {}, a.group_key || '—')],
    ['alert.value', `${valueText(a)}${a.estimate ? ` (${t('alert.estimate', { kind: a.estimate })})` : ''}`],
    ['alert.window', [timeEl(a.window.start), ' – ', timeEl(a.window.end)]],
  ];
  return h(
    'dl',
    { class: 'facts' },
    rows.map(([k, v]) => h('div', { class: 'kv' }, h('dt', {}, t(k)), h('dd', {}, v))),
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
        jsonView(s.record),
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

function deliveries(a) {
  const d = a.deliveries || [];
  if (!d.length) return h('p', { class: 'muted', id: 'deliveries-none' }, t('delivery.none_long'));
  return h(
    'table',
    { class: 'table', id: 'deliveries-table' },
    h(
      'thead',
      {},
      h('tr', {}, ...['col.sink', 'col.state', 'col.attempts', 'col.last_error', 'col.message'].map((k) => h('th', { scope: 'col' }, t(k)))),
    ),
    h(
      'tbody',
      {},
      d.map((x) =>
        h(
          'tr',
          {},
          h('td', {}, h('code', {}, x.sink)),
          h('td', {}, stateBadge(x.state)),
          h('td', { class: 'num' }, num(x.attempts)),
          h('td', {}, x.last_error ? h('span', { class: 'error-text' }, x.last_error) : '—'),
          h('td', {}, h('code', { class: 'muted' }, x.message)),
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

export const detail = {
  mount(main, { args: [id] }) {
    const body = h('div', {}, h('p', { class: 'muted' }, t('common.loading')));
    main.append(h('p', { class: 'crumbs' }, h('a', { href: '#/alerts' }, `← ${t('nav.alerts')}`)), body);
    let gone = false;
    const show = (a) => {
      if (gone) return;
      document.title = `${a.title} · vigil`;
      body.replaceChildren();
      append(
        body,
        h('h1', { class: 'alert-title' }, severityBadge(a.severity), ' ', a.title),
        a.summary ? h('pre', { class: 'summary' }, a.summary) : null,
        facts(a),
        h(
          'div',
          { class: 'grid2' },
          panel(t('alert.deliveries'), { id: 'deliveries' }, deliveries(a)),
          panel(t('silence.title'), { id: 'silence' }, silenceForm(a)),
        ),
        a.top ? panel(t('alert.top'), { id: 'top' }, topTable(a.top)) : null,
        panel(t('alert.samples', { n: (a.samples || []).length }), { id: 'samples' }, samples(a)),
        a.fields && Object.keys(a.fields).length ? panel(t('alert.fields'), {}, jsonView(a.fields)) : null,
      );
    };
    const cached = seen.get(id);
    if (cached) show(cached);
    find(id)
      .then((a) => {
        if (a) {
          // Fresh delivery states; keep what the user typed in the silence form.
          if (!cached || JSON.stringify(cached.deliveries) !== JSON.stringify(a.deliveries)) {
            if (cached) {
              const d = body.querySelector('#deliveries');
              if (d) d.replaceWith(panel(t('alert.deliveries'), { id: 'deliveries' }, deliveries(a)));
            } else show(a);
          }
        } else if (!gone) {
          body.replaceChildren(h('h1', {}, t('alert.not_found')), h('p', {}, h('code', {}, id)));
        }
      })
      .catch((e) => {
        if (!gone && !cached) body.replaceChildren(errorBox(e));
      });
    return () => {
      gone = true;
    };
  },
};
