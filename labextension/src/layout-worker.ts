/**
 * The Web Worker entry: lays out graphs off the main thread so a 500-job DAG
 * never freezes JupyterLab. It owns message handling only; the layout itself is
 * layout.ts. Bundled into a string by scripts/build-worker.mjs.
 */
import { layoutGraph, type IGraph } from './layout';

const ctx = self as unknown as {
  onmessage: ((ev: { data: { id: number; graph: IGraph } }) => void) | null;
  postMessage: (msg: unknown) => void;
};

ctx.onmessage = ev => {
  const { id, graph } = ev.data;
  try {
    ctx.postMessage({ id, layout: layoutGraph(graph) });
  } catch (err) {
    ctx.postMessage({ id, error: String(err) });
  }
};
