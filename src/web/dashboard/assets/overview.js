// Overview: totals, the pipeline graph with live counters (every 2 s), the health of the
// sources, and the last reload.

import { t } from './i18n.js';
import { h, api, poll, num, panel, timeEl, relative, errorBox, toast } from './ui.js';
import * as graph from './graph.js';

const REFRESH_MS = 2000;

const OUTBOX_STATES = ['gathering', 'pending', 'sending', 'sent', 'dead'];

function card(key, labelKey) {
  return h(
    'div',
    { class: 'card', id: `stat-${key}` },
    h('div', { class: 'card-label' }, t(labelKey)),
    h('div', { class: 'card-value' }, '—'),
    h('div', { class: 'card-note muted' }),
  );
}

function setCard(root, key, value, note, bad) {
  const c = root.querySelector(`#stat-${key}`);
  if (!c) return;
  c.querySelector('.card-value').textContent = value;
  c.querySelector('.card-note').textContent = note || '';
  c.classList.toggle('bad', Boolean(bad));
}

function renderStats(root, stats) {
  setCard(root, 'events_read', num(stats.events_read));
  setCard(root, 'events_delivered', num(stats.events_delivered));
  setCard(root, 'errors', num(stats.errors), '', stats.errors > 0);
  const outbox = stats.outbox || {};
  const pending = (outbox.pending || 0) + (outbox.gathering || 0) + (outbox.sending || 0);
  setCard(
    root,
    'outbox',
    num(pending),
    OUTBOX_STATES.map((s) => `${t(`state.${s}`)} ${num(outbox[s] || 0)}`).join(' · '),
    (outbox.dead || 0) > 0,
  );
  setCard(
    root,
    'reloads',
    num(stats.reloads),
    t('stats.reload_failures', { n: num(stats.reload_failures) }),
    stats.reload_failures > 0,
  );
  setCard(root, 'pipelines', num(stats.pipelines), t('stats.nodes', { n: num(stats.nodes) }));
}

function list(label, items) {
  return h(
    'div',
    { class: 'kv' },
    h('dt', {}, label),
    h('dd', {}, items && items.length ? items.map((i) => h('code', { class: 'chip' }, i)) : h('span', { class: 'muted' }, '—')),
  );
}

function renderReload(box, reload) {
  const last = reload && reload.last;
  const counts = h(
    'p',
    { class: 'muted' },
    t('reload.counts', { n: num(reload ? reload.reloads : 0), failed: num(reload ? reload.failures : 0) }),
  );
  if (!last) {
    box.replaceChildren(h('p', {}, t('reload.none')), counts);
    return;
  }
  const status = last.ok
    ? h('span', { class: 'badge ok' }, t('reload.ok'))
    : h('span', { class: 'badge failed' }, t('reload.failed'));
  const head = h(
    'p',
    { class: 'reload-head' },
    status,
    ' ',
    t('reload.by', { trigger: last.trigger }),
    ' · ',
    timeEl(last.at),
    ' ',
    h('span', { class: 'muted' }, `(${relative(last.at)})`),
  );
  const parts = [head];
  if (last.report) {
    const r = last.report;
    parts.push(
      h(
        'dl',
        { class: 'kvs' },
        list(t('reload.added'), r.added),
        list(t('reload.removed'), r.removed),
        list(t('reload.changed'), r.changed),
        list(t('reload.state_kept'), r.state_kept),
        list(t('reload.state_reset'), r.state_reset),
      ),
    );
    if (r.settings_changed) parts.push(h('p', { class: 'muted' }, t('reload.settings_changed')));
  }
  if (last.errors && last.errors.length) {
    parts.push(
      h('h3', {}, t('reload.errors')),
      h('ul', { class: 'errors' }, last.errors.map((e) => h('li', {}, h('code', {}, e)))),
    );
  }
  parts.push(counts);
  box.replaceChildren(...parts);
}

function renderSources(tbody, pipelines) {
  const sources = pipelines.flatMap((p) => p.nodes.filter((n) => n.role === 'source'));
  tbody.replaceChildren(
    ...sources.map((n) =>
      h(
        'tr',
        { 'data-id': n.id },
        h('td', {}, h('code', {}, n.id)),
        h('td', {}, n.kind),
        h('td', { class: 'num' }, num(n.events_out)),
        h('td', { class: 'num' }, num(n.errors)),
        h(
          'td',
          {},
          n.errors > 0
            ? h('span', { class: 'badge failed' }, t('health.errors'))
            : h('span', { class: 'badge ok' }, t('health.ok')),
        ),
      ),
    ),
  );
  if (!sources.length) tbody.append(h('tr', {}, h('td', { colspan: 5, class: 'muted' }, t('health.none'))));
}

