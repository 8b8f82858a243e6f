/**
 * The Lineage sidebar widget: toolbar, SVG DAG, details pane, live polling.
 *
 * It owns the view and its state (scope, selection, pan/zoom) and the polling
 * loop: every second it asks /roar/api/changes for a token and fetches the DAG
 * only when the token moved. Positions come from layout.ts via LayoutClient.
 *
 * What it must not do: put any string from the database into innerHTML (every
 * label, path, command and source goes through textContent or an attribute),
 * pop up dialogs for expected conditions (no project, no session: a hint in
 * the panel), or know how the notebook is scrolled (a callback does that).
 */
import { Widget } from '@lumino/widgets';

import { requestAPI } from './api';
import { basename, buildGraph, graphSignature, groupKey, shorten, type ILayout, type IPlacedEdge, type IPlacedNode } from './layout';
import { LayoutClient } from './layoutClient';
import type { IArtifactDoc, IChangesDoc, IDagDoc, IJobJson, ISessionsDoc } from './model';

const SVG_NS = 'http://www.w3.org/2000/svg';
const POLL_MS = 1000;

export interface ILineagePanelOptions {
  /** Path (relative to the server root) of the notebook in focus, or null. */
  currentNotebook: () => string | null;
  /** Called when a job is clicked: scroll the notebook to its cell if it is open. */
  onJobSelected: (job: IJobJson) => void;
}

/** Create an element with a class and, optionally, text (always textContent). */
function el<K extends keyof HTMLElementTagNameMap>(tag: K, cls?: string, text?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (cls) {
    e.className = cls;
  }
  if (text !== undefined) {
    e.textContent = text;
  }
  return e;
}

function svg<K extends keyof SVGElementTagNameMap>(tag: K, attrs: Record<string, string | number> = {}): SVGElementTagNameMap[K] {
  const e = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) {
    e.setAttribute(k, String(v));
  }
  return e;
}

