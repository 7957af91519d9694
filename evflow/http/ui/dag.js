// Where the task graph's boxes go: the layered layout of dagre (vendored), left to right.

import dagre from "./vendor/dagre.esm.min.js";

export const NODE_W = 200;
export const NODE_H = 52;
const PAD = 14;

/**
 * Positions for ``nodes`` (a Map name -> {upstream: [...]}): top-left corners in ``pos``, the
 * route of each edge ("up->down") in ``edges``, and the drawing's size.
 */
export function layout(nodes) {
  const g = new dagre.graphlib.Graph();
  g.setGraph({ rankdir: "LR", nodesep: 22, ranksep: 64, marginx: PAD, marginy: PAD });
  g.setDefaultEdgeLabel(() => ({}));
  for (const name of nodes.keys()) g.setNode(name, { width: NODE_W, height: NODE_H });
  for (const [name, n] of nodes) {
    for (const up of n.upstream ?? []) if (nodes.has(up)) g.setEdge(up, name);
  }
  dagre.layout(g);
  const pos = new Map();
  for (const name of g.nodes()) {
    const p = g.node(name);
    pos.set(name, { x: p.x - NODE_W / 2, y: p.y - NODE_H / 2 });
  }
  const edges = new Map();
  for (const e of g.edges()) edges.set(`${e.v}->${e.w}`, g.edge(e).points ?? []);
  const graph = g.graph();
  return { pos, edges, NODE_W, NODE_H, width: Math.ceil(graph.width ?? 0) + 8, height: Math.ceil(graph.height ?? 0) + 8 };
}
