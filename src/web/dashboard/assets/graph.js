// The pipeline graph as an SVG picture: one lane per pipeline, nodes as boxes laid out by
// depth (sources left, sinks right), edges as arrows. update() changes only the counters.

import { t } from './i18n.js';
import { s, num } from './ui.js';

const W = 196; // node width
const H = 64; // node height
const GX = 56; // gap between columns
const GY = 14; // gap between rows
const HEAD = 30; // lane title
const PAD = 14;
const CH = 10; // spacing of the channels under a lane that carry edges skipping columns

/** What makes two answers draw the same picture. */
export function shape(pipelines) {
  return JSON.stringify(
    pipelines.map((p) => [p.name, p.description, p.nodes.map((n) => [n.id, n.role, n.kind, n.inputs])]),
  );
}

/** Columns of one lane: depth by the longest path from a source; sinks in the last column. */
function layout(nodes) {
  const byId = new Map(nodes.map((n) => [n.id, n]));
  const depth = new Map();
  const visit = (n, seen) => {
    if (depth.has(n.id)) return depth.get(n.id);
    if (seen.has(n.id)) return 0; // a cycle cannot validate; do not loop on one
    seen.add(n.id);
    let d = 0;
    if (n.role !== 'source') {
      const ins = n.inputs.map((i) => byId.get(i)).filter(Boolean);
      d = ins.length ? 1 + Math.max(...ins.map((i) => visit(i, seen))) : 1;
    }
    depth.set(n.id, d);
    return d;
  };
  for (const n of nodes) visit(n, new Set());
  const inner = nodes.filter((n) => n.role !== 'sink').map((n) => depth.get(n.id));
  const last = Math.max(inner.length ? Math.max(...inner) + 1 : 0, ...nodes.map((n) => depth.get(n.id)));
  for (const n of nodes) if (n.role === 'sink') depth.set(n.id, last);
  const columns = [];
  for (const n of nodes) {
    const d = depth.get(n.id);
    (columns[d] ||= []).push(n);
  }
  // Order each column by where its inputs are, to keep arrows from crossing.
  const row = new Map();
  columns.forEach((col, d) => {
    if (!col) return;
    if (d > 0) {
      const at = (n) => {
        const rows = n.inputs.filter((i) => row.has(i)).map((i) => row.get(i));
        return rows.length ? rows.reduce((a, b) => a + b, 0) / rows.length : Infinity;
      };
      col.sort((a, b) => at(a) - at(b));
    }
    col.forEach((n, r) => row.set(n.id, r));
  });
  return { columns, row, depth };
}