function fmtDuration(s: number): string {
  if (s < 1) {
    return `${Math.round(s * 1000)} ms`;
  }
  if (s < 120) {
    return `${s.toFixed(2)} s`;
  }
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

function fmtSize(n: number | null): string {
  if (n === null || n === undefined) {
    return '?';
  }
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return i === 0 ? `${n} B` : `${v.toFixed(1)} ${units[i]}`;
}

export class LineagePanel extends Widget {
  private opts: ILineagePanelOptions;
  private layouter = new LayoutClient();
  private scopeSel: HTMLSelectElement;
  private artToggle: HTMLInputElement;
  private statusEl: HTMLElement;
  private summaryEl: HTMLElement;
  private hintEl: HTMLElement;
  private canvas: HTMLElement;
  private svgEl: SVGSVGElement;
  private viewport: SVGGElement;
  private details: HTMLElement;

  private scope = ''; // '' = the focused notebook's session, 'all', or a session id
  private notebookPath: string | null = null;
  private lastToken: string | null = null;
  private forceRefresh = true;
  private doc: IDagDoc | null = null;
  private jobsById = new Map<string, IJobJson>();
  private signature = '';
  private layoutResult: ILayout | null = null;
  private selected: string | null = null;
  private expanded = new Set<string>(); // groups of sibling jobs the user unfolded (layout.groupKey)
  private view = { k: 1, tx: 0, ty: 0 };
  private fitPending = true;
  private userMoved = false; // panned or zoomed since the last fit: keep the user's view
  private timer: number | null = null;
  private busy = false;

  constructor(opts: ILineagePanelOptions) {
    super();
    this.opts = opts;
    this.id = 'roar-lineage-panel';
    this.addClass('roar-panel');
    this.title.caption = 'Lineage (roar)';

    const bar = el('div', 'roar-toolbar');
    this.scopeSel = el('select', 'roar-scope');
    this.scopeSel.title = 'Which jobs to show';
    this.scopeSel.addEventListener('change', () => {
      this.scope = this.scopeSel.value;
      this.fitPending = true;
      this.poke();
    });
    const lab = el('label', 'roar-toggle');
    this.artToggle = el('input');
    this.artToggle.type = 'checkbox';
    this.artToggle.className = 'roar-artifacts-toggle';
    this.artToggle.addEventListener('change', () => {
      this.fitPending = true;
      this.signature = '';
      void this.redraw();
    });
    lab.append(this.artToggle, document.createTextNode(' artifacts as nodes'));
    const fit = el('button', 'roar-fit jp-Button', 'Fit');
    fit.title = 'Fit the DAG to the panel';
    fit.addEventListener('click', () => this.fitView());
    this.statusEl = el('span', 'roar-status');
    bar.append(this.scopeSel, lab, fit, this.statusEl);

    this.summaryEl = el('div', 'roar-summary');
    this.hintEl = el('div', 'roar-hint');
    this.hintEl.hidden = true;

    this.canvas = el('div', 'roar-canvas');
    this.svgEl = svg('svg', { class: 'roar-svg', width: '100%', height: '100%' });
    const defs = svg('defs');
    const marker = svg('marker', {
      id: 'roar-arrow', viewBox: '0 0 10 10', refX: 10, refY: 5, markerWidth: 7, markerHeight: 7, orient: 'auto-start-reverse'
    });
    marker.appendChild(svg('path', { d: 'M 0 0 L 10 5 L 0 10 z', class: 'roar-arrowhead' }));
    defs.appendChild(marker);
    this.viewport = svg('g', { class: 'roar-viewport' });
    this.svgEl.append(defs, this.viewport);
    this.canvas.appendChild(this.svgEl);
    this.installPanZoom();

    this.details = el('div', 'roar-details');
    this.details.appendChild(el('div', 'roar-details-empty', 'Click a job or an artifact for details.'));

    this.node.append(bar, this.summaryEl, this.hintEl, this.canvas, this.details);
    this.schedule(0);
  }

  /** The focused notebook changed: show its session (unless another scope is chosen). */
  setNotebook(path: string | null): void {
    if (path !== this.notebookPath) {
      this.notebookPath = path;
      if (this.scope === '') {
        this.fitPending = true;
      }
      this.poke();
    }
  }

  dispose(): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    this.layouter.dispose();
    super.dispose();
  }

  protected onAfterShow(): void {
    this.poke();
  }

  // -- polling ------------------------------------------------------------------------
  private poke(): void {
    this.forceRefresh = true;
    this.schedule(0);
  }

  private schedule(ms: number): void {
    if (this.timer !== null) {
      window.clearTimeout(this.timer);
    }
    this.timer = window.setTimeout(() => void this.tick(), ms);
  }

  private async tick(): Promise<void> {
    this.timer = null;
    if (this.isDisposed) {
      return;
    }
    if (this.busy) {
      this.schedule(POLL_MS);
      return;
    }
    this.busy = true;
    try {
      if (this.isVisible || this.forceRefresh) {
        const path = this.opts.currentNotebook() ?? this.notebookPath;
        this.notebookPath = path;
        const c = await requestAPI<IChangesDoc>('changes', { path });
        if (!c.project) {
          this.showNoProject(c.hint ?? 'No roar project.');
        } else if (this.forceRefresh || c.token !== this.lastToken) {
          this.forceRefresh = false;
          await this.refresh(path);
        }
        this.setStatus('live', '');
      }
    } catch (err) {
      this.setStatus('offline', `roar: ${(err as Error).message}`);
    } finally {
      this.busy = false;
      if (!this.isDisposed && this.timer === null) {
        this.schedule(POLL_MS);
      }
    }
  }

  private setStatus(state: string, message: string): void {
    this.statusEl.textContent = state === 'live' ? '\u25cf live' : '\u25cb offline';
    this.statusEl.title = message || 'Updates every second while the panel is visible';
    this.statusEl.dataset.state = state;
    if (message) {
      this.summaryEl.textContent = message;
    }
  }

  private showNoProject(hint: string): void {
    this.lastToken = null;
    this.doc = null;
    this.jobsById.clear();
    this.hintEl.hidden = false;
    this.hintEl.textContent = hint;
    this.summaryEl.textContent = '';
    this.scopeSel.replaceChildren();
    this.signature = '';
    this.viewport.replaceChildren();
    this.setState('empty');
  }

  /** For tests and CSS: 'empty' (no jobs or no project) or 'ready'. */
  private setState(v: string): void {
    this.node.dataset.roarState = v;
  }

  private async refresh(path: string | null): Promise<void> {
    const [sessions, doc] = await Promise.all([
      requestAPI<ISessionsDoc>('sessions', { path }),
      requestAPI<IDagDoc>('dag', { path, session: this.scope || null })
    ]);
    if (!doc.project) {
      this.showNoProject(doc.hint ?? 'No roar project.');
      return;
    }
    this.lastToken = doc.token ?? null;
    this.fillScopes(sessions, path);
    this.doc = doc;
    this.jobsById = new Map((doc.jobs ?? []).map(j => [j.id, j]));
    this.hintEl.hidden = !doc.hint;
    this.hintEl.textContent = doc.hint ?? '';
    this.renderSummary(doc);
    await this.redraw();
    // A selected job may have been re-recorded (new data); refresh its details.
    if (this.selected && this.jobsById.has(this.selected)) {
      this.showJob(this.jobsById.get(this.selected)!, false);
    }
    this.setState(doc.jobs && doc.jobs.length ? 'ready' : 'empty');
  }

  private fillScopes(s: ISessionsDoc, path: string | null): void {
    const opts: [string, string][] = [
      ['', path ? `This notebook (${basename(path)})` : 'Default session (as roar dag)'],
      ['all', 'Whole project']
    ];
    for (const x of [...(s.sessions ?? [])].reverse()) {
      const when = new Date(x.created_at * 1000).toLocaleString();
      const name = x.notebook_path ?? x.name ?? (x.kind === 'cli' ? 'CLI session' : x.kind);
      const mark = x.id === s.current ? ' (this notebook)' : x.id === s.active ? ' (default, as roar dag)' : '';
      opts.push([x.id, `${shorten(name, 30)}${mark} \u00b7 ${x.jobs} jobs \u00b7 ${when}`]);
    }
    const key = JSON.stringify(opts);
    if (this.scopeSel.dataset.key !== key) {
      this.scopeSel.replaceChildren(
        ...opts.map(([v, t]) => {
          const o = el('option', undefined, t);
          o.value = v;
          return o;
        })
      );
      this.scopeSel.dataset.key = key;
    }
    if (!Array.from(this.scopeSel.options).some(o => o.value === this.scope)) {
      this.scope = '';
    }
    this.scopeSel.value = this.scope;
  }

  private renderSummary(doc: IDagDoc): void {
    const jobs = doc.jobs ?? [];
    const count = (f: (j: IJobJson) => boolean) => jobs.filter(f).length;
    const levels = new Map<string, number>();
    for (const j of jobs) {
      levels.set(j.capture_level, (levels.get(j.capture_level) ?? 0) + 1);
    }
    const capture = [...levels].map(([k, n]) => `${k} ${n}`).join(', ') || 'n/a';
    const parts = [`${jobs.length} job${jobs.length === 1 ? '' : 's'}`, `capture: ${capture}`];
    const stale = count(j => !!j.stale);
    const failed = count(j => j.status === 'failed');
    if (stale) {
      parts.push(`${stale} stale`);
    }
    if (failed) {
      parts.push(`${failed} failed`);
    }
    if (doc.dag_hash) {
      parts.push(`DAG ${doc.dag_hash.slice(0, 8)}`);
    }
    this.summaryEl.textContent = parts.join(' \u00b7 ');
    this.summaryEl.dataset.capture = [...levels.keys()].join(' ');
  }

  // -- drawing ------------------------------------------------------------------------
  private async redraw(): Promise<void> {
    const doc = this.doc;
    if (!doc) {
      return;
    }
    const graph = buildGraph(doc, { artifactsAsNodes: this.artToggle.checked, expandedGroups: [...this.expanded] });
    const sig = graphSignature(graph);
    if (sig === this.signature && this.layoutResult) {
      return; // same drawing: keep positions, pan and zoom
    }
    const started = performance.now();
    const layout = await this.layouter.layout(graph);
    if (!layout || this.isDisposed) {
      return; // superseded by a newer request
    }
    this.signature = sig;
    this.layoutResult = layout;
    this.draw(layout);
    this.node.dataset.layoutMs = String(Math.round(performance.now() - started));
    this.node.dataset.layoutMode = this.layouter.mode;
    if (this.fitPending || !this.userMoved) {
      this.fitPending = false;
      this.fitView();
    }
  }

  private draw(layout: ILayout): void {
    const edges = svg('g', { class: 'roar-edges' });
    const nodes = svg('g', { class: 'roar-nodes' });
    for (const e of layout.edges) {
      edges.appendChild(this.drawEdge(e));
    }
    for (const n of layout.nodes) {
      nodes.appendChild(this.drawNode(n));
    }
    this.viewport.replaceChildren(edges, nodes);
    this.markSelected();
  }

  private drawEdge(e: IPlacedEdge): SVGGElement {
    const g = svg('g', { class: 'roar-edge-group' });
    const d = e.points.map((p, i) => `${i ? 'L' : 'M'} ${p.x.toFixed(1)} ${p.y.toFixed(1)}`).join(' ');
    const path = svg('path', { d, class: 'roar-edge', 'marker-end': 'url(#roar-arrow)' });
    path.dataset.from = e.from;
    path.dataset.to = e.to;
    path.dataset.hashes = e.hashes.join(' ');
    g.appendChild(path);
    if (e.label && e.points.length) {
      const mid = e.points[Math.floor(e.points.length / 2)];
      const t = svg('text', { x: mid.x, y: mid.y - 4, class: 'roar-edge-label', 'text-anchor': 'middle' });
      t.textContent = e.label;
      t.dataset.hash = e.hashes[0] ?? '';
      t.addEventListener('click', ev => {
        ev.stopPropagation();
        if (e.hashes[0]) {
          void this.showArtifact(e.hashes[0]);
        }
      });
      g.appendChild(t);
    }
    return g;
  }

  private drawNode(n: IPlacedNode): SVGGElement {
    const cls = ['roar-node', `roar-${n.kind}`];
    if (n.status === 'failed') {
      cls.push('roar-failed');
    }
    if (n.stale) {
      cls.push('roar-stale');
    }
    if ((n.kind === 'job' || n.kind === 'group') && n.capture !== 'complete') {
      cls.push('roar-capture-incomplete');
    }
    if (n.external) {
      cls.push('roar-external');
    }
    const g = svg('g', { class: cls.join(' '), transform: `translate(${n.x - n.width / 2},${n.y - n.height / 2})` });
    g.dataset.id = n.id;
    g.dataset.kind = n.kind;
    if (n.kind === 'job') {
      const j = this.jobsById.get(n.id);
      g.dataset.ref = j?.ref ?? '';
      g.dataset.status = n.status ?? '';
      g.dataset.capture = n.capture ?? '';
    } else if (n.kind === 'group') {
      g.dataset.members = String(n.members?.length ?? 0);
      g.dataset.status = n.status ?? '';
    } else {
      g.dataset.hash = n.id.slice(2);
    }
    const title = svg('title');
    const j = this.jobsById.get(n.id);
    title.textContent = j
      ? `${n.label}\n${n.sub}${j.stale ? `\nstale: ${j.stale}` : ''}`
      : n.kind === 'group'
        ? `${n.label}\n${n.sub}\nclick: the jobs of this group`
        : `${n.label}\n${n.id.slice(2)}`;
    const boxy = n.kind !== 'artifact';
    g.appendChild(title);
    if (n.kind === 'group') {
      // A stack: the group's box drawn over two offset copies.
      for (const off of [6, 3]) {
        g.appendChild(svg('rect', { x: off, y: -off, width: n.width, height: n.height, rx: 5, class: 'roar-box roar-stack' }));
      }
    }
    const rect = svg('rect', { width: n.width, height: n.height, rx: boxy ? 5 : 14, class: 'roar-box' });
    const label = svg('text', { x: 10, y: boxy ? 16 : 14, class: 'roar-label' });
    label.textContent = n.label;
    const sub = svg('text', { x: 10, y: boxy ? 31 : 27, class: 'roar-sub' });
    sub.textContent = n.sub;
    g.append(rect, label, sub);
    g.addEventListener('click', ev => {
      ev.stopPropagation();
      if (n.kind === 'job' && j) {
        this.showJob(j, true);
      } else if (n.kind === 'group') {
        this.showGroup(n);
      } else if (n.kind === 'artifact') {
        void this.showArtifact(n.id.slice(2));
      }
    });
    return g;
  }

  private markSelected(): void {
    this.viewport.querySelectorAll('.roar-selected').forEach(x => x.classList.remove('roar-selected'));
    if (this.selected) {
      const key = this.selected;
      this.viewport.querySelectorAll<SVGGElement>('.roar-node').forEach(g => {
        if (g.dataset.id === key) {
          g.classList.add('roar-selected');
        }
      });
    }
  }

  // -- pan / zoom -----------------------------------------------------------------------
  private applyView(): void {
    const { k, tx, ty } = this.view;
    this.viewport.setAttribute('transform', `translate(${tx.toFixed(1)},${ty.toFixed(1)}) scale(${k.toFixed(4)})`);
  }

  private fitView(): void {
    const L = this.layoutResult;
    const W = this.canvas.clientWidth || 300;
    const H = this.canvas.clientHeight || 300;
    if (!L || !(L.width > 0) || !(L.height > 0) || !Number.isFinite(L.width) || !Number.isFinite(L.height)) {
      this.view = { k: 1, tx: 0, ty: 0 };
    } else {
      const k = Math.max(0.05, Math.min(W / L.width, H / L.height, 1.25));
      this.view = { k, tx: (W - L.width * k) / 2, ty: (H - L.height * k) / 2 };
    }
    this.userMoved = false;
    this.applyView();
  }

  private installPanZoom(): void {
    this.svgEl.addEventListener(
      'wheel',
      ev => {
        ev.preventDefault();
        const r = this.svgEl.getBoundingClientRect();
        const px = ev.clientX - r.left;
        const py = ev.clientY - r.top;
        const f = Math.exp(-ev.deltaY * 0.0015);
        const k = Math.max(0.05, Math.min(4, this.view.k * f));
        const s = k / this.view.k;
        this.view = { k, tx: px - (px - this.view.tx) * s, ty: py - (py - this.view.ty) * s };
        this.userMoved = true;
        this.applyView();
      },
      { passive: false }
    );
    let drag: { x: number; y: number; tx: number; ty: number } | null = null;
    this.svgEl.addEventListener('pointerdown', ev => {
      if ((ev.target as Element).closest('.roar-node, .roar-edge-label')) {
        return;
      }
      drag = { x: ev.clientX, y: ev.clientY, tx: this.view.tx, ty: this.view.ty };
      this.svgEl.setPointerCapture(ev.pointerId);
    });
    this.svgEl.addEventListener('pointermove', ev => {
      if (drag) {
        this.view = { ...this.view, tx: drag.tx + ev.clientX - drag.x, ty: drag.ty + ev.clientY - drag.y };
        this.userMoved = true;
        this.applyView();
      }
    });
    const end = () => (drag = null);
    this.svgEl.addEventListener('pointerup', end);
    this.svgEl.addEventListener('pointercancel', end);
  }

  // -- details ------------------------------------------------------------------------
  private section(title: string): HTMLElement {
    const s = el('div', 'roar-section');
    s.appendChild(el('div', 'roar-section-title', title));
    return s;
  }

  private kv(rows: [string, string, string?][]): HTMLTableElement {
    const t = el('table', 'roar-kv');
    for (const [k, v, cls] of rows) {
      const tr = el('tr');
      const td = el('td', cls, v);
      td.dataset.key = k;
      tr.append(el('th', undefined, k), td);
      t.appendChild(tr);
    }
    return t;
  }

  private hashLink(hash: string | null): HTMLElement {
    if (!hash) {
      return el('span', 'roar-hash roar-hash-missing', 'unreadable');
    }
    const a = el('button', 'roar-hash', hash.slice(0, 8));
    a.title = `${hash}\nclick: producer and consumers`;
    a.dataset.hash = hash;
    a.addEventListener('click', () => void this.showArtifact(hash));
    return a;
  }

  private ioList(title: string, edges: IJobJson['inputs'], cls: string): HTMLElement {
    const s = this.section(`${title} (${edges.length})`);
    const ul = el('ul', `roar-io ${cls}`);
    for (const e of edges) {
      const li = el('li');
      const p = el('span', 'roar-path', basename(e.path) || e.path);
      p.title = e.path;
      li.append(this.hashLink(e.hash), document.createTextNode(' '), p, el('span', 'roar-size', ` ${fmtSize(e.size)}`));
      if (e.changed || e.note) {
        li.appendChild(el('span', 'roar-note', ` (${e.note ?? 'changed while the job ran'})`));
      }
      ul.appendChild(li);
    }
    if (!edges.length) {
      ul.appendChild(el('li', 'roar-none', 'none recorded'));
    }
    s.appendChild(ul);
    return s;
  }

  private showJob(j: IJobJson, fromClick: boolean): void {
    this.selected = j.id;
    this.markSelected();
    const box = el('div', 'roar-job-details');
    box.dataset.id = j.id;
    box.appendChild(el('div', 'roar-details-title', j.label ?? j.ref));
    const rows: [string, string, string?][] = [
      ['status', j.status === 'failed' ? `failed (exit ${j.exit_code})` : `ok (exit ${j.exit_code ?? 0})`, j.status === 'failed' ? 'roar-bad' : undefined],
      ['duration', fmtDuration(j.duration)],
      ['capture', `${j.capture_level} (${j.backend})${j.capture_notes.length ? ': ' + j.capture_notes.join('; ') : ''}`,
        j.capture_level !== 'complete' ? 'roar-warn' : undefined],
      ['kind', j.kind + (j.execution_count !== null && j.execution_count !== undefined ? ` [${j.execution_count}]` : '')],
      ['started', new Date(j.started_at * 1000).toLocaleString()],
      ['job id', j.id.slice(0, 12)]
    ];
    if (j.stale) {
      rows.splice(1, 0, ['stale', j.stale, 'roar-warn']);
    }
    if (j.notebook_path || j.notebook) {
      rows.push(['notebook', j.notebook_path ?? j.notebook ?? '']);
    }
    box.appendChild(this.kv(rows));
    const src = this.section(j.kind === 'cell' ? 'Source' : 'Command');
    src.appendChild(el('pre', 'roar-source', (j.kind === 'cell' && j.source) || j.command));
    box.appendChild(src);
    box.appendChild(this.ioList('Inputs', j.inputs, 'roar-inputs'));
    box.appendChild(this.ioList('Outputs', j.outputs, 'roar-outputs'));
    const key = groupKey(j);
    if (key && this.expanded.has(key)) {
      const siblings = [...this.jobsById.values()].filter(x => groupKey(x) === key).length;
      const act = el('div', 'roar-actions');
      const fold = el('button', 'roar-fold jp-Button', `Fold the ${siblings} jobs of this group`);
      fold.addEventListener('click', () => {
        this.expanded.delete(key);
        this.selected = key;
        this.details.replaceChildren(); // the job is inside the group again: click the group for its jobs
        void this.redraw();
      });
      act.appendChild(fold);
      box.appendChild(act);
    }
    this.details.replaceChildren(box);
    if (fromClick) {
      this.opts.onJobSelected(j);
    }
  }

  /** A folded group: what it stands for, its jobs (each one click away), and a way to unfold it. */
  private showGroup(n: IPlacedNode): void {
    this.selected = n.id;
    this.markSelected();
    const members = (n.members ?? []).map(id => this.jobsById.get(id)).filter((j): j is IJobJson => !!j);
    const box = el('div', 'roar-group-details');
    box.dataset.id = n.id;
    box.appendChild(el('div', 'roar-details-title', n.label));
    const parent = members.length ? this.jobsById.get(members[0].parent_job ?? '') : undefined;
    const rows: [string, string, string?][] = [
      ['jobs', n.sub, n.status === 'failed' ? 'roar-bad' : undefined],
      ['started by', parent ? parent.label ?? parent.ref : (members[0]?.parent_job ?? '').slice(0, 12)]
    ];
    box.appendChild(this.kv(rows));
    const act = el('div', 'roar-actions');
    const unfold = el('button', 'roar-unfold jp-Button', `Show the ${members.length} jobs`);
    unfold.addEventListener('click', () => {
      this.expanded.add(n.id);
      this.selected = null;
      void this.redraw();
    });
    act.appendChild(unfold);
    box.appendChild(act);
    const s = this.section(`Jobs (${members.length})`);
    const ul = el('ul', 'roar-refs roar-members');
    for (const m of members) {
      const li = el('li');
      const b = el('button', 'roar-ref', m.ref);
      b.title = 'show this job';
      b.addEventListener('click', () => this.showJob(m, true));
      const why = m.status !== 'ok' ? ` (${m.status})` : m.capture_level !== 'complete' ? ` (${m.capture_level})` : '';
      li.append(b, document.createTextNode(' '), el('span', 'roar-ref-text', shorten(m.command.split('\n')[0] + why, 60)));
      ul.appendChild(li);
    }
    s.appendChild(ul);
    box.appendChild(s);
    this.details.replaceChildren(box);
  }

  private async showArtifact(hash: string): Promise<void> {
    this.selected = 'a:' + hash;
    this.markSelected();
    let a: IArtifactDoc;
    try {
      a = await requestAPI<IArtifactDoc>(`artifact/${hash}`, { path: this.notebookPath });
    } catch (err) {
      this.details.replaceChildren(el('div', 'roar-error', `roar: ${(err as Error).message}`));
      return;
    }
    const box = el('div', 'roar-artifact-details');
    box.dataset.hash = a.hash;
    const name = a.paths.length ? basename(a.paths[a.paths.length - 1]) : a.hash.slice(0, 12);
    box.appendChild(el('div', 'roar-details-title', name));
    const rows: [string, string, string?][] = [
      ['hash', a.hash.slice(0, 16)],
      ['size', fmtSize(a.size)]
    ];
    for (const [algo, v] of Object.entries(a.digests)) {
      rows.push([algo, v.slice(0, 16)]);
    }
    box.appendChild(this.kv(rows));
    const paths = this.section(`Paths (${a.paths.length})`);
    const pl = el('ul', 'roar-paths');
    for (const p of a.paths) {
      pl.appendChild(el('li', 'roar-path', p));
    }
    paths.appendChild(pl);
    box.appendChild(paths);
    const refs = (title: string, list: IArtifactDoc['producers'], cls: string) => {
      const s = this.section(`${title} (${list.length})`);
      const ul = el('ul', `roar-refs ${cls}`);
      for (const r of list) {
        const li = el('li');
        const known = this.jobsById.get(r.job);
        const b = el('button', 'roar-ref', r.ref);
        b.title = known ? 'show this job' : `job ${r.job.slice(0, 12)} (session ${r.session.slice(0, 8)})`;
        b.disabled = !known;
        b.addEventListener('click', () => known && this.showJob(known, true));
        const first = (known?.label ?? r.command ?? '').split('\n')[0];
        li.append(b, document.createTextNode(' '), el('span', 'roar-ref-text', shorten(known ? first.replace(/^@\S+\s*/, '') : first, 60)));
        ul.appendChild(li);
      }
      if (!list.length) {
        ul.appendChild(el('li', 'roar-none', title === 'Producers' ? 'none recorded (an input from outside)' : 'none'));
      }
      s.appendChild(ul);
      return s;
    };
    box.appendChild(refs('Producers', a.producers, 'roar-producers'));
    box.appendChild(refs('Consumers', a.consumers, 'roar-consumers'));
    const cmd = `roar reproduce ${a.hash}`;
    const act = el('div', 'roar-actions');
    const copy = el('button', 'roar-copy jp-Button', 'Copy `roar reproduce`');
    copy.title = cmd;
    copy.addEventListener('click', async () => {
      copy.textContent = (await copyText(cmd)) ? 'Copied' : 'Select and copy below';
      window.setTimeout(() => (copy.textContent = 'Copy `roar reproduce`'), 1500);
    });
    const code = el('input', 'roar-command');
    code.readOnly = true;
    code.value = cmd;
    code.addEventListener('focus', () => code.select());
    act.append(copy, code);
    box.appendChild(act);
    this.details.replaceChildren(box);
  }
}

async function copyText(text: string): Promise<boolean> {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    // Insecure origins (plain http on another host) have no async clipboard.
    const ta = document.createElement('textarea');
    ta.value = text;
    document.body.appendChild(ta);
    ta.select();
    const ok = document.execCommand('copy');
    ta.remove();
    return ok;
  }
}
