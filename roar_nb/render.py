"""Drawing a lineage DAG for notebooks: SVG through graphviz, a text fallback, an ipywidgets view.

Responsibility: turn a `dag.Dag` into something a notebook frontend can show.
Every user string (file names, cell source, commands) is escaped before it
reaches a DOT label or tooltip, so a file called `<b>x</b>` or `a"b\\n` is
drawn literally and cannot inject markup. Without the `dot` executable (or the
graphviz package) `dag_svg` returns None and callers show `dag_text`: drawing
never raises.

What it must not do: query or write the store beyond reading jobs it is given,
import IPython (magics.py displays what this module returns), or print.
"""

from __future__ import annotations

import html
import os
from typing import Optional

from roar_nb import dag as dag_mod
from roar_nb import present
from roar_nb.model import CAPTURE_COMPLETE, Job

_FAILED = "#dc2626"
_STALE = "#d97706"
_PARTIAL = "#6b7280"


def _clean(s: str) -> str:
    # The one escaping rule of every view (non-UTF-8 bytes and control characters as \xNN);
    # it also makes DOT input valid UTF-8. Tabs stay: they are harmless in a label.
    return present.text(s, tabs=True)


def _esc(*lines: str) -> str:
    """A DOT label/tooltip showing `lines` literally, one per line (no HTML label, no escapes)."""
    import graphviz

    # graphviz.escape doubles backslashes (DOT escape sequences like \\n, \\l) and
    # marks the string non-HTML; the `\\n` we join with are our own line breaks.
    return graphviz.nohtml("\\n".join(str(graphviz.escape(_clean(ln))) for ln in lines))


def graph(d: dag_mod.Dag):
    """A graphviz.Digraph of jobs (boxes) and the artifacts between them (notes)."""
    import graphviz

    g = graphviz.Digraph("roar", graph_attr={"rankdir": "LR", "fontsize": "10", "bgcolor": "transparent"},
                         node_attr={"fontname": "Helvetica", "fontsize": "10"},
                         edge_attr={"color": "#9ca3af", "arrowsize": "0.6"})
    arts: dict[str, tuple[str, Optional[str]]] = {}  # node name -> (path, hash)

    def art_node(e) -> str:
        name = "a" + (e.hash or "path-" + str(abs(hash(e.path))))
        arts.setdefault(name, (e.path, e.hash))
        return name

    for j in d.jobs:
        attrs = {"shape": "box", "style": "rounded,filled", "fillcolor": "#eef2ff", "color": "#6366f1"}
        extra = [f"{len(j.inputs)} in · {len(j.outputs)} out · {present.duration(j.duration)}"]
        tip = [f"{j.ref} ({j.kind}) {j.status}", f"capture: {j.capture_level} ({j.backend})"]
        if j.status != "ok":
            attrs.update(color=_FAILED, fillcolor="#fee2e2")
            extra.append("failed")
        if j.id in d.stale:
            attrs.update(color=_STALE, style="rounded,filled,dashed", fillcolor="#fef3c7")
            extra.append("stale")
            tip.append("stale: " + d.stale[j.id])
        if j.id in d.superseded:
            attrs.update(style="rounded,dashed", fillcolor="white")
            extra.append("superseded")
        if j.capture_level != CAPTURE_COMPLETE:
            extra.append(j.capture_level)
            tip.extend(j.capture_notes)
        src = (j.source if j.kind == "cell" and j.source else j.command) or ""
        src_lines = present.lines(src.rstrip())
        tip.extend(src_lines[:25] + (["…"] if len(src_lines) > 25 else []))
        g.node("j" + j.id, label=_esc(dag_mod.label(j, 40), " · ".join(extra)), tooltip=_esc(*tip), **attrs)
        for e in j.inputs:
            g.edge(art_node(e), "j" + j.id)
        for e in j.outputs:
            g.edge("j" + j.id, art_node(e))
    base = d.jobs[0].cwd if d.jobs else os.getcwd()
    for name, (path, h) in arts.items():
        shown = os.path.relpath(path, base) if path.startswith(base + "/") else path
        g.node(name, label=_esc(os.path.basename(path) or path, present.short_hash(h)),
               tooltip=_esc(shown, h or "(unreadable)"),
               shape="note", style="filled", fillcolor="#f9fafb", color="#9ca3af", fontsize="9")
    return g


def dag_svg(d: dag_mod.Dag) -> Optional[str]:
    """The DAG as an SVG document, or None when graphviz (package or `dot`) is unavailable."""
    try:
        import graphviz
    except ImportError:
        return None
    try:
        return graph(d).pipe(format="svg", encoding="utf-8")
    except (graphviz.ExecutableNotFound, graphviz.CalledProcessError, OSError, RuntimeError):
        return None


def dag_text(d: dag_mod.Dag) -> str:
    """The text rendering used when SVG is not possible."""
    from roar_nb.report import dag_text as text

    return text(d, show_artifacts=True)


def job_html(job: Job, stale: Optional[str] = None) -> str:
    """Inputs, outputs and source of one job as escaped HTML (the widget's detail pane)."""
    def rows(edges):
        if not edges:
            return "<li><i>none</i></li>"
        return "".join(f"<li><code>{html.escape(present.short_hash(e.hash))}</code> {html.escape(_clean(e.path))}"
                       + (f" <i>({html.escape(_clean(e.note))})</i>" if e.note else "") + "</li>" for e in edges)

    head = f"<b>{html.escape(job.ref)}</b> {html.escape(job.status)}, {present.duration(job.duration)}, " \
           f"capture {html.escape(job.capture_level)} ({html.escape(job.backend)})"
    if stale:
        head += f"<br><span style='color:{_STALE}'>stale: {html.escape(stale)}</span>"
    if job.capture_notes:
        head += "<br><small>" + html.escape(_clean("; ".join(job.capture_notes))) + "</small>"
    src = (job.source if job.kind == "cell" and job.source else job.command) or ""
    return (f"<div>{head}<br><b>inputs</b><ul>{rows(job.inputs)}</ul><b>outputs</b><ul>{rows(job.outputs)}</ul>"
            f"<b>source</b><pre style='max-height:20em;overflow:auto'>{html.escape(chr(10).join(present.lines(src)))}"
            "</pre></div>")


def dag_widget(d: dag_mod.Dag, project=None):
    """An ipywidgets view: the SVG above, one button per job; clicking shows its I/O and source.

    For frontends without the JupyterLab panel (classic notebook, VS Code). None when
    ipywidgets is not installed."""
    try:
        import ipywidgets as W
    except ImportError:
        return None
    svg = dag_svg(d)
    top = W.HTML(svg) if svg else W.HTML("<pre>" + html.escape(dag_text(d)) + "</pre>")
    detail = W.HTML("<i>click a cell to see its inputs, outputs and source</i>")
    refs = {j.id: j.ref for j in d.jobs}
    buttons = []
    for j in d.jobs:
        deps = sorted(refs.get(x, "?") for x in d.deps.get(j.id, ()))
        b = W.Button(description=_clean(dag_mod.label(j, 36)),
                     tooltip=_clean("depends on " + ", ".join(deps) if deps else "no upstream cells"),
                     layout=W.Layout(width="auto"),
                     button_style="danger" if j.status != "ok" else ("warning" if j.id in d.stale else ""))

        def show(_b, job=j):
            detail.value = job_html(job, d.stale.get(job.id))

        b.on_click(show)
        buttons.append(b)
    if not buttons:
        return W.VBox([W.HTML("no jobs yet")])
    return W.VBox([top, W.HBox([W.VBox(buttons), detail])])
