/**
 * The pure layout module: DAG JSON -> graph (jobs, artifacts, edges) -> positions.
 *
 * It owns what is drawn where, and nothing else: no DOM, no fetch, no JupyterLab
 * imports, so it runs unchanged in the Web Worker (layout-worker.ts), on the
 * main thread as a fallback, and under `node --test` (test/layout.test.mjs).
 * Node sizes are estimated from character counts rather than measured, which is
 * what lets the layout leave the main thread.
 *
 * Layout engine: dagre (layered / Sugiyama). See ARCHITECTURE.md for why.
 */

import dagre from '@dagrejs/dagre';

import type { IDagDoc, IJobJson } from './model';

export type NodeKind = 'job' | 'artifact' | 'group';

export interface IGraphNode {
  id: string; // job id, or "a:" + blake3 for an artifact node
  kind: NodeKind;
  label: string; // shown as text, never as HTML
  sub: string; // second line: status/capture for jobs, short hash for artifacts
  width: number;
  height: number;
  status?: string;
  stale?: boolean;
  capture?: string;
  external?: boolean; // artifact no job of this DAG produced
  members?: string[]; // a group: the ids of the jobs it stands for, oldest first
}

export interface IGraphEdge {
  from: string;
  to: string;
  /** The artifacts this edge stands for (artifacts-as-edges mode) or carries. */
  hashes: string[];
  label: string;
}

export interface IGraph {
  nodes: IGraphNode[];
  edges: IGraphEdge[];
}

export interface IPlacedNode extends IGraphNode {
  x: number; // centre
  y: number;
}

export interface IPlacedEdge extends IGraphEdge {
  points: { x: number; y: number }[];
}

export interface ILayout {
  nodes: IPlacedNode[];
  edges: IPlacedEdge[];
  width: number;
  height: number;
}

export interface IGraphOptions {
  artifactsAsNodes: boolean;
  /** Groups (see `groupKey`) the user unfolded: their jobs are drawn one by one. */
  expandedGroups?: string[];
  /** Siblings fold into one group node from this many on (default FOLD_AT). */
  foldAt?: number;
}

/** From this many Ray tasks of one function run by one job on, they are drawn as one node. */
export const FOLD_AT = 2;

/**
 * The group a job folds into: the Ray tasks of one function that one job or cell
 * ran, e.g. 200 calls of `featurize`. Null for any other job. The same rule as
 * `roar dag` (roar_nb/report.py, `_task_groups`).
 */
export function groupKey(j: IJobJson): string | null {
  return j.kind === 'ray_task' && j.parent_job ? `g:${j.parent_job}:${j.step}` : null;
}

const CHAR_W = 6.6; // average width of a 11px UI-font character
const MAX_LABEL = 44;

/** `s` cut to `n` characters with an ellipsis. */
export function shorten(s: string, n: number = MAX_LABEL): string {
  return s.length > n ? s.slice(0, n - 1) + '\u2026' : s;
}

export function basename(p: string): string {
  const i = p.lastIndexOf('/');
  return i >= 0 ? p.slice(i + 1) : p;
}

function boxWidth(...lines: string[]): number {
  const chars = Math.max(...lines.map(l => l.length));
  return Math.round(Math.max(80, chars * CHAR_W + 24));
}

function jobLabel(j: IJobJson): string {
  if (j.label) {
    return shorten(j.label);
  }
  const text = (j.kind === 'cell' && j.source) || j.command || '';
  const first = text
    .split('\n')
    .map(l => l.trim())
    .find(l => l && !l.startsWith('%%roar') && !l.startsWith('#'));
  return shorten(`${j.ref} ${first ?? ''}`.trim());
}

function jobSub(j: IJobJson, withSession: boolean): string {
  const parts = [j.kind, j.status === 'failed' ? `failed (${j.exit_code})` : 'ok'];
  if (withSession) {
    // Across sessions `@N` repeats: say whose @N this is.
    parts.push(j.notebook ? basename(j.notebook_path ?? j.notebook) : `session ${j.session.slice(0, 6)}`);
  }
  if (j.capture_level !== 'complete') {
    parts.push(j.capture_level);
  }
  if (j.stale) {
    parts.push('stale');
  }
  return parts.join(' \u00b7 ');
}

