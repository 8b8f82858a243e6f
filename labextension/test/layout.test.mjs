// Unit tests of the pure layout module (src/layout.ts), run with `node --test`
// (tests/unit/test_layout.py runs this from pytest). esbuild bundles the
// TypeScript with dagre into one ESM file first: no browser, no JupyterLab.
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { build } from 'esbuild';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = path.dirname(path.dirname(fileURLToPath(import.meta.url)));
let L;

before(async () => {
  const out = path.join(root, 'build', 'test', 'layout.mjs');
  await build({
    entryPoints: [path.join(root, 'src', 'layout.ts')],
    bundle: true,
    format: 'esm',
    platform: 'node',
    outfile: out,
    logLevel: 'warning'
  });
  L = await import(pathToFileURL(out).href + `?t=${Date.now()}`);
});

const h = n => n.toString(16).padStart(64, '0');
function job(id, seq, { ins = [], outs = [], deps = [], ...extra } = {}) {
  return {
    id, ref: `@${seq}`, seq, kind: 'cell', status: 'ok', exit_code: 0, capture_level: 'complete',
    command: '', source: `x = ${seq}`, label: `@${seq} x = ${seq}`, stale: null, superseded: false,
    inputs: ins.map(([p, k]) => ({ path: p, hash: h(k), size: 1, changed: false, note: null })),
    outputs: outs.map(([p, k]) => ({ path: p, hash: h(k), size: 1, changed: false, note: null })),
    depends_on: deps, ...extra
  };
}

const chain = {
  project: '/p',
  jobs: [
    job('a', 1, { ins: [['/p/raw.csv', 9]], outs: [['/p/iris.csv', 1]] }),
    job('b', 2, { ins: [['/p/iris.csv', 1]], outs: [['/p/f.parquet', 2], ['/p/g.parquet', 3]], deps: ['a'], stale: '/p/iris.csv rewritten by @9' }),
    job('c', 3, { ins: [['/p/f.parquet', 2], ['/p/g.parquet', 3]], outs: [['/p/m.json', 4]], deps: ['b'], status: 'failed', exit_code: 1, capture_level: 'partial' })
  ]
};

test('jobs become nodes; artifacts become labelled producer->consumer edges', () => {
  const g = L.buildGraph(chain, { artifactsAsNodes: false });
  assert.deepEqual(g.nodes.map(n => n.id), ['a', 'b', 'c']);
  assert.deepEqual(g.edges.map(e => [e.from, e.to, e.label]), [['a', 'b', 'iris.csv'], ['b', 'c', 'f.parquet, g.parquet']]);
  assert.deepEqual(g.edges[1].hashes, [h(2), h(3)]);
});

test('stale, failed and capture level are carried to the nodes', () => {
  const [a, b, c] = L.buildGraph(chain, { artifactsAsNodes: false }).nodes;
  assert.equal(a.stale, false);
  assert.equal(b.stale, true);
  assert.match(b.sub, /stale/);
  assert.equal(c.status, 'failed');
  assert.match(c.sub, /failed \(1\)/);
  assert.match(c.sub, /partial/);
  assert.equal(c.capture, 'partial');
});

test('across sessions the second line says whose @N it is', () => {
  const two = { project: '/p', jobs: [job('a', 1, { session: 's1', notebook: '/p/nb.ipynb', notebook_path: 'nb.ipynb' }), job('b', 1, { session: 's2222222', kind: 'run' })] };
  const [a, b] = L.buildGraph(two, { artifactsAsNodes: false }).nodes;
  assert.match(a.sub, /nb\.ipynb/);
  assert.match(b.sub, /session s22222/);
  assert.doesNotMatch(L.buildGraph(chain, { artifactsAsNodes: false }).nodes[0].sub, /session/);
});

test('artifacts as nodes: inputs nobody here wrote are external sources', () => {
  const g = L.buildGraph(chain, { artifactsAsNodes: true });
  const arts = g.nodes.filter(n => n.kind === 'artifact');
  assert.deepEqual(arts.map(n => n.label).sort(), ['f.parquet', 'g.parquet', 'iris.csv', 'm.json', 'raw.csv']);
  assert.equal(arts.find(n => n.label === 'raw.csv').external, true);
  assert.equal(arts.find(n => n.label === 'iris.csv').external, false);
  const e = new Set(g.edges.map(x => `${x.from}>${x.to}`));
  for (const want of [`a>a:${h(1)}`, `a:${h(1)}>b`, `a:${h(9)}>a`, `c>a:${h(4)}`]) assert.ok(e.has(want), want);
  assert.equal(g.edges.length, 8);
});

