// One job: its fields, the transition timeline (job_events) with worker and
// reason, its shards and their workers, the live output (the existing SSE
// stream, replayed then followed), and cancel and resubmit buttons.

import { api, can, describe } from './api.js';
import { badge, confirmDialog, h, labels, replace, say, table, when } from './dom.js';

const TERMINAL = new Set(['completed', 'failed', 'cancelled', 'timed_out']);
const REFRESH_MS = 2000;

/** The fields of a job as a definition list. */
function fields(job) {
  const rows = [
    ['Status', badge(job.status)],
    ['Description', h('span', { id: 'description', class: 'pre' }, job.task_description)],
    ['Command', job.command ? h('code', {}, job.command.join(' ')) : '—'],
    ['Labels', labels(job.labels)],
    ['Priority', String(job.priority)],
    ['Attempts', `${job.attempts} (retries allowed: ${job.max_retries})`],
    ['Timeout', job.timeout_seconds ? `${job.timeout_seconds} s` : 'none'],
    ['Created', when(job.created_at)],
    ['Started', when(job.started_at)],
    ['Finished', when(job.finished_at)],
    ['Exit code', job.exit_code === null ? '—' : String(job.exit_code)],
    ['Error', job.error || '—'],
    ['Waiting for', job.waiting_for || '—'],
  ];
  return h('dl', { class: 'fields' }, rows.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]));
}

/** The shards of the current attempt and the worker of each. */
function shards(job) {
  const rows = [];
  for (let i = 0; i < job.required_workers; i += 1) {
    const worker = job.assigned_workers[i];
    rows.push(h('tr', {}, h('td', {}, String(i)), h('td', {}, worker ? h('a', { href: `#/workers/${encodeURIComponent(worker)}` }, worker) : '—')));
  }
  return table(['Shard', 'Worker'], rows);
}

/** The timeline of transitions. */
function timeline(events) {
  return h(
    'ol',
    { class: 'timeline', id: 'timeline' },
    events.map((e) => h(
      'li',
      {},
      h('time', {}, when(e.at)), ' ',
      e.from ? [badge(e.from), ' → '] : '',
      badge(e.to),
      e.worker_id ? [' on ', h('a', { href: `#/workers/${encodeURIComponent(e.worker_id)}` }, e.worker_id)] : '',
      e.reason ? h('span', { class: 'muted' }, ` — ${e.reason}`) : '',
    )),
  );
}

/** The body of a resubmission: the job's own settings. */
function resubmission(job) {
  const body = {
    task_description: job.task_description,
    required_workers: job.required_workers,
    priority: job.priority,
    max_retries: job.max_retries,
    labels: job.labels,
  };
  for (const key of ['command', 'timeout_seconds', 'memory_mb', 'cpu', 'max_pids']) {
    if (job[key] !== null && job[key] !== undefined) body[key] = job[key];
  }
  return body;
}

/** The action buttons the caller's scopes allow. */
function actions(job, reload) {
  if (!can('jobs:write')) return null;
  const cancel = async () => {
    if (!(await confirmDialog('Cancel this job?', 'Cancel job'))) return;
    await api('POST', `/api/jobs/${job.job_id}/cancel`);
    say('Job cancelled.');
    await reload();
  };
  const resubmit = async () => {
    const created = await api('POST', '/api/jobs/submit', resubmission(job));
    window.location.hash = `#/jobs/${created.job_id}`;
  };
  const guard = (fn) => () => fn().catch((e) => say(describe(e), true));
  return h(
    'div',
    { class: 'toolbar' },
    TERMINAL.has(job.status) ? null : h('button', { type: 'button', class: 'danger', id: 'cancel-job', onclick: guard(cancel) }, 'Cancel job'),
    h('button', { type: 'button', id: 'resubmit', onclick: guard(resubmit) }, 'Resubmit'),
  );
}

/** The live output of one shard: replayed, then followed until the job ends. */
function output(jobId, shardCount, onLeave, onChange) {
  const pre = h('pre', { class: 'output', id: 'output', tabindex: '0', 'aria-label': 'Output' });
  const follow = h('input', { type: 'checkbox', id: 'follow', checked: true });
  const state = h('span', { class: 'muted', id: 'output-state' }, 'connecting…');
  const shard = h('select', { id: 'shard', 'aria-label': 'Shard' },
    Array.from({ length: shardCount }, (_, i) => h('option', { value: String(i) }, `shard ${i}`)));
  let source = null;
  const open = () => {
    if (source) source.close();
    pre.replaceChildren();
    source = new EventSource(`/api/jobs/${jobId}/output/stream?shard=${shard.value}`);
    source.addEventListener('output', (event) => {
      const piece = JSON.parse(event.data);
      if (pre.childElementCount === 0) onChange();
      const span = h('span', { class: piece.stream }, piece.data);
      pre.append(span);
      state.textContent = 'streaming';
      if (follow.checked) pre.scrollTop = pre.scrollHeight;
    });
    source.addEventListener('end', (event) => {
      const end = JSON.parse(event.data);
      state.textContent = `ended: ${end.status}${end.exit_code === null ? '' : ` (exit ${end.exit_code})`}`;
      source.close();
      onChange();
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) state.textContent = 'disconnected';
    });
  };
  shard.addEventListener('change', open);
  onLeave(() => source && source.close());
  open();
  return h(
    'section',
    { class: 'card wide' },
    h('h2', {}, 'Output'),
    h('div', { class: 'toolbar' }, shardCount > 1 ? shard : null, h('label', { for: 'follow' }, follow, ' Follow'), state),
    pre,
  );
}

export async function jobPage({ main, onLeave }, jobId) {
  const top = h('div', { id: 'job-top' });
  const draw = async () => {
    const [job, events] = await Promise.all([api('GET', `/api/jobs/${jobId}`), api('GET', `/api/jobs/${jobId}/events`)]);
    replace(
      top,
      h('h1', {}, 'Job ', h('span', { class: 'mono' }, job.job_id)),
      actions(job, draw),
      h('div', { class: 'columns' },
        h('section', { class: 'card' }, h('h2', {}, 'Fields'), fields(job)),
        h('section', { class: 'card' }, h('h2', {}, 'Shards'), shards(job), h('h2', {}, 'Timeline'), timeline(events.events))),
    );
    return job;
  };
  const job = await draw();
  let last = job.status;
  const refresh = async () => {
    try {
      last = (await draw()).status;
    } catch (e) {
      say(describe(e), true);
    }
  };
  // Fields follow the job: every few seconds while it has not ended, and
  // at once when its output starts and when it ends.
  replace(main, top, output(jobId, job.required_workers, onLeave, refresh));
  const timer = setInterval(() => {
    if (!TERMINAL.has(last)) refresh();
  }, REFRESH_MS);
  onLeave(() => clearInterval(timer));
}