/**
 * The graph to draw. Jobs are always nodes. With `artifactsAsNodes`, every
 * artifact a job of the DAG wrote or read becomes a node (inputs nobody here
 * wrote are marked `external`); otherwise a producer -> consumer edge stands for
 * the artifacts that link them, labelled with their file names.
 */
export function buildGraph(doc: IDagDoc, opts: IGraphOptions): IGraph {
  const jobs = doc.jobs ?? [];
  const nodes: IGraphNode[] = [];
  const edges: IGraphEdge[] = [];
  const ids = new Set(jobs.map(j => j.id));
  const manySessions = new Set(jobs.map(j => j.session)).size > 1;
  for (const j of jobs) {
    const label = jobLabel(j);
    const sub = jobSub(j, manySessions);
    nodes.push({
      id: j.id,
      kind: 'job',
      label,
      sub,
      width: boxWidth(label, sub),
      height: 40,
      status: j.status,
      stale: !!j.stale,
      capture: j.capture_level
    });
  }
  if (opts.artifactsAsNodes) {
    const art = new Map<string, { path: string; producers: Set<string> }>();
    const note = (hash: string, path: string) => {
      if (!art.has(hash)) {
        art.set(hash, { path, producers: new Set() });
      }
      return art.get(hash)!;
    };
    for (const j of jobs) {
      for (const e of j.outputs) {
        if (e.hash) {
          note(e.hash, e.path).producers.add(j.id);
        }
      }
    }
    for (const j of jobs) {
      for (const e of j.inputs) {
        if (e.hash) {
          note(e.hash, e.path);
        }
      }
    }
    for (const [hash, a] of art) {
      const label = shorten(basename(a.path), 36);
      const sub = hash.slice(0, 8);
      nodes.push({
        id: 'a:' + hash,
        kind: 'artifact',
        label,
        sub,
        width: boxWidth(label, sub),
        height: 34,
        external: a.producers.size === 0
      });
      for (const p of a.producers) {
        edges.push({ from: p, to: 'a:' + hash, hashes: [hash], label: '' });
      }
    }
    for (const j of jobs) {
      const seen = new Set<string>();
      for (const e of j.inputs) {
        if (e.hash && !seen.has(e.hash) && !art.get(e.hash)!.producers.has(j.id)) {
          seen.add(e.hash);
          edges.push({ from: 'a:' + e.hash, to: j.id, hashes: [e.hash], label: '' });
        }
      }
    }
  } else {
    const byId = new Map(jobs.map(j => [j.id, j]));
    for (const j of jobs) {
      for (const d of j.depends_on) {
        if (!ids.has(d)) {
          continue;
        }
        const producer = byId.get(d)!;
        const made = new Map(producer.outputs.filter(e => e.hash).map(e => [e.hash!, e.path]));
        const via = j.inputs.filter(e => e.hash && made.has(e.hash));
        const names = [...new Set(via.map(e => basename(e.path)))];
        const label = names.length > 2 ? `${names.slice(0, 2).join(', ')} +${names.length - 2}` : names.join(', ');
        edges.push({
          from: d,
          to: j.id,
          hashes: [...new Set(via.map(e => e.hash!))],
          label: shorten(label, 40)
        });
      }
    }
  }
  return fold({ nodes, edges }, jobs, opts);
}

/** The name a group of jobs shows: the step for Ray tasks (a function name), else a job's label. */
function groupName(j: IJobJson): string {
  return j.kind === 'ray_task' ? j.step : jobLabel(j).replace(/^@\S+\s*/, '');
}

/**
 * Siblings of one group (`groupKey`), FOLD_AT or more and not unfolded by the user,
 * become one node; edges to and from them are merged, edges inside the group dropped.
 */
