// Hand-drawn SVG charts: one series of values per minute, as bars or a
// line, with the axis labels in text nodes (never markup from strings).

const NS = 'http://www.w3.org/2000/svg';
const WIDTH = 600;
const HEIGHT = 160;
const PAD = { left: 36, right: 8, top: 10, bottom: 22 };

function svg(tag, attrs, ...children) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(typeof c === 'string' ? document.createTextNode(c) : c);
  return el;
}

/** The frame of a chart: the y axis from 0 to `max`, and time labels. */
function frame(title, points, max) {
  const root = svg('svg', { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: 'img', class: 'chart', 'aria-label': title });
  root.append(svg('title', {}, title));
  const bottom = HEIGHT - PAD.bottom;
  for (const value of [0, max / 2, max]) {
    const y = bottom - (value / max) * (bottom - PAD.top);
    root.append(svg('line', { x1: PAD.left, x2: WIDTH - PAD.right, y1: y, y2: y, class: 'grid' }));
    root.append(svg('text', { x: PAD.left - 4, y: y + 4, class: 'axis', 'text-anchor': 'end' }, String(Math.round(value))));
  }
  const ends = [points[0], points[points.length - 1]];
  ends.forEach((p, i) => {
    if (!p) return;
    const label = new Date(p.minute).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
    const x = i === 0 ? PAD.left : WIDTH - PAD.right;
    root.append(svg('text', { x, y: HEIGHT - 6, class: 'axis', 'text-anchor': i === 0 ? 'start' : 'end' }, label));
  });
  return root;
}

function scale(points, key) {
  const max = Math.max(1, ...points.map((p) => p[key] || 0));
  return Math.ceil(max / 2) * 2;
}

/** Bars of `key` per minute. */
export function barChart(title, points, key) {
  const max = scale(points, key);
  const root = frame(title, points, max);
  const bottom = HEIGHT - PAD.bottom;
  const step = (WIDTH - PAD.left - PAD.right) / Math.max(1, points.length);
  points.forEach((p, i) => {
    const value = p[key] || 0;
    if (value === 0) return;
    const height = (value / max) * (bottom - PAD.top);
    const bar = svg('rect', { x: PAD.left + i * step + 1, y: bottom - height, width: Math.max(1, step - 2), height, class: `bar ${key}` });
    bar.append(svg('title', {}, `${new Date(p.minute).toLocaleTimeString()}: ${value}`));
    root.append(bar);
  });
  return root;
}

/** A line of `key` per minute (gaps where no sample exists). */
export function lineChart(title, points, key) {
  const max = scale(points, key);
  const root = frame(title, points, max);
  const bottom = HEIGHT - PAD.bottom;
  const step = (WIDTH - PAD.left - PAD.right) / Math.max(1, points.length - 1);
  let path = '';
  let pen = 'M';
  points.forEach((p, i) => {
    const value = p[key];
    if (value === null || value === undefined) {
      pen = 'M';
      return;
    }
    const x = PAD.left + i * step;
    const y = bottom - (value / max) * (bottom - PAD.top);
    path += `${pen}${x.toFixed(1)},${y.toFixed(1)} `;
    pen = 'L';
  });
  if (path) root.append(svg('path', { d: path.trim(), class: `line ${key}` }));
  return root;
}
