// Silences: the list (active first; expired on request), a form to make one with any
// matchers, and expiring one.

import { t } from './i18n.js';
import { h, api, poll, timeEl, relative, panel, field, errorBox, toast } from './ui.js';

const REFRESH_MS = 10000;

/** Fields a matcher usually tests (suggestions; any path into the alert works). */
const FIELDS = ['pipeline', 'stage', 'severity', 'title', 'group_key', 'status'];

let showExpired = false;

function matcherText(m) {
  return `${m.field} ${m.regex ? '=~' : '='} ${m.value}`;
}

function stateOf(s) {
  const now = Date.now();
  if (s.active) return 'active';
  if (s.created_at > now) return 'pending';
  return 'expired';
}

function user() {
  try {
    return localStorage.getItem('vigil.user') || '';
  } catch {
    return '';
  }
}

function matcherRow(list, m = { field: '', value: '', regex: false }) {
  const n = list.children.length + 1;
  const fieldIn = h('input', { type: 'text', class: 'm-field', list: 'matcher-fields', value: m.field, required: true, 'aria-label': t('silence.matcher_field', { n }) });
  const valueIn = h('input', { type: 'text', class: 'm-value', value: m.value, 'aria-label': t('silence.matcher_value', { n }) });
  const regexIn = h('input', { type: 'checkbox', class: 'm-regex', checked: m.regex });
  const remove = h('button', { type: 'button', class: 'btn small', 'aria-label': t('silence.remove_matcher', { n }) }, '×');
  const op = h('span', { class: 'op', 'aria-hidden': 'true' }, m.regex ? '=~' : '=');
  regexIn.addEventListener('change', () => {
    op.textContent = regexIn.checked ? '=~' : '=';
  });
  const li = h('li', { class: 'matcher' }, fieldIn, op, valueIn, h('label', { class: 'inline' }, regexIn, ' ', t('silence.regex')), remove);
  remove.addEventListener('click', () => {
    if (list.children.length > 1) li.remove();
  });
  list.append(li);
  return li;
}

