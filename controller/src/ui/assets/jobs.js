// Jobs: a table with status, user, label and time filters (kept in the
// URL's hash query), cursor paging, and bulk cancel of the selected or of
// every filtered job, with the count confirmed first.

import { api, can, describe } from './api.js';
import { badge, confirmDialog, h, labels, replace, say, table, when } from './dom.js';

const STATUSES = ['pending', 'queued', 'running', 'completed', 'failed', 'cancelled', 'timed_out'];
const CANCELLABLE = new Set(['pending', 'queued', 'running']);
const PAGE = 50;
const BATCH = 500;

/** The search query of the current filters (empty ones left out). */
function query(filters, extra) {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries({ ...filters, ...extra })) {
    if (value) params.set(key, value);
  }
  return params.toString();
}

/** A filter input with its label. */
function field(id, text, input) {
  return h('div', { class: 'field' }, h('label', { for: id }, text), input);
}

/** The filter form; calls `apply` with the filters when submitted. */
function filterForm(apply) {
  const status = h('select', { id: 'f-status' }, h('option', { value: '' }, 'any'), STATUSES.map((s) => h('option', { value: s }, s)));
  const user = h('input', { id: 'f-user', placeholder: 'user name' });
  const label = h('input', { id: 'f-label', placeholder: 'key=value' });
  const since = h('input', { id: 'f-since', type: 'datetime-local' });
  const until = h('input', { id: 'f-until', type: 'datetime-local' });
  const iso = (input) => (input.value ? new Date(input.value).toISOString() : '');
  const form = h(
    'form',
    { class: 'filters', id: 'filters' },
    field('f-status', 'Status', status),
    field('f-user', 'User', user),
    field('f-label', 'Label', label),
    field('f-since', 'Created from', since),
    field('f-until', 'Created before', until),
    h('button', { type: 'submit' }, 'Filter'),
  );
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    apply({ status: status.value, user: user.value.trim(), label: label.value.trim(), since: iso(since), until: iso(until) });
  });
  return form;
}

/** One job's row, with a selection box when it can still be cancelled. */
function row(job, selected, writable) {
  const box = writable && CANCELLABLE.has(job.status)
    ? h('input', { type: 'checkbox', 'aria-label': `Select job ${job.job_id}`, onchange: (e) => (e.target.checked ? selected.add(job.job_id) : selected.delete(job.job_id)) })
    : '';
  return h(
    'tr',
    {},
    h('td', {}, box),
    h('td', {}, h('a', { href: `#/jobs/${job.job_id}`, class: 'mono' }, job.job_id.slice(0, 8))),
    h('td', {}, badge(job.status)),
    h('td', { class: 'desc' }, job.task_description),
    h('td', {}, labels(job.labels)),
    h('td', {}, when(job.created_at)),
    h('td', {}, job.assigned_workers.join(', ') || '—'),
  );
}

/** Every cancellable job id the filters match (pages through them). */
async function matchingIds(filters) {
  const ids = [];
  for (const status of CANCELLABLE) {
    if (filters.status && filters.status !== status) continue;
    let cursor = '';
    do {
      const page = await api('GET', `/api/jobs/search?${query(filters, { status, limit: BATCH, cursor })}`);
      ids.push(...page.jobs.map((j) => j.job_id));
      cursor = page.next_cursor;
    } while (cursor);
  }
  return ids;
}

/** Cancels `ids` after the user confirms their count. */
async function bulkCancel(ids, what, reload) {
  if (ids.length === 0) {
    say(`No ${what} job can be cancelled.`, true);
    return;
  }
  const ok = await confirmDialog(`Cancel ${ids.length} ${what} job${ids.length === 1 ? '' : 's'}?`, `Cancel ${ids.length}`);
  if (!ok) return;
  let cancelled = 0;
  let refused = 0;
  for (let i = 0; i < ids.length; i += BATCH) {
    const result = await api('POST', '/api/jobs/cancel_batch', { job_ids: ids.slice(i, i + BATCH) });
    cancelled += result.cancelled.length;
    refused += result.refused.length;
  }
  say(`Cancelled ${cancelled} job${cancelled === 1 ? '' : 's'}${refused ? `; ${refused} had already finished` : ''}.`);
  reload();
}

export async function jobsPage({ main }) {
  const writable = can('jobs:write');
  const state = { filters: {}, cursors: [''], selected: new Set() };
  const results = h('div', { id: 'results' });
  const load = async () => {
    state.selected.clear();
    const cursor = state.cursors[state.cursors.length - 1];
    const page = await api('GET', `/api/jobs/search?${query(state.filters, { limit: PAGE, cursor })}`);
    const back = h('button', { type: 'button', class: 'secondary', disabled: state.cursors.length === 1, onclick: () => { state.cursors.pop(); load().catch((e) => say(describe(e), true)); } }, '← Newer');
    const next = h('button', { type: 'button', class: 'secondary', disabled: !page.next_cursor, onclick: () => { state.cursors.push(page.next_cursor); load().catch((e) => say(describe(e), true)); } }, 'Older →');
    const actions = writable
      ? [
          h('button', { type: 'button', class: 'danger', id: 'cancel-selected', onclick: () => bulkCancel([...state.selected], 'selected', load).catch((e) => say(describe(e), true)) }, 'Cancel selected'),
          h('button', { type: 'button', class: 'danger', id: 'cancel-filtered', onclick: () => matchingIds(state.filters).then((ids) => bulkCancel(ids, 'filtered', load)).catch((e) => say(describe(e), true)) }, 'Cancel all filtered'),
        ]
      : [];
    replace(
      results,
      h('p', { class: 'muted', id: 'total' }, `${page.total} job${page.total === 1 ? ' matches' : 's match'}`),
      table(['', 'Job', 'Status', 'Description', 'Labels', 'Created', 'Workers'], page.jobs.map((j) => row(j, state.selected, writable))),
      h('div', { class: 'toolbar' }, back, next, actions),
    );
  };
  const apply = (filters) => {
    state.filters = filters;
    state.cursors = [''];
    load().catch((e) => say(describe(e), true));
  };
  replace(main, h('h1', {}, 'Jobs'), filterForm(apply), results);
  await load();
}
