// Overview: workers and jobs by status, jobs finished per minute and the
// queue depth over the last hour, failures in the last hour. Updated live
// by the overview stream (GET /api/stats/stream), not by reloading.

import { api, can } from './api.js';
import { badge, h, replace } from './dom.js';
import { barChart, lineChart } from './charts.js';

/** Counts by status as a list of badges with numbers. */
function counts(title, map, link) {
  const items = Object.entries(map).map(([status, n]) =>
    h('li', {}, badge(status), h('span', { class: 'count' }, String(n))));
  return h('section', { class: 'card' }, h('h2', {}, link ? h('a', { href: link }, title) : title), h('ul', { class: 'counts' }, items));
}

/** Draws one overview (fleet figures and timeline) into `area`. */
function draw(area, overview) {
  const { fleet, timeline } = overview;
  const points = timeline.points;
  const failures = points.reduce((sum, p) => sum + p.failed, 0);
  const completed = points.reduce((sum, p) => sum + p.completed, 0);
  replace(
    area,
    h(
      'div',
      { class: 'cards' },
      counts('Workers', fleet.workers_by_status, '#/workers'),
      counts('Jobs', fleet.jobs_by_status, '#/jobs'),
      h(
        'section',
        { class: 'card' },
        h('h2', {}, 'Last hour'),
        h('p', { class: 'big', id: 'failures' }, String(failures), h('span', { class: 'muted' }, ' failed')),
        h('p', {}, `${completed} completed · queue depth now ${fleet.queue_depth}`),
      ),
    ),
    h(
      'div',
      { class: 'columns' },
      h('section', { class: 'card' }, h('h2', {}, 'Completed per minute'), barChart('Jobs completed per minute, last hour', points, 'completed')),
      h('section', { class: 'card' }, h('h2', {}, 'Queue depth'), lineChart('Queue depth (pending + queued), last hour', points, 'queue_depth')),
    ),
  );
}

export async function overviewPage({ main, onLeave }) {
  if (!can('supervisor:read')) {
    replace(main, h('h1', {}, 'Overview'), h('p', {}, 'The fleet overview needs the supervisor:read scope. ', h('a', { href: '#/jobs' }, 'See your jobs'), '.'));
    return;
  }
  const live = h('span', { class: 'live', id: 'live' }, 'connecting…');
  const area = h('div', { id: 'overview' });
  replace(main, h('h1', {}, 'Overview ', live), area);
  const [fleet, timeline] = await Promise.all([api('GET', '/api/supervisor/metrics'), api('GET', '/api/stats/timeline')]);
  draw(area, { fleet, timeline });
  const source = new EventSource('/api/stats/stream');
  source.addEventListener('overview', (event) => {
    draw(area, JSON.parse(event.data));
    live.textContent = `live · ${new Date().toLocaleTimeString()}`;
  });
  // Each response lasts a few seconds and the browser reconnects by
  // itself; only a closed source is worth saying.
  source.addEventListener('error', () => {
    if (source.readyState === EventSource.CLOSED) live.textContent = 'disconnected';
  });
  onLeave(() => source.close());
}
