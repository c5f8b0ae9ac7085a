// The dashboard's entry point: hash routing (#/jobs, #/job/ID, ...), the
// login form, the navigation, and the clean-up of live streams when the
// page changes.

import { can, describe, logIn, logOut, resume, session, whenLoggedOut } from './api.js';
import { h, replace, say } from './dom.js';
import { overviewPage } from './overview.js';
import { jobsPage } from './jobs.js';
import { jobPage } from './job.js';
import { workerPage, workersPage } from './workers.js';
import { resourcesPage } from './resources.js';

/** What the current page opened (event sources, timers), closed on leaving. */
const cleanups = [];

/** The context each page gets: where to draw, and how to register clean-up. */
function context() {
  const main = document.getElementById('main');
  return { main, onLeave: (fn) => cleanups.push(fn) };
}

const routes = [
  [/^#?\/?$/, (ctx) => overviewPage(ctx)],
  [/^#\/jobs$/, (ctx) => jobsPage(ctx)],
  [/^#\/jobs\/([0-9a-f-]{36})$/, (ctx, id) => jobPage(ctx, id)],
  [/^#\/workers$/, (ctx) => workersPage(ctx)],
  [/^#\/workers\/([A-Za-z0-9._:%-]{1,400})$/, (ctx, id) => workerPage(ctx, decodeURIComponent(id))],
  [/^#\/resources$/, (ctx) => resourcesPage(ctx)],
];

/** Draws the page the hash names. */
async function show() {
  while (cleanups.length) cleanups.pop()();
  const ctx = context();
  if (!session.me) {
    loginPage(ctx);
    return;
  }
  const hash = window.location.hash;
  markCurrent(hash);
  for (const [pattern, page] of routes) {
    const match = pattern.exec(hash);
    if (match) {
      replace(ctx.main, h('p', { class: 'muted' }, 'Loading…'));
      try {
        await page(ctx, ...match.slice(1));
      } catch (e) {
        replace(ctx.main, h('h1', {}, 'Something went wrong'), h('p', { class: 'error' }, describe(e)));
      }
      return;
    }
  }
  replace(ctx.main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to the overview')));
}

/** Marks the navigation link of the current section. */
function markCurrent(hash) {
  const section = (hash.split('/')[1] || '').replace(/[^a-z]/g, '');
  for (const link of document.querySelectorAll('#nav a')) {
    const current = link.dataset.section === section;
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
}

/** The navigation and the user's name, once logged in. */
function drawChrome() {
  const nav = document.getElementById('nav');
  const who = document.getElementById('who');
  const out = document.getElementById('logout');
  const links = [
    ['', 'Overview', true],
    ['jobs', 'Jobs', can('jobs:read')],
    ['workers', 'Workers', can('supervisor:read')],
    ['resources', 'Resources', can('resources:read')],
  ];
  replace(
    nav,
    links.filter(([, , shown]) => shown).map(([section, text]) =>
      h('a', { href: `#/${section}`, 'data-section': section }, text)),
  );
  nav.hidden = !session.me;
  out.hidden = !session.me;
  who.textContent = session.me ? `${session.me.username} · ${session.me.scopes.join(', ')}` : '';
}

/** The login form. */
function loginPage(ctx) {
  drawChrome();
  const user = h('input', { id: 'username', name: 'username', autocomplete: 'username', required: true });
  const pass = h('input', { id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true });
  const problem = h('p', { class: 'error', role: 'alert' });
  const form = h(
    'form',
    { class: 'login', id: 'login' },
    h('h1', {}, 'Sign in'),
    h('label', { for: 'username' }, 'User name'), user,
    h('label', { for: 'password' }, 'Password'), pass,
    h('button', { type: 'submit' }, 'Sign in'),
    problem,
  );
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    problem.textContent = '';
    try {
      await logIn(user.value, pass.value);
      drawChrome();
      show();
    } catch (e) {
      problem.textContent = describe(e);
    }
  });
  replace(ctx.main, form);
  user.focus();
}

async function start() {
  document.getElementById('logout').addEventListener('click', async () => {
    try {
      await logOut();
    } catch (e) {
      say(describe(e), true);
    }
    drawChrome();
    show();
  });
  whenLoggedOut(() => {
    session.me = null;
    drawChrome();
    show();
  });
  window.addEventListener('hashchange', show);
  try {
    await resume();
  } catch (e) {
    say(describe(e), true);
  }
  drawChrome();
  await show();
  window.__uiReady = performance.now();
}

start();
