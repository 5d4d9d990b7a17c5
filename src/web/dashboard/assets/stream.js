// Live stream: events and alerts as they happen (Server-Sent Events from
// /api/v1/stream), newest first, filtered by type, severity and pipeline (on the server,
// and again here for what is already shown), with a pause that keeps buffering.

import { t } from './i18n.js';
import { h, token, timeEl, severityBadge, jsonView, compact, select, field, num, toast, pipelineNames, SEVERITIES } from './ui.js';
import { processView } from './process.js';

/** Rows kept (and shown) at most. */
const CAP = 500;

// Kept while the user visits other pages.
const state = {
  rows: [], // newest first
  pending: [], // arrived while paused, newest first
  paused: false,
  filters: { type: '', severity: '', pipeline: '' },
  next: 0,
};

const SEV_RANK = Object.fromEntries(SEVERITIES.map((s, i) => [s, i]));

function wanted(item, f) {
  if (f.type && item.type !== f.type) return false;
  if (f.pipeline && item.pipeline !== f.pipeline) return false;
  if (f.severity && !(item.severity && SEV_RANK[item.severity] >= SEV_RANK[f.severity])) return false;
  return true;
}

function summary(item) {
  const r = item.record;
  if (item.type === 'alert') {
    const id = r && r.id;
    const title = item.title || (r && r.title) || '';
    return h(
      'details',
      {},
      h('summary', {}, id ? h('a', { href: `#/alerts/${encodeURIComponent(id)}` }, title) : title),
      jsonView(r),
    );
  }
  // A Tetragon event: its process tree first, the JSON under it.
  return processView(r) || h('details', {}, h('summary', {}, h('code', { class: 'record' }, compact(r))), jsonView(r));
}

function rowOf(item) {
  return h(
    'tr',
    { 'data-key': String(item.key), ...(item.id ? { 'data-id': item.id } : {}), class: `stream-${item.type}` },
    h('td', { class: 'nowrap' }, timeEl(item.time)),
    h('td', {}, h('span', { class: `badge type type-${item.type}` }, t(`type.${item.type}`))),
    h('td', {}, severityBadge(item.severity)),
    h('td', {}, item.pipeline),
    h('td', {}, h('code', {}, item.source)),
    h('td', { class: 'stream-summary' }, summary(item)),
  );
}

function push(list, items) {
  list.unshift(...items);
  if (list.length > CAP) list.length = CAP;
}