function renderNodeTable(tbody, pipelines) {
  tbody.replaceChildren(
    ...pipelines.flatMap((p) =>
      p.nodes.map((n) =>
        h(
          'tr',
          {},
          h('td', {}, h('code', {}, n.id)),
          h('td', {}, t(`role.${n.role}`)),
          h('td', {}, n.kind),
          h('td', {}, n.inputs.join(', ') || '—'),
          h('td', { class: 'num' }, num(n.events_in)),
          h('td', { class: 'num' }, num(n.events_out)),
          h('td', { class: 'num' }, num(n.errors)),
          h(
            'td',
            { class: `state-${n.state}`, title: n.last_error || '' },
            t(`state.${n.state}`),
          ),
        ),
      ),
    ),
  );
}

export function mount(main) {
  const cards = h(
    'section',
    { class: 'cards', 'aria-label': t('overview.totals') },
    card('events_read', 'stats.events_read'),
    card('events_delivered', 'stats.events_delivered'),
    card('errors', 'stats.errors'),
    card('outbox', 'stats.outbox'),
    card('reloads', 'stats.reloads'),
    card('pipelines', 'stats.pipelines'),
  );
  const graphBox = h('div', { class: 'graph-box', id: 'graph' }, h('p', { class: 'muted' }, t('common.loading')));
  const nodeBody = h('tbody');
  const nodeTable = h(
    'details',
    { class: 'node-table' },
    h('summary', {}, t('graph.as_table')),
    h(
      'table',
      { class: 'table' },
      h(
        'thead',
        {},
        h(
          'tr',
          {},
          ...['col.node', 'col.role', 'col.kind', 'col.inputs', 'col.in', 'col.out', 'col.errors', 'col.state'].map((k) =>
            h('th', { scope: 'col' }, t(k)),
          ),
        ),
      ),
      nodeBody,
    ),
  );
  const legend = h(
    'ul',
    { class: 'legend', 'aria-hidden': 'true' },
    ['source', 'stage', 'sink'].map((r) => h('li', { class: `role-${r}` }, h('span', { class: 'swatch' }), t(`role.${r}`))),
  );
  const reloadBox = h('div', { id: 'reload' }, h('p', { class: 'muted' }, t('common.loading')));
  const reloadBtn = h('button', { type: 'button', class: 'btn', id: 'reload-btn' }, t('reload.now'));
  const sourcesBody = h('tbody');
  const problem = h('div', { class: 'problem' });
  main.append(
    h('h1', {}, t('nav.overview')),
    problem,
    cards,
    panel(t('overview.graph'), { id: 'graph-panel' }, legend, graphBox, nodeTable),
    h(
      'div',
      { class: 'grid2' },
      panel(t('overview.reload'), { id: 'reload-panel' }, reloadBox, h('div', { class: 'row-actions' }, reloadBtn)),
      panel(
        t('overview.sources'),
        { id: 'sources-panel' },
        h(
          'table',
          { class: 'table' },
          h(
            'thead',
            {},
            h(
              'tr',
              {},
              ...['col.node', 'col.kind', 'col.read', 'col.errors', 'col.health'].map((k) => h('th', { scope: 'col' }, t(k))),
            ),
          ),
          sourcesBody,
        ),
      ),
    ),
  );

  let drawn = null;
  let drawnShape = '';
  let previous = null;

  async function refresh() {
    let pipes;
    let stats;
    try {
      [pipes, stats] = await Promise.all([api('/api/v1/pipelines'), api('/api/v1/stats')]);
    } catch (e) {
      problem.replaceChildren(errorBox(e));
      return;
    }
    problem.replaceChildren();
    const pipelines = pipes.pipelines || [];
    renderStats(main, stats);
    const sh = graph.shape(pipelines);
    if (!drawn || sh !== drawnShape) {
      drawn = pipelines.length ? graph.draw(pipelines) : null;
      drawnShape = sh;
      graphBox.replaceChildren(drawn || h('p', { class: 'muted' }, t('graph.empty')));
    } else {
      graph.update(drawn, pipelines, previous);
    }
    previous = new Map(pipelines.flatMap((p) => p.nodes.map((n) => [n.id, n])));
    renderNodeTable(nodeBody, pipelines);
    renderSources(sourcesBody, pipelines);
    renderReload(reloadBox, pipes.reload);
  }

  reloadBtn.addEventListener('click', async () => {
    reloadBtn.disabled = true;
    try {
      const out = await api('/api/v1/reload', { method: 'POST' });
      toast(out && out.ok ? t('reload.done') : t('reload.failed'), out && out.ok ? 'ok' : 'error');
    } catch (e) {
      toast(e.status === 422 ? t('reload.invalid') : e.message, 'error');
    } finally {
      reloadBtn.disabled = false;
      refresh();
    }
  });

  return poll(refresh, REFRESH_MS);
}
