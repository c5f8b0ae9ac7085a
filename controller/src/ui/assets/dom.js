// Building the page without ever parsing text as HTML: elements come from
// createElement, text from text nodes. Every user-supplied string (job
// descriptions, output, labels, worker names) goes through here.

/** An element: `h('a', {href: '#/jobs', class: 'x'}, 'text', child)`.
 *  Attributes named on* become event listeners; strings become text nodes. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on') && typeof value === 'function') {
      el.addEventListener(key.slice(2), value);
    } else if (value === true) {
      el.setAttribute(key, '');
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

/** Appends children (strings as text, arrays flattened, null skipped). */
export function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

/** Replaces the content of `el`. */
export function replace(el, ...children) {
  el.replaceChildren();
  return append(el, children);
}

/** A status shown as a badge whose class (and so colour) is its status. */
export function badge(status) {
  return h('span', { class: `badge s-${String(status).replace(/[^a-z_]/g, '')}` }, status);
}

/** A timestamp in the browser's locale, or a dash. */
export function when(ts) {
  return ts ? new Date(ts).toLocaleString() : '—';
}

/** Seconds since `ts`, in words ("12 s ago"). */
export function ago(ts) {
  if (!ts) return '—';
  const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  return `${Math.round(s / 3600)} h ago`;
}

/** Labels as `key=value` chips. */
export function labels(map) {
  const entries = Object.entries(map || {});
  if (entries.length === 0) return '—';
  return entries.map(([k, v]) => h('span', { class: 'chip' }, `${k}=${v}`));
}

/** A table with a header row and one row per item. */
export function table(headers, rows, caption) {
  return h(
    'div',
    { class: 'table-wrap' },
    h(
      'table',
      {},
      caption ? h('caption', {}, caption) : null,
      h('thead', {}, h('tr', {}, headers.map((t) => h('th', { scope: 'col' }, t)))),
      h('tbody', {}, rows),
    ),
  );
}

/** How long a message stays in the status line. */
const SAY_MS = 6000;
let sayTimer = null;

/** Shows `message` in the status line (announced to screen readers) for a while. */
export function say(message, isError) {
  const line = document.getElementById('status');
  if (!line) return;
  line.className = isError ? 'error' : '';
  line.textContent = message;
  clearTimeout(sayTimer);
  sayTimer = setTimeout(() => {
    line.textContent = '';
  }, SAY_MS);
}

/** Asks to confirm in a modal dialog; resolves to true when confirmed. */
export function confirmDialog(message, action) {
  return new Promise((resolve) => {
    const done = (answer) => {
      dialog.close();
      dialog.remove();
      resolve(answer);
    };
    const dialog = h(
      'dialog',
      { class: 'confirm', 'aria-label': 'Confirm' },
      h('p', {}, message),
      h(
        'div',
        { class: 'actions' },
        h('button', { type: 'button', class: 'secondary', onclick: () => done(false) }, 'Keep'),
        h('button', { type: 'button', class: 'danger', 'data-confirm': true, onclick: () => done(true) }, action),
      ),
    );
    dialog.addEventListener('cancel', () => {
      dialog.remove();
      resolve(false);
    });
    document.body.append(dialog);
    dialog.showModal();
  });
}
