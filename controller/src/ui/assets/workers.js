// Workers: status, capacity and running jobs, last heartbeat age, pools
// and labels;
// pause, resume and terminate (confirmed first); a worker's page with its
// recent jobs.

import { api, can, describe } from './api.js';
import { ago, badge, confirmDialog, h, labels, replace, say, table, when } from './dom.js';

const REFRESH_MS = 3000;

/** The commands each status allows (the server's state machine decides). */
function commands(worker, reload) {
  if (!can('supervisor:write')) return [];
  const run = (command, question) => async () => {
    if (question && !(await confirmDialog(question, `${command[0].toUpperCase()}${command.slice(1)}`))) return;
    try {
      await api('POST', `/api/supervisor/workers/${encodeURIComponent(worker.worker_id)}/${command}`);
      say(`Worker ${worker.worker_id}: ${command} sent.`);
      await reload();
    } catch (e) {
      say(describe(e), true);
    }
  };
  const id = worker.worker_id.replace(/[^A-Za-z0-9_-]/g, '_');
  const buttons = [];
  if (['idle', 'busy'].includes(worker.status)) {
    buttons.push(h('button', { type: 'button', class: 'secondary', id: `pause-${id}`, onclick: run('pause', `Pause ${worker.worker_id}? It finishes what it runs and takes nothing new.`) }, 'Pause'));
  }
  if (worker.status === 'paused') {
    buttons.push(h('button', { type: 'button', class: 'secondary', id: `resume-${id}`, onclick: run('resume') }, 'Resume'));
  }
  if (['idle', 'busy', 'paused'].includes(worker.status)) {
    buttons.push(h('button', { type: 'button', class: 'danger', id: `terminate-${id}`, onclick: run('terminate', `Terminate ${worker.worker_id}? It drains and exits.`) }, 'Terminate'));
  }
  return buttons;
}

/** The pools a worker serves (an agent from before pools: `default`). */
function pools(worker) {
  return (worker.pools ?? ['default']).join(', ');
}

function workerRow(worker, reload) {
  return h(
    'tr',
    { 'data-worker': worker.worker_id },
    h('td', {}, h('a', { href: `#/workers/${encodeURIComponent(worker.worker_id)}` }, worker.worker_id)),
    h('td', {}, badge(worker.status)),
    h('td', {}, `${worker.running_jobs} / ${worker.capacity}`),
    h('td', {}, ago(worker.last_heartbeat_at)),
    h('td', { class: 'pools' }, pools(worker)),
    h('td', {}, labels(worker.labels)),
    h('td', {}, worker.hostname),
    h('td', { class: 'actions' }, commands(worker, reload)),
  );
}

export async function workersPage({ main, onLeave }) {
  const area = h('div', { id: 'workers' });
  replace(main, h('h1', {}, 'Workers'), area);
  const draw = async () => {
    const list = await api('GET', '/api/supervisor/workers');
    replace(
      area,
      h('p', { class: 'muted' }, `${list.total} worker${list.total === 1 ? '' : 's'}`),
      table(['Worker', 'Status', 'Running / capacity', 'Last heartbeat', 'Pools', 'Labels', 'Host', 'Actions'], list.workers.map((w) => workerRow(w, draw))),
    );
  };
  await draw();
  const timer = setInterval(() => draw().catch((e) => say(describe(e), true)), REFRESH_MS);
  onLeave(() => clearInterval(timer));
}

export async function workerPage({ main }, workerId) {
  const top = h('div', {});
  const draw = async () => {
    const worker = await api('GET', `/api/supervisor/workers/${encodeURIComponent(workerId)}`);
    const rows = [
      ['Status', badge(worker.status)],
      ['Capacity', `${worker.running_jobs} running of ${worker.capacity}`],
      ['Last heartbeat', `${ago(worker.last_heartbeat_at)} (${when(worker.last_heartbeat_at)})`],
      ['Pools', pools(worker)],
      ['Labels', labels(worker.labels)],
      ['Host', worker.hostname],
      ['Version', worker.version],
      ['Registered', when(worker.registered_at)],
      ['Generation', String(worker.generation)],
    ];
    replace(
      top,
      h('h1', {}, 'Worker ', worker.worker_id),
      h('div', { class: 'toolbar' }, commands(worker, draw)),
      h('dl', { class: 'fields card' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
    );
  };
  await draw();
  const recent = h('section', { class: 'card wide' }, h('h2', {}, 'Recent jobs'));
  if (can('jobs:read')) {
    const page = await api('GET', `/api/jobs/search?worker=${encodeURIComponent(workerId)}&limit=20`);
    recent.append(table(['Job', 'Status', 'Description', 'Created'], page.jobs.map((j) => h(
      'tr',
      {},
      h('td', {}, h('a', { href: `#/jobs/${j.job_id}`, class: 'mono' }, j.job_id.slice(0, 8))),
      h('td', {}, badge(j.status)),
      h('td', { class: 'desc' }, j.task_description),
      h('td', {}, when(j.created_at)),
    ))));
  } else {
    recent.append(h('p', { class: 'muted' }, 'Listing jobs needs the jobs:read scope.'));
  }
  replace(main, top, recent);
}