test('labels are kept verbatim (the view renders them as text) and shortened', () => {
  const evil = { project: '/p', jobs: [job('x', 1, { label: '@1 <script>alert(1)</script>' }), job('y', 2, { label: '@2 ' + 'z'.repeat(200) })] };
  const [x, y] = L.buildGraph(evil, { artifactsAsNodes: false }).nodes;
  assert.equal(x.label, '@1 <script>alert(1)</script>');
  assert.equal(y.label.length, 44);
  assert.ok(y.label.endsWith('\u2026'));
});

function checkLayout(g, lay) {
  const at = new Map(lay.nodes.map(n => [n.id, n]));
  for (const e of lay.edges) {
    assert.ok(at.get(e.from).y < at.get(e.to).y, `${e.from} above ${e.to}`);
    assert.ok(e.points.length >= 2);
  }
  for (const p of lay.nodes) {
    for (const q of lay.nodes) {
      if (p !== q) {
        const apart = Math.abs(p.x - q.x) * 2 >= p.width + q.width || Math.abs(p.y - q.y) * 2 >= p.height + q.height;
        assert.ok(apart, `${p.id} overlaps ${q.id}`);
      }
    }
  }
  assert.ok(lay.width > 0 && lay.height > 0);
  assert.ok(lay.nodes.every(n => n.x - n.width / 2 >= 0 && n.x + n.width / 2 <= lay.width + 0.5 && n.y + n.height / 2 <= lay.height + 0.5));
}

for (const [name, fn] of [['dagre', 'layoutDagre'], ['fast', 'layoutFast']]) {
  test(`${name} layout: top to bottom, no overlaps, inside its box, deterministic`, () => {
    for (const opts of [{ artifactsAsNodes: true }, { artifactsAsNodes: false }]) {
      const g = L.buildGraph(chain, opts);
      const lay = L[fn](g);
      checkLayout(g, lay);
      assert.deepEqual(L[fn](g), lay);
    }
  });
}

test('graph signature changes iff the drawing does', () => {
  const g = L.buildGraph(chain, { artifactsAsNodes: true });
  assert.equal(L.graphSignature(g), L.graphSignature(L.buildGraph(chain, { artifactsAsNodes: true })));
  assert.notEqual(L.graphSignature(g), L.graphSignature(L.buildGraph(chain, { artifactsAsNodes: false })));
});

test('a 500-job DAG lays out with the fast layout (timing printed, not asserted)', () => {
  const jobs = [];
  for (let i = 0; i < 500; i++) {
    const deps = i === 0 ? [] : [Math.floor(i / 2), Math.max(0, i - 7)].filter((d, k, a) => a.indexOf(d) === k && d < i);
    jobs.push(job(`j${i}`, i + 1, {
      ins: deps.map(d => [`/p/o${d}`, d + 1]),
      outs: [[`/p/o${i}`, i + 1]],
      deps: deps.map(d => `j${d}`)
    }));
  }
  const t0 = performance.now();
  const g = L.buildGraph({ project: '/p', jobs }, { artifactsAsNodes: false });
  const lay = L.layoutGraph(g);
  const ms = performance.now() - t0;
  assert.ok(g.nodes.length > L.DAGRE_MAX_NODES);
  checkLayout(g, lay);
  assert.equal(lay.nodes.length, 500);
  assert.equal(lay.edges.length, g.edges.length);
  assert.ok(lay.nodes.every(n => Number.isFinite(n.x) && Number.isFinite(n.y)));
  console.log(`# 500 jobs, ${g.edges.length} edges: layout ${ms.toFixed(0)} ms (in a Web Worker in the panel)`);
});

// A driver cell (@1) that read shards.txt and started 6 calls of `featurize` (Ray tasks: its
// children), each writing one part; @8 (a cell) reads every part. Two calls of `score` too.
function rayDoc() {
  const task = (i, step, extra = {}) => job(`t${i}`, i + 1, {
    kind: 'ray_task', parent_job: 'drv', ins: [['/p/shards.txt', 50]], outs: [[`/p/part${i}.bin`, 60 + i]], deps: ['drv'], ...extra,
    step, command: `ray task ${step}`, label: `@${i + 1} ray task ${step}`
  });
  const tasks = [0, 1, 2, 3, 4, 5].map(i => task(i, 'featurize', i === 4 ? { status: 'failed', exit_code: 1 } : {}));
  const score = [6, 7].map(i => task(i, 'score'));
  const reader = job('r', 9, { ins: tasks.map((t, i) => [`/p/part${i}.bin`, 60 + i]), deps: tasks.map(t => t.id) });
  return { project: '/p', jobs: [job('drv', 1, { outs: [['/p/shards.txt', 50]] }), ...tasks, ...score, reader] };
}

