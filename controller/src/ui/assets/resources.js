// Resources: the caller's quotas, their allocations (release the active
// ones), and usage per user (every user for an admin).

import { api, can, describe } from './api.js';
import { badge, confirmDialog, h, replace, say, table, when } from './dom.js';

function quotas(q) {
  const rows = [
    ['Workers allocated', `${q.allocated_workers} of ${q.max_workers} (${q.available_workers} free)`],
    ['Running jobs', `${q.running_jobs} of ${q.max_concurrent_jobs}`],
    ['Queued jobs', `${q.queued_jobs} of ${q.max_queued_jobs}`],
  ];
  return h('dl', { class: 'fields' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

function allocationRow(a, reload) {
  const release = async () => {
    if (!(await confirmDialog(`Release ${a.workers} worker${a.workers === 1 ? '' : 's'}?`, 'Release'))) return;
    try {
      await api('POST', '/api/resources/release', { allocation_id: a.allocation_id });
      say('Allocation released.');
      await reload();
    } catch (e) {
      say(describe(e), true);
    }
  };
  const button = a.status === 'active' && can('resources:write')
    ? h('button', { type: 'button', class: 'secondary', onclick: release }, 'Release')
    : '';
  return h(
    'tr',
    {},
    h('td', { class: 'mono' }, a.allocation_id.slice(0, 8)),
    h('td', {}, String(a.workers)),
    h('td', {}, badge(a.status)),
    h('td', {}, a.job_id ? h('a', { href: `#/jobs/${a.job_id}`, class: 'mono' }, a.job_id.slice(0, 8)) : '—'),
    h('td', {}, when(a.expires_at)),
    h('td', {}, button),
  );
}

export async function resourcesPage({ main }) {
  const draw = async () => {
    const [q, list, usage] = await Promise.all([
      api('GET', '/api/resources/quotas'),
      api('GET', '/api/resources/allocations'),
      api('GET', '/api/resources/usage'),
    ]);
    replace(
      main,
      h('h1', {}, 'Resources'),
      h('div', { class: 'columns' },
        h('section', { class: 'card' }, h('h2', {}, 'Your quota'), quotas(q)),
        h('section', { class: 'card' }, h('h2', {}, 'Usage per user'),
          table(['User', 'Allocated', 'Running jobs', 'Worker-seconds'], usage.users.map((u) => h(
            'tr',
            {},
            h('td', {}, u.username),
            h('td', {}, String(u.allocated_workers)),
            h('td', {}, String(u.running_jobs)),
            h('td', {}, u.worker_seconds.toFixed(1)),
          ))))),
      h('section', { class: 'card wide' }, h('h2', {}, 'Your allocations'),
        table(['Allocation', 'Workers', 'Status', 'Job', 'Expires', ''], list.allocations.map((a) => allocationRow(a, draw)))),
    );
  };
  await draw();
}
