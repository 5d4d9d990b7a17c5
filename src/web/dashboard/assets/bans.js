// Bans: the addresses the nftables_ban sinks banned (active first; ended on request),
// removing one, and banning an address by hand through the running sink.

import { t } from './i18n.js';
import { h, api, poll, timeEl, relative, panel, field, errorBox, toast } from './ui.js';

const REFRESH_MS = 5000;

let showEnded = false;

function user() {
  try {
    return localStorage.getItem('vigil.user') || '';
  } catch {
    return '';
  }
}

/** The end of a ban: when it expires (active), or when and how it ended. */
function endCell(b) {
  if (b.state === 'active') {
    // A ban without a timeout (adopted) is stored as ending at the last date.
    if (b.expires_at >= 8.64e15) return h('span', { class: 'muted' }, t('bans.forever'));
    return h('span', {}, timeEl(b.expires_at), h('br'), h('span', { class: 'muted' }, relative(b.expires_at)));
  }
  return h('span', {}, b.ended_at ? timeEl(b.ended_at) : '—', h('br'), h('span', { class: 'muted' }, b.ended_by || ''));
}

function newForm(onDone) {
  const address = h('input', { id: 'ban-address', type: 'text', required: true, spellcheck: 'false', autocomplete: 'off' });
  const ttl = h('input', { id: 'ban-ttl', type: 'text', 'aria-describedby': 'ban-ttl-help' });
  const out = h('div', { id: 'ban-result', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn primary', id: 'ban-submit' }, t('bans.submit'));
  const form = h(
    'form',
    { id: 'new-ban', class: 'silence-form' },
    h('p', { class: 'muted' }, t('bans.new_help')),
    h(
      'div',
      { class: 'form-row' },
      field(t('bans.address'), address),
      h('div', { class: 'field' }, h('label', { for: 'ban-ttl' }, t('bans.ttl')), ttl, h('small', { id: 'ban-ttl-help', class: 'muted' }, t('bans.ttl_help'))),
    ),
    h('div', { class: 'row-actions' }, submit),
    out,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = { address: address.value.trim(), created_by: user() || 'dashboard' };
    if (ttl.value.trim()) body.ttl = ttl.value.trim();
    submit.disabled = true;
    try {
      const done = await api('/api/v1/bans', { method: 'POST', body });
      out.replaceChildren(h('p', { class: done.outcome === 'refused' ? 'error' : 'muted', id: 'ban-message' }, done.message));
      toast(done.message, done.outcome === 'refused' ? 'error' : 'ok');
      if (done.outcome !== 'refused') address.value = '';
      onDone();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function mount(main) {
  const tbody = h('tbody', { id: 'bans-rows' });
  const problem = h('div', { class: 'problem' });
  const sinks = h('div', { id: 'ban-sinks' });
  const toggle = h('input', { type: 'checkbox', id: 'show-ended', checked: showEnded });
  const summary = h('span', { class: 'muted', id: 'bans-summary' });

  let shownSig = '';
  async function refresh() {
    let data;
    try {
      data = await api(`/api/v1/bans?all=${showEnded}`);
    } catch (e) {
      problem.replaceChildren(errorBox(e));
      return;
    }
    problem.replaceChildren();
    const running = data.sinks || [];
    sinks.replaceChildren(
      ...(running.length
        ? running.map((s) =>
            h(
              'p',
              { class: s.dry_run ? 'notice' : 'muted', 'data-sink': s.id, 'data-dry-run': String(s.dry_run) },
              s.dry_run ? t('bans.dry_run_sink', { sink: s.id }) : t('bans.sink_info', { sink: s.id, ttl: s.ttl, max: s.max_bans }),
            ),
          )
        : [h('p', { class: 'muted', id: 'bans-no-sink' }, t('bans.no_sink'))]),
    );
    const all = data.bans || [];
    const active = all.filter((b) => b.state === 'active');
    summary.textContent = t('bans.summary', { active: active.length, ended: all.length - active.length });
    const sig = JSON.stringify(all.map((b) => [b.id, b.state, relative(b.expires_at)]));
    if (sig === shownSig) return;
    shownSig = sig;
    if (!all.length) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: 6, class: 'empty' }, t('bans.empty'))));
      return;
    }
    tbody.replaceChildren(
      ...all.map((b) => {
        const action =
          b.state === 'active'
            ? h(
                'button',
                { type: 'button', class: 'btn small danger', 'data-remove': b.address, 'aria-label': t('bans.remove_label', { address: b.address }), onclick: () => remove(b) },
                t('bans.remove'),
              )
            : '—';
        const alert = b.alert_id ? h('a', { href: `#/alerts/${encodeURIComponent(b.alert_id)}` }, h('code', {}, String(b.alert_id).slice(0, 8))) : '—';
        return h(
          'tr',
          { 'data-address': b.address, 'data-state': b.state },
          h('td', {}, h('code', {}, b.address)),
          h('td', {}, h('span', { class: `badge ban-${b.state} ${b.state === 'active' ? 'failed' : 'state-none'}` }, t(`banstate.${b.state}`))),
          h('td', { class: 'nowrap' }, endCell(b)),
          h('td', {}, t(`origin.${b.origin}`), h('br'), h('span', { class: 'muted' }, b.created_by)),
          h('td', {}, alert),
          h('td', {}, action),
        );
      }),
    );
  }

  async function remove(b) {
    try {
      const done = await api(`/api/v1/bans/${encodeURIComponent(b.address)}?by=${encodeURIComponent(user() || 'dashboard')}`, { method: 'DELETE' });
      toast(done.message);
    } catch (e) {
      toast(e.message, 'error');
    }
    shownSig = '';
    refresh();
  }

  toggle.addEventListener('change', () => {
    showEnded = toggle.checked;
    shownSig = '';
    refresh();
  });

  main.append(
    h('h1', {}, t('nav.bans')),
    problem,
    sinks,
    panel(
      t('bans.list'),
      { id: 'bans-panel' },
      h('div', { class: 'toolbar' }, h('label', { class: 'inline' }, toggle, ' ', t('bans.show_ended')), summary),
      h(
        'table',
        { class: 'table', id: 'bans-table' },
        h('caption', { class: 'visually-hidden' }, t('bans.list')),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...['col.address', 'col.state', 'col.until', 'col.origin', 'col.alert', 'col.action'].map((k) => h('th', { scope: 'col' }, t(k))),
          ),
        ),
        tbody,
      ),
    ),
    panel(t('bans.new'), { id: 'ban-new-panel' }, newForm(() => {
      shownSig = '';
      refresh();
    })),
  );
  return poll(refresh, REFRESH_MS);
}