test('the many children of one step fold into one group node; its edges are merged', () => {
  const g = L.buildGraph(rayDoc(), { artifactsAsNodes: false });
  const groups = g.nodes.filter(n => n.kind === 'group');
  assert.equal(groups.length, 2, 'six featurize calls fold, and the two score calls');
  const grp = groups.find(n => n.label.endsWith('featurize'));
  assert.equal(grp.id, L.groupKey(rayDoc().jobs[1]));
  assert.equal(grp.label, '6 \u00d7 featurize');
  assert.match(grp.sub, /ray_task · 5 ok · 1 failed/);
  assert.equal(grp.status, 'failed');
  assert.deepEqual(grp.members, ['t0', 't1', 't2', 't3', 't4', 't5']);
  assert.deepEqual(g.nodes.filter(n => n.kind === 'job').map(n => n.id).sort(), ['drv', 'r']);
  // drv -> group once (six shards.txt edges merged), group -> r once, carrying all six parts.
  const e = g.edges.map(x => [x.from, x.to]);
  assert.deepEqual(e.filter(([a, b]) => a === 'drv' && b === grp.id).length, 1);
  const out = g.edges.find(x => x.from === grp.id && x.to === 'r');
  assert.equal(out.hashes.length, 6);
  assert.equal(out.label, '6 files');
  assert.ok(!g.edges.some(x => x.from === x.to), 'no edge from the group to itself');
});

test('an unfolded group, and a group smaller than FOLD_AT, show their jobs one by one', () => {
  const doc = rayDoc();
  const keys = [L.groupKey(doc.jobs[1]), L.groupKey(doc.jobs[7])];
  const g = L.buildGraph(doc, { artifactsAsNodes: false, expandedGroups: keys });
  assert.equal(g.nodes.filter(n => n.kind === 'group').length, 0);
  assert.equal(g.nodes.length, doc.jobs.length);
  assert.equal(L.buildGraph(doc, { artifactsAsNodes: false, expandedGroups: [keys[0]] }).nodes.filter(n => n.kind === 'group').length, 1);
  assert.equal(L.buildGraph(doc, { artifactsAsNodes: false, foldAt: 3 }).nodes.filter(n => n.kind === 'group').length, 1);
  assert.equal(L.buildGraph(doc, { artifactsAsNodes: false, foldAt: 7 }).nodes.filter(n => n.kind === 'group').length, 0);
  assert.notEqual(L.graphSignature(g), L.graphSignature(L.buildGraph(doc, { artifactsAsNodes: false })));
});

test('with artifacts as nodes a group links to each artifact once and lays out', () => {
  const g = L.buildGraph(rayDoc(), { artifactsAsNodes: true });
  const grp = g.nodes.find(n => n.kind === 'group' && n.label.endsWith('featurize'));
  const shards = `a:${h(50)}`;
  assert.equal(g.edges.filter(x => x.from === shards && x.to === grp.id).length, 1);
  assert.equal(g.edges.filter(x => x.from === grp.id).length, 6, 'one edge to each part');
  const placed = L.layoutGraph(g);
  assert.ok(placed.nodes.find(n => n.id === grp.id).y > placed.nodes.find(n => n.id === shards).y);
});

test('only Ray tasks fold: jobs without a parent, and other children of one step, stay jobs', () => {
  const doc = { project: '/p', jobs: [1, 2, 3, 4, 5].map(i => job(`c${i}`, i, { step: 'same' })) };
  assert.equal(L.buildGraph(doc, { artifactsAsNodes: false }).nodes.filter(n => n.kind === 'group').length, 0);
  const runs = { project: '/p', jobs: [1, 2, 3, 4, 5].map(i => job(`r${i}`, i, { step: 'same', kind: 'run', parent_job: 'p0' })) };
  assert.equal(L.buildGraph(runs, { artifactsAsNodes: false }).nodes.filter(n => n.kind === 'group').length, 0);
});

test('an empty DAG (a session with no jobs yet) lays out with a finite size', () => {
  // dagre alone reports -Infinity, which the panel turned into translate(Infinity, Infinity).
  for (const lay of [L.layoutGraph({ nodes: [], edges: [] }), L.layoutDagre({ nodes: [], edges: [] }), L.layoutFast({ nodes: [], edges: [] })]) {
    assert.ok(Number.isFinite(lay.width) && Number.isFinite(lay.height) && lay.width >= 0 && lay.height >= 0, `${lay.width} x ${lay.height}`);
    assert.equal(lay.nodes.length, 0);
  }
});