function fold(g: IGraph, jobs: IJobJson[], opts: IGraphOptions): IGraph {
  const groups = new Map<string, IJobJson[]>();
  for (const j of jobs) {
    const k = groupKey(j);
    if (k) {
      groups.set(k, [...(groups.get(k) ?? []), j]);
    }
  }
  const open = new Set(opts.expandedGroups ?? []);
  const into = new Map<string, string>(); // job id -> group node id
  const groupNodes: IGraphNode[] = [];
  for (const [key, members] of groups) {
    if (members.length < (opts.foldAt ?? FOLD_AT) || open.has(key)) {
      continue;
    }
    const failed = members.filter(m => m.status !== 'ok').length;
    const incomplete = members.filter(m => m.capture_level !== 'complete');
    const label = shorten(`${members.length} \u00d7 ${groupName(members[0])}`);
    const parts = [members[0].kind, `${members.length - failed} ok`];
    if (failed) {
      parts.push(`${failed} failed`);
    }
    if (incomplete.length) {
      parts.push(`${incomplete.length} ${incomplete.some(m => m.capture_level === 'partial') ? 'partial' : incomplete[0].capture_level}`);
    }
    if (members.some(m => m.stale)) {
      parts.push('stale');
    }
    const sub = parts.join(' \u00b7 ');
    groupNodes.push({
      id: key,
      kind: 'group',
      label,
      sub,
      width: boxWidth(label, sub),
      height: 40,
      status: failed ? 'failed' : 'ok',
      stale: members.some(m => !!m.stale),
      capture: incomplete.length ? 'partial' : 'complete',
      members: members.map(m => m.id)
    });
    for (const m of members) {
      into.set(m.id, key);
    }
  }
  if (!into.size) {
    return g;
  }
  const nodes = [...g.nodes.filter(n => !into.has(n.id)), ...groupNodes];
  const merged = new Map<string, IGraphEdge & { labels: Set<string> }>();
  for (const e of g.edges) {
    const from = into.get(e.from) ?? e.from;
    const to = into.get(e.to) ?? e.to;
    if (from === to) {
      continue; // inside one group
    }
    const k = `${from}\n${to}`;
    const m = merged.get(k);
    if (!m) {
      merged.set(k, { from, to, hashes: [...e.hashes], label: e.label, labels: new Set(e.label ? [e.label] : []) });
    } else {
      m.hashes = [...new Set([...m.hashes, ...e.hashes])];
      if (e.label) {
        m.labels.add(e.label);
      }
    }
  }
  const edges = [...merged.values()].map(({ labels, ...e }) => ({
    ...e,
    label: labels.size > 1 ? `${e.hashes.length} files` : e.label
  }));
  return { nodes, edges };
}

/** A string that changes iff the drawn graph changes (skips re-layout on no-op polls). */
export function graphSignature(g: IGraph): string {
  const n = g.nodes.map(x => `${x.id}|${x.label}|${x.sub}|${x.external ? 1 : 0}`).join('\n');
  const e = g.edges.map(x => `${x.from}>${x.to}|${x.label}`).join('\n');
  return `${n}\n--\n${e}`;
}

/**
 * Above this many nodes dagre's crossing minimisation (seconds for 500 densely
 * linked jobs) is replaced by `layoutFast`, linear-ish and ~100x quicker.
 */
export const DAGRE_MAX_NODES = 250;

const NODESEP = 16;
const RANKSEP = 34;
const MARGIN = 12;

/** Layered top-to-bottom layout (a sidebar is tall and narrow). Pure: same graph, same positions. */
export function layoutGraph(g: IGraph): ILayout {
  return g.nodes.length > DAGRE_MAX_NODES ? layoutFast(g) : layoutDagre(g);
}

/** dagre (Sugiyama: network-simplex ranks, crossing minimisation, routed edges). */
export function layoutDagre(g: IGraph): ILayout {
  if (!g.nodes.length) {
    return { nodes: [], edges: [], width: 0, height: 0 }; // dagre would say -Infinity
  }
  const dg = new dagre.graphlib.Graph({ multigraph: true });
  dg.setGraph({ rankdir: 'TB', nodesep: NODESEP, ranksep: RANKSEP, edgesep: 10, marginx: MARGIN, marginy: MARGIN });
  dg.setDefaultEdgeLabel(() => ({}));
  for (const n of g.nodes) {
    dg.setNode(n.id, { width: n.width, height: n.height });
  }
  g.edges.forEach((e, i) => {
    dg.setEdge(e.from, e.to, { weight: 1, minlen: 1 }, `e${i}`);
  });
  dagre.layout(dg);
  const nodes = g.nodes.map(n => {
    const p = dg.node(n.id);
    return { ...n, x: p.x, y: p.y };
  });
  const edges = g.edges.map((e, i) => {
    const pe = dg.edge({ v: e.from, w: e.to, name: `e${i}` });
    return { ...e, points: (pe?.points ?? []).map((p: { x: number; y: number }) => ({ x: p.x, y: p.y })) };
  });
  const gg = dg.graph();
  return { nodes, edges, width: gg.width ?? 0, height: gg.height ?? 0 };
}

