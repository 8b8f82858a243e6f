/**
 * The JupyterLab plugin: puts the Lineage panel in the left sidebar, tells it
 * which notebook is in focus, and scrolls that notebook to a clicked job's cell.
 * It owns the JupyterLab wiring only; the view is panel.ts, the layout layout.ts.
 */
import { ILabShell, JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker, NotebookPanel } from '@jupyterlab/notebook';
import { LabIcon } from '@jupyterlab/ui-components';

import type { IJobJson } from './model';
import { LineagePanel } from './panel';

// A small three-node DAG: the sidebar tab's icon.
const lineageIcon = new LabIcon({
  name: 'roar-nb:lineage',
  svgstr:
    '<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">' +
    '<g class="jp-icon3" fill="#616161"><circle cx="3" cy="3" r="2"/><circle cx="3" cy="13" r="2"/>' +
    '<circle cx="13" cy="8" r="2"/><path d="M4.5 3.8 L11.4 7.2 L11 8 L4.1 4.6 Z M4.1 11.4 L11 8 L11.4 8.8 L4.5 12.2 Z"/></g></svg>'
});

function scrollToCell(panel: NotebookPanel, job: IJobJson): void {
  const nb = panel.content;
  const cells = nb.widgets;
  const index = cells.findIndex(c => c.model.id === job.cell_id);
  if (index < 0) {
    return; // the cell was deleted or the job is not from this notebook
  }
  nb.activeCellIndex = index;
  void nb.scrollToCell(cells[index], 'center');
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'roar-nb:lineage',
  description: 'The live lineage DAG of the notebook session (roar-nb).',
  autoStart: true,
  requires: [INotebookTracker],
  optional: [ILabShell],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker, labShell: ILabShell | null) => {
    const current = () => tracker.currentWidget?.context.path ?? null;
    const panel = new LineagePanel({
      currentNotebook: current,
      onJobSelected: job => {
        const nb = tracker.currentWidget;
        if (nb && job.cell_id && (job.notebook_path === nb.context.path || (!job.notebook_path && job.notebook?.endsWith('/' + nb.context.path)))) {
          scrollToCell(nb, job);
        }
      }
    });
    panel.title.icon = lineageIcon;
    panel.title.label = labShell ? '' : 'Lineage';
    panel.title.caption = 'Lineage';
    app.shell.add(panel, 'left', { rank: 650 });
    tracker.currentChanged.connect(() => panel.setNotebook(current()));
    app.commands.addCommand('roar-nb:show-lineage', {
      label: 'Show Lineage',
      execute: () => app.shell.activateById(panel.id)
    });
  }
};

export default plugin;