function newForm(onCreated) {
  const matchers = h('ul', { class: 'matcher-list', id: 'new-matchers' });
  matcherRow(matchers);
  const add = h('button', { type: 'button', class: 'btn small', id: 'new-add-matcher' }, t('silence.add_matcher'));
  add.addEventListener('click', () => matcherRow(matchers).querySelector('input').focus());
  const duration = h('input', { id: 'new-duration', type: 'text', value: '2h', required: true, 'aria-describedby': 'new-duration-help' });
  const comment = h('input', { id: 'new-comment', type: 'text' });
  const by = h('input', { id: 'new-by', type: 'text', value: user(), autocomplete: 'username' });
  const out = h('div', { id: 'new-result', 'aria-live': 'polite' });
  const submit = h('button', { type: 'submit', class: 'btn primary', id: 'new-submit' }, t('silence.create'));
  const form = h(
    'form',
    { id: 'new-silence', class: 'silence-form' },
    h('datalist', { id: 'matcher-fields' }, FIELDS.map((f) => h('option', { value: f }))),
    h('fieldset', {}, h('legend', {}, t('silence.matchers')), h('p', { class: 'muted' }, t('silence.matchers_help')), matchers, add),
    h(
      'div',
      { class: 'form-row' },
      h('div', { class: 'field' }, h('label', { for: 'new-duration' }, t('silence.duration')), duration, h('small', { id: 'new-duration-help', class: 'muted' }, t('silence.duration_help'))),
      field(t('silence.comment'), comment),
      field(t('silence.created_by'), by),
    ),
    h('div', { class: 'row-actions' }, submit),
    out,
  );
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const body = {
      matchers: [...matchers.querySelectorAll('li.matcher')].map((li) => ({
        field: li.querySelector('.m-field').value.trim(),
        value: li.querySelector('.m-value').value,
        regex: li.querySelector('.m-regex').checked,
      })),
      duration: duration.value.trim(),
      comment: comment.value,
      created_by: by.value.trim(),
    };
    try {
      localStorage.setItem('vigil.user', body.created_by);
    } catch {
      /* not remembered */
    }
    submit.disabled = true;
    try {
      await api('/api/v1/silences', { method: 'POST', body });
      out.replaceChildren();
      comment.value = '';
      toast(t('silence.created'));
      onCreated();
    } catch (err) {
      out.replaceChildren(errorBox(err));
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

export function mount(main) {
  const tbody = h('tbody', { id: 'silences-rows' });
  const problem = h('div', { class: 'problem' });
  const toggle = h('input', { type: 'checkbox', id: 'show-expired', checked: showExpired });
  const summary = h('span', { class: 'muted', id: 'silences-summary' });

  let shownSig = '';
  async function refresh() {
    let data;
    try {
      data = await api('/api/v1/silences');
    } catch (e) {
      problem.replaceChildren(errorBox(e));
      return;
    }
    problem.replaceChildren();
    const all = (data.silences || []).map((s) => ({ ...s, state: stateOf(s) }));
    const order = { active: 0, pending: 1, expired: 2 };
    all.sort((a, b) => order[a.state] - order[b.state] || b.created_at - a.created_at);
    const active = all.filter((s) => s.state !== 'expired');
    const shown = showExpired ? all : active;
    summary.textContent = t('silences.summary', { active: active.length, expired: all.length - active.length });
    // Re-render only on a change (the relative times move by the minute): keeps the focus.
    const sig = JSON.stringify(shown.map((x) => [x.id, x.state, relative(x.expires_at)]));
    if (sig === shownSig) return;
    shownSig = sig;
    if (!shown.length) {
      tbody.replaceChildren(h('tr', {}, h('td', { colspan: 7, class: 'empty' }, t('silences.empty'))));
      return;
    }
    tbody.replaceChildren(
      ...shown.map((s) => {
        const expire =
          s.state === 'expired'
            ? '—'
            : h('button', { type: 'button', class: 'btn small danger', 'data-expire': s.id, onclick: () => expire(s) }, t('silences.expire'));
        return h(
          'tr',
          { 'data-id': s.id, 'data-state': s.state },
          h('td', {}, h('span', { class: `badge silence-${s.state}` }, t(`silences.${s.state}`))),
          h('td', {}, h('ul', { class: 'matchers' }, s.matchers.map((m) => h('li', {}, h('code', { class: 'chip' }, matcherText(m)))))),
          h('td', {}, s.comment || h('span', { class: 'muted' }, '—')),
          h('td', {}, s.created_by),
          h('td', { class: 'nowrap' }, timeEl(s.created_at)),
          h('td', { class: 'nowrap' }, timeEl(s.expires_at), h('br'), h('span', { class: 'muted' }, relative(s.expires_at))),
          h('td', {}, expire),
        );
      }),
    );
  }

  async function expire(s) {
    try {
      await api(`/api/v1/silences/${encodeURIComponent(s.id)}`, { method: 'DELETE' });
      toast(t('silences.expired_toast'));
    } catch (e) {
      toast(e.message, 'error');
    }
    shownSig = '';
    refresh();
  }

  toggle.addEventListener('change', () => {
    showExpired = toggle.checked;
    shownSig = '';
    refresh();
  });

  main.append(
    h('h1', {}, t('nav.silences')),
    problem,
    panel(
      t('silences.list'),
      { id: 'silences-panel' },
      h('div', { class: 'toolbar' }, h('label', { class: 'inline' }, toggle, ' ', t('silences.show_expired')), summary),
      h(
        'table',
        { class: 'table', id: 'silences-table' },
        h('caption', { class: 'visually-hidden' }, t('silences.list')),
        h(
          'thead',
          {},
          h(
            'tr',
            {},
            ...['col.state', 'col.matchers', 'col.comment', 'col.created_by', 'col.created', 'col.expires', 'col.action'].map((k) =>
              h('th', { scope: 'col' }, t(k)),
            ),
          ),
        ),
        tbody,
      ),
    ),
    panel(t('silence.new'), { id: 'new-panel' }, newForm(refresh)),
  );
  return poll(refresh, REFRESH_MS);
}
