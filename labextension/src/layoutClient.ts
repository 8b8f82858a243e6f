/**
 * Runs layout.ts in a Blob Web Worker (source bundled at build time), falling back
 * to the main thread if workers are unavailable. Only the latest request matters:
 * an older result that arrives late is dropped.
 */
import { layoutGraph, type IGraph, type ILayout } from './layout';
import { WORKER_SOURCE } from './_workerSource';

export class LayoutClient {
  private worker: Worker | null = null;
  private seq = 0;
  private pending = new Map<number, (r: { layout?: ILayout; error?: string }) => void>();

  constructor() {
    try {
      const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: 'text/javascript' }));
      this.worker = new Worker(url);
      URL.revokeObjectURL(url);
      this.worker.onmessage = ev => {
        const cb = this.pending.get(ev.data.id);
        this.pending.delete(ev.data.id);
        cb?.(ev.data);
      };
      this.worker.onerror = () => this.fallBack();
    } catch {
      this.worker = null; // CSP or an old browser: lay out on the main thread
    }
  }

  /** Where layouts run: 'worker', or 'main' after a fallback (shown to tests as data-layout-mode). */
  get mode(): 'worker' | 'main' {
    return this.worker ? 'worker' : 'main';
  }

  /** Lays out `graph`; resolves null when a newer request superseded this one. */
  layout(graph: IGraph): Promise<ILayout | null> {
    const id = ++this.seq;
    if (!this.worker) {
      return Promise.resolve(layoutGraph(graph));
    }
    return new Promise((resolve, reject) => {
      this.pending.set(id, r => {
        if (id !== this.seq) {
          resolve(null);
        } else if (r.error) {
          reject(new Error(r.error));
        } else {
          resolve(r.layout!);
        }
      });
      this.worker!.postMessage({ id, graph });
    });
  }

  private fallBack(): void {
    this.worker?.terminate();
    this.worker = null;
    for (const [, cb] of this.pending) {
      cb({ error: 'layout worker failed' });
    }
    this.pending.clear();
  }

  dispose(): void {
    this.worker?.terminate();
    this.worker = null;
  }
}