function clip(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function countersText(n) {
  return t('graph.counters', { in: num(n.events_in), out: num(n.events_out) });
}

function errorsText(n) {
  if (n.state && n.state !== 'running') return t(`state.${n.state}`);
  return n.errors > 0 ? t('graph.errors', { n: num(n.errors) }) : '';
}

function classes(n) {
  return `node role-${n.role} state-${n.state || 'running'}${n.errors > 0 ? ' has-errors' : ''}`;
}

function label(n) {
  const state = n.state && n.state !== 'running' ? ` — ${t(`state.${n.state}`)}` : '';
  return t('graph.node_label', {
    role: t(`role.${n.role}`),
    id: n.id,
    kind: n.kind,
    in: n.events_in,
    out: n.events_out,
    errors: n.errors,
  }) + state;
}

/** Draws `pipelines`; returns the <svg>. */
export function draw(pipelines) {
  const lanes = pipelines.map((p) => ({ p, ...layout(p.nodes) }));
  const cols = Math.max(1, ...lanes.map((l) => l.columns.length));
  const width = PAD * 2 + cols * W + (cols - 1) * GX;
  const pos = new Map();
  let y = 0;
  const laneBoxes = [];
  // An edge that skips a column would pass behind the boxes in between: it runs in a
  // channel under the lane's boxes instead, one channel per such edge.
  const channel = new Map();
  for (const lane of lanes) {
    const rows = Math.max(1, ...lane.columns.map((c) => (c ? c.length : 0)));
    const boxes = HEAD + rows * H + (rows - 1) * GY;
    let skipping = 0;
    for (const n of lane.p.nodes) {
      for (const input of n.inputs) {
        if (lane.depth.has(input) && lane.depth.get(n.id) - lane.depth.get(input) > 1) {
          channel.set(`${input}>${n.id}`, y + boxes + 12 + skipping * CH);
          skipping += 1;
        }
      }
    }
    const height = boxes + PAD + (skipping ? skipping * CH + 6 : 0);
    laneBoxes.push({ lane, y, height });
    lane.columns.forEach((col, d) => {
      if (!col) return;
      col.forEach((n, r) => {
        pos.set(n.id, { x: PAD + d * (W + GX), y: y + HEAD + r * (H + GY) });
      });
    });
    y += height + GY;
  }
  const height = Math.max(y - GY, H);
  const svg = s('svg', {
    class: 'graph',
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: 'group',
    'aria-label': t('graph.label'),
  });
  svg.append(
    s(
      'defs',
      {},
      s(
        'marker',
        { id: 'arrow', viewBox: '0 0 10 10', refX: '9', refY: '5', markerWidth: '7', markerHeight: '7', orient: 'auto-start-reverse' },
        s('path', { d: 'M0,0 L10,5 L0,10 z', class: 'arrowhead' }),
      ),
    ),
  );
  for (const { lane, y: ly, height: lh } of laneBoxes) {
    const title = lane.p.description ? `${lane.p.name} — ${lane.p.description}` : lane.p.name;
    svg.append(
      s(
        'g',
        { class: 'lane', 'data-pipeline': lane.p.name },
        s('rect', { x: 1, y: ly + 1, width: width - 2, height: lh - 2, rx: 8, class: 'lane-bg' }),
        s('text', { x: PAD, y: ly + 20, class: 'lane-title' }, clip(title, Math.floor(width / 7.5))),
      ),
    );
  }
  const edges = s('g', { class: 'edges', 'aria-hidden': 'true' });
  svg.append(edges);
  for (const p of pipelines) {
    for (const n of p.nodes) {
      const to = pos.get(n.id);
      for (const input of n.inputs) {
        const from = pos.get(input);
        if (!from || !to) continue;
        const x1 = from.x + W;
        const y1 = from.y + H / 2;
        const x2 = to.x - 2;
        const y2 = to.y + H / 2;
        const yc = channel.get(`${input}>${n.id}`);
        let d;
        if (yc === undefined) {
          const dx = Math.max(24, (x2 - x1) / 2);
          d = `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
        } else {
          const a = x1 + GX * 0.75;
          const b = x2 - GX * 0.75;
          d =
            `M${x1},${y1} C${x1 + GX * 0.5},${y1} ${x1 + GX * 0.25},${yc} ${a},${yc} L${b},${yc} ` +
            `C${x2 - GX * 0.25},${yc} ${x2 - GX * 0.5},${y2} ${x2},${y2}`;
        }
        edges.append(
          s('path', {
            d,
            class: 'edge',
            'data-from': input,
            'data-to': n.id,
            'marker-end': 'url(#arrow)',
          }),
        );
      }
    }
  }
  for (const p of pipelines) {
    for (const n of p.nodes) {
      const { x, y: ny } = pos.get(n.id);
      svg.append(
        s(
          'g',
          {
            class: classes(n),
            'data-id': n.id,
            transform: `translate(${x},${ny})`,
            role: 'img',
            'aria-label': label(n),
          },
          s('title', {}, label(n)),
          s('rect', { width: W, height: H, rx: 6, class: 'node-box' }),
          s('rect', { width: 5, height: H, rx: 2, class: 'node-stripe' }),
          s('text', { x: 14, y: 19, class: 'node-name' }, clip(n.name, 24)),
          s('text', { x: W - 8, y: 19, class: 'node-role', 'text-anchor': 'end' }, t(`role.${n.role}`)),
          s('text', { x: 14, y: 36, class: 'node-kind' }, clip(n.kind, 28)),
          s('text', { x: 14, y: 54, class: 'counters' }, countersText(n)),
          s('text', { x: W - 8, y: 54, class: 'node-errors', 'text-anchor': 'end' }, errorsText(n)),
        ),
      );
    }
  }
  return svg;
}

/** Writes new counters into a drawn graph; marks the nodes that moved. */
export function update(svg, pipelines, previous) {
  for (const p of pipelines) {
    for (const n of p.nodes) {
      const g = svg.querySelector(`g.node[data-id="${CSS.escape(n.id)}"]`);
      if (!g) continue;
      g.querySelector('text.counters').textContent = countersText(n);
      g.querySelector('text.node-errors').textContent = errorsText(n);
      g.setAttribute('class', classes(n));
      g.setAttribute('aria-label', label(n));
      g.querySelector('title').textContent = label(n);
      const before = previous && previous.get(n.id);
      const moved = before && (before.events_in !== n.events_in || before.events_out !== n.events_out);
      g.classList.toggle('busy', Boolean(moved));
      for (const e of svg.querySelectorAll(`path.edge[data-from="${CSS.escape(n.id)}"]`)) {
        e.classList.toggle('busy', Boolean(before && before.events_out !== n.events_out));
      }
    }
  }
}