/**
 * The large-graph layout: longest-path ranks, four barycentre sweeps to reduce
 * crossings, rows packed and centred, straight edges. No dummy nodes, so cost
 * grows with nodes + edges, not with how many ranks an edge spans.
 */
export function layoutFast(g: IGraph): ILayout {
  const index = new Map(g.nodes.map((n, i) => [n.id, i]));
  const preds: number[][] = g.nodes.map(() => []);
  const succs: number[][] = g.nodes.map(() => []);
  for (const e of g.edges) {
    const a = index.get(e.from);
    const b = index.get(e.to);
    if (a !== undefined && b !== undefined && a !== b) {
      preds[b].push(a);
      succs[a].push(b);
    }
  }
  // Longest path from the sources (Kahn's order; a cycle, which a DAG cannot have, is cut).
  const indeg = preds.map(p => p.length);
  const rank = new Array(g.nodes.length).fill(0);
  const queue = indeg.flatMap((d, i) => (d === 0 ? [i] : []));
  const seen = new Array(g.nodes.length).fill(false);
  for (let qi = 0; qi < queue.length; qi++) {
    const v = queue[qi];
    seen[v] = true;
    for (const w of succs[v]) {
      rank[w] = Math.max(rank[w], rank[v] + 1);
      if (--indeg[w] === 0) {
        queue.push(w);
      }
    }
  }
  g.nodes.forEach((_, i) => {
    if (!seen[i]) {
      rank[i] = Math.max(0, ...preds[i].filter(p => seen[p]).map(p => rank[p] + 1));
    }
  });
  const rows: number[][] = [];
  g.nodes.forEach((_, i) => (rows[rank[i]] ??= []).push(i));
  const pos = new Array(g.nodes.length).fill(0);
  const renumber = () => rows.forEach(r => r?.forEach((v, k) => (pos[v] = k)));
  renumber();
  const bary = (v: number, nbrs: number[]) => (nbrs.length ? nbrs.reduce((s, u) => s + pos[u], 0) / nbrs.length : pos[v]);
  for (let sweep = 0; sweep < 4; sweep++) {
    const down = sweep % 2 === 0;
    const order = down ? rows : [...rows].reverse();
    for (const r of order) {
      if (!r) {
        continue;
      }
      const key = new Map(r.map(v => [v, bary(v, down ? preds[v] : succs[v])]));
      r.sort((a, b) => key.get(a)! - key.get(b)! || pos[a] - pos[b]);
      r.forEach((v, k) => (pos[v] = k));
    }
  }
  renumber();
  const widthOf = (r: number[]) => r.reduce((s, v) => s + g.nodes[v].width, 0) + NODESEP * Math.max(0, r.length - 1);
  const maxW = Math.max(0, ...rows.map(r => (r ? widthOf(r) : 0)));
  const xs = new Array(g.nodes.length).fill(0);
  const ys = new Array(g.nodes.length).fill(0);
  let y = MARGIN;
  for (const r of rows) {
    if (!r) {
      continue;
    }
    const h = Math.max(...r.map(v => g.nodes[v].height));
    let x = MARGIN + (maxW - widthOf(r)) / 2;
    for (const v of r) {
      xs[v] = x + g.nodes[v].width / 2;
      ys[v] = y + h / 2;
      x += g.nodes[v].width + NODESEP;
    }
    y += h + RANKSEP;
  }
  const nodes = g.nodes.map((n, i) => ({ ...n, x: xs[i], y: ys[i] }));
  const edges = g.edges.map(e => {
    const a = index.get(e.from)!;
    const b = index.get(e.to)!;
    return {
      ...e,
      points: [
        { x: xs[a], y: ys[a] + g.nodes[a].height / 2 },
        { x: xs[b], y: ys[b] - g.nodes[b].height / 2 }
      ]
    };
  });
  return { nodes, edges, width: maxW + 2 * MARGIN, height: Math.max(y - RANKSEP + MARGIN, 2 * MARGIN) };
}