export function mount(main) {
  const f = state.filters;
  const typeSel = select({ id: 's-type' }, [['', t('stream.all_types')], ['event', t('type.event')], ['alert', t('type.alert')]], f.type);
  const sevSel = select(
    { id: 's-severity' },
    [['', t('filter.any_severity')], ...SEVERITIES.map((s) => [s, t('filter.at_least', { sev: t(`sev.${s}`) })])],
    f.severity,
  );
  const pipeSel = select({ id: 's-pipeline' }, [['', t('filter.all_pipelines')], ...(f.pipeline ? [[f.pipeline, f.pipeline]] : [])], f.pipeline);
  pipelineNames().then((names) => {
    for (const n of names) if (n !== f.pipeline) pipeSel.append(h('option', { value: n }, n));
  });
  const pause = h('button', { type: 'button', class: 'btn', id: 's-pause', 'aria-pressed': String(state.paused) });
  const clear = h('button', { type: 'button', class: 'btn', id: 's-clear' }, t('stream.clear'));
  const status = h('span', { class: 'stream-status', id: 's-status', 'data-state': 'connecting', role: 'status' }, t('stream.connecting'));
  const count = h('span', { class: 'muted', id: 's-count' });
  const tbody = h('tbody', { id: 'stream-rows' });

  main.append(
    h('h1', {}, t('nav.stream')),
    h(
      'form',
      { class: 'filters', role: 'search', 'aria-label': t('filter.label'), onsubmit: (e) => e.preventDefault() },
      field(t('filter.type'), typeSel),
      field(t('filter.severity'), sevSel),
      field(t('filter.pipeline'), pipeSel),
      h('div', { class: 'field actions' }, pause, clear),
      h('div', { class: 'field status' }, status, count),
    ),
    h(
      'table',
      { class: 'table stream', id: 'stream-table' },
      h('caption', { class: 'visually-hidden' }, t('stream.caption')),
      h(
        'thead',
        {},
        h('tr', {}, ...['col.time', 'col.type', 'col.severity', 'col.pipeline', 'col.source', 'col.record'].map((k) => h('th', { scope: 'col' }, t(k)))),
      ),
      tbody,
    ),
  );

  const labelPause = () => {
    pause.setAttribute('aria-pressed', String(state.paused));
    pause.textContent = state.paused
      ? t('stream.resume', { n: num(state.pending.filter((i) => wanted(i, f)).length) })
      : t('stream.pause');
  };
  const labelCount = () => {
    const shown = tbody.querySelectorAll('tr[data-key]').length;
    count.textContent = t('stream.count', { n: num(shown), cap: num(CAP) });
  };
  // New rows arrive in bursts: add them to the table at most every 100 ms.
  let queued = [];
  let flushTimer = null;
  const renderAll = () => {
    queued = [];
    const rows = state.rows.filter((i) => wanted(i, f));
    tbody.replaceChildren(...rows.map(rowOf));
    if (!rows.length) tbody.append(h('tr', { class: 'placeholder' }, h('td', { colspan: 6, class: 'empty' }, t('stream.waiting'))));
    labelCount();
  };

  const flush = () => {
    flushTimer = null;
    const items = queued.filter((i) => wanted(i, f));
    queued = [];
    if (!items.length) return;
    const ph = tbody.querySelector('tr.placeholder');
    if (ph) ph.remove();
    tbody.prepend(...items.map(rowOf));
    const rows = tbody.querySelectorAll('tr[data-key]');
    for (let i = CAP; i < rows.length; i++) rows[i].remove();
    labelCount();
  };

  const replaced = (item) => {
    for (const list of [state.rows, state.pending]) {
      const at = list.findIndex((r) => r.id === item.id);
      if (at < 0) continue;
      if (item.type !== 'alert') return true; // an event seen already
      item.key = list[at].key;
      list[at] = item;
      const q = queued.findIndex((r) => r.key === item.key);
      if (q >= 0) queued[q] = item;
      const tr = tbody.querySelector(`tr[data-key="${item.key}"]`);
      if (tr) {
        if (wanted(item, f)) tr.replaceWith(rowOf(item));
        else tr.remove();
      }
      return true;
    }
    return false;
  };

  let source = null;
  const setStatus = (s) => {
    status.dataset.state = s;
    status.textContent = t(`stream.${s}`);
  };
  const onItem = (e) => {
    let item;
    try {
      item = JSON.parse(e.data);
    } catch {
      return;
    }
    // The server sends each event once; an alert that a later stage edited (a top-N table
    // added) comes again under its id and takes the first one's place, without a toast.
    if (item.id && replaced(item)) return;
    item.key = state.next++;
    if (item.type === 'alert' && (item.severity === 'high' || item.severity === 'critical') && wanted(item, f)) {
      toast(t('stream.alert_toast', { sev: t(`sev.${item.severity}`), title: item.title || '' }), 'error');
    }
    if (state.paused) {
      push(state.pending, [item]);
      labelPause();
      return;
    }
    push(state.rows, [item]);
    queued.unshift(item);
    if (!flushTimer) flushTimer = setTimeout(flush, 100);
  };
  const connect = () => {
    if (source) source.close();
    const q = new URLSearchParams();
    if (f.type) q.set('type', f.type);
    if (f.severity) q.set('severity', f.severity);
    if (f.pipeline) q.set('pipeline', f.pipeline);
    // URLSearchParams percent-encodes the value (a base64 token's `+`, `/` and `=`), as
    // encodeURIComponent would; the server decodes it.
    const tk = token();
    if (tk) q.set('token', tk);
    const qs = q.toString();
    setStatus('connecting');
    source = new EventSource(`/api/v1/stream${qs ? `?${qs}` : ''}`);
    source.addEventListener('open', () => setStatus('live'));
    source.addEventListener('error', () => setStatus(source.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting'));
    source.addEventListener('event', onItem);
    source.addEventListener('alert', onItem);
  };

  const refilter = (key, sel) => {
    f[key] = sel.value;
    renderAll();
    labelPause();
    connect();
  };
  typeSel.addEventListener('change', () => refilter('type', typeSel));
  sevSel.addEventListener('change', () => refilter('severity', sevSel));
  pipeSel.addEventListener('change', () => refilter('pipeline', pipeSel));
  pause.addEventListener('click', () => {
    state.paused = !state.paused;
    if (!state.paused && state.pending.length) {
      const items = state.pending.splice(0);
      push(state.rows, items);
      renderAll();
    }
    labelPause();
  });
  clear.addEventListener('click', () => {
    state.rows = [];
    state.pending = [];
    renderAll();
    labelPause();
  });

  renderAll();
  labelPause();
  connect();
  return () => {
    if (source) source.close();
    clearTimeout(flushTimer);
  };
}
