"""Plain-text views of jobs, artifacts, sessions and the DAG, shared by the CLI and the magics.

Pure formatting: takes model objects (and the store for lookups), returns strings.
Colour is opt-in (the CLI enables it on a terminal unless NO_COLOR is set). Every
user-controlled string (paths, commands, sources, notes, branch names) goes through
`present.text` before it is placed in a line: a file name cannot send escape
sequences to the terminal or fake a line of output.
"""

from __future__ import annotations

import os
import time

from roar_nb import dag as dag_mod
from roar_nb.model import CAPTURE_COMPLETE, Job
from roar_nb.present import duration as fmt_duration
from roar_nb.present import lines as text_lines
from roar_nb.present import path as display_path
from roar_nb.present import short_hash as short
from roar_nb.present import short_id, text
from roar_nb.present import size as fmt_size


class Style:
    def __init__(self, color: bool = False):
        self.color = color

    def _c(self, code: str, s: str) -> str:
        return f"\x1b[{code}m{s}\x1b[0m" if self.color else s

    def ref(self, s):
        return self._c("1;36", s)

    def dim(self, s):
        return self._c("2", s)

    def bad(self, s):
        return self._c("31", s)

    def warn(self, s):
        return self._c("33", s)

    def good(self, s):
        return self._c("32", s)


def summary_line(job: Job) -> str:
    """`roar @4: 2 in, 1 out (features.parquet 3f2a91c0), 14 ms` plus a capture note if not complete."""
    outs = [e for e in job.outputs if e.hash]
    detail = ""
    if outs:
        first = outs[0]
        detail = f" ({text(os.path.basename(first.path))} {short(first.hash)}"
        detail += f", +{len(outs) - 1} more)" if len(outs) > 1 else ")"
    line = f"roar {job.ref}: {len(job.inputs)} in, {len(job.outputs)} out{detail}, {fmt_duration(job.duration)}"
    if job.status != "ok":
        line += f", failed (exit {job.exit_code})" if job.exit_code is not None else ", failed"
    if job.capture_level != CAPTURE_COMPLETE:
        line += f"\nroar: capture {job.capture_level}: " + text("; ".join(job.capture_notes or ("unknown",)))
    return line


def job_text(project, job: Job, style: Style = Style()) -> str:
    base = job.cwd
    lines = [f"{style.ref(job.ref)}  job {job.id}  ({job.kind})"]
    if job.kind == "cell":
        lines.append(f"  cell       {job.cell_id or '-'} [{job.execution_count or ' '}]"
                     + (f" in {text(job.notebook)}" if job.notebook else ""))
    lines.append(f"  command    {text(job.command)}")
    lines.append(f"  cwd        {text(job.cwd)}")
    if job.git_commit:
        dirty = " (dirty)" if job.git_dirty else ""
        lines.append(f"  git        {text(short_id(job.git_commit))} on {text(job.git_branch or '(detached)')}{dirty}")
    status = style.good("ok") if job.status == "ok" else style.bad(job.status)
    lines.append(f"  status     {status}, exit {job.exit_code}")
    lines.append(f"  started    {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(job.started_at))}"
                 f", took {fmt_duration(job.duration)}")
    cap = f"{job.capture_level} ({job.backend})"
    if job.capture_level != CAPTURE_COMPLETE:
        cap = style.warn(cap) + ": " + text("; ".join(job.capture_notes))
    lines.append(f"  capture    {cap}")
    for title, edges in (("inputs", job.inputs), ("outputs", job.outputs)):
        lines.append(f"  {title} ({len(edges)})")
        for e in edges:
            flag = ""
            if e.changed:
                flag = style.warn("  ! modified while the job ran")
            elif e.note:
                flag = style.dim(f"  ({text(e.note)})")
            lines.append(f"    {short(e.hash, 12)}  {fmt_size(e.size):>10}  {display_path(e.path, base)}{flag}")
    if job.source:
        lines.append("  source")
        lines.extend("    " + ln for ln in text_lines(job.source.rstrip()))
    return "\n".join(lines)


def artifact_text(project, hash_: str, style: Style = Style()) -> str:
    store = project.store
    art = store.artifact(hash_)
    uses = store.uses_of_artifact(hash_)
    lines = [f"artifact {hash_}", f"  size       {fmt_size(art.size or 0 if art else 0)}"]
    for algo, value in sorted(art.digests.items() if art else ()):
        lines.append(f"  {algo:<10} {value}")
    paths = sorted({display_path(u.path) for u in uses})
    lines.append("  paths      " + (", ".join(paths) if paths else "-"))
    producers = [u for u in uses if u.direction == "out"]
    consumers = [u for u in uses if u.direction == "in"]
    lines.append("  produced by")
    lines.extend(f"    {style.ref(u.ref)} {short_id(u.job_id)}  {text(u.command[:60])}" for u in producers)
    if not producers:
        lines.append("    (no recorded producer: a source artifact)")
    lines.append("  consumed by")
    lines.extend(f"    {style.ref(u.ref)} {short_id(u.job_id)}  {text(u.command[:60])}" for u in consumers)
    if not consumers:
        lines.append("    (none)")
    return "\n".join(lines)


def log_text(jobs: list[Job], style: Style = Style()) -> str:
    if not jobs:
        return "no jobs yet"
    lines = []
    for j in jobs:
        when = time.strftime("%m-%d %H:%M:%S", time.localtime(j.started_at))
        st = style.good("ok  ") if j.status == "ok" else style.bad(f"x{j.exit_code if j.exit_code is not None else '?':<3}")
        lines.append(f"{style.ref(j.ref):>5} {when} {st} {fmt_duration(j.duration):>8}  "
                     f"{len(j.inputs)}>{len(j.outputs)}  {dag_mod.label(j, 60).split(' ', 1)[1]}")
    return "\n".join(lines)


def _task_groups(jobs: list) -> dict:
    """Ray tasks of one function run by one job (or cell), two or more: (parent, step) -> jobs."""
    groups: dict = {}
    for j in jobs:
        if j.kind == "ray_task":
            groups.setdefault((j.parent_job_id, j.step), []).append(j)
    return {k: v for k, v in groups.items() if len(v) > 1}


def _ref_range(jobs: list) -> str:
    seqs = sorted(j.seq for j in jobs)
    first, last = jobs[0].ref[:-len(str(jobs[0].seq))], seqs[-1]
    sep = "-" if seqs == list(range(seqs[0], last + 1)) else "…"  # "…": other jobs are numbered in between
    return f"{first}{seqs[0]}{sep}{first}{last}"


def _group_line(members: list, refs: dict, dag: dag_mod.Dag, style: Style, show_artifacts: bool) -> list:
    own = refs[members[0].id]
    deps = sorted({refs.get(d, "?") for m in members for d in dag.deps.get(m.id, ())} - {own})
    arrow = style.dim(" <- " + ", ".join(deps)) if deps else ""
    marks = []
    for what, n, paint in (("failed", sum(m.status == "failed" for m in members), style.bad),
                           ("lost", sum(m.status == "lost" for m in members), style.bad),
                           ("stale", sum(m.id in dag.stale for m in members), style.warn),
                           ("superseded", sum(m.id in dag.superseded for m in members), style.dim)):
        if n:
            marks.append(paint(f"{n} {what}"))
    for level in sorted({m.capture_level for m in members} - {CAPTURE_COMPLETE}):
        marks.append(style.warn(f"{sum(m.capture_level == level for m in members)} {level}"))
    mark = ("  [" + "; ".join(marks) + "]") if marks else ""
    lines = [f"{style.ref(own)} {len(members)} × ray_task {text(members[0].step or '?')}{arrow}{mark}"]
    if show_artifacts:
        lines.append(style.dim(f"        < {sum(len(m.inputs) for m in members)} input(s)"))
        lines.append(f"        > {sum(len(m.outputs) for m in members)} output(s) (`roar dag --tasks` lists them)")
    return lines


def dag_text(dag: dag_mod.Dag, style: Style = Style(), show_artifacts: bool = False, tasks: bool = False) -> str:
    """Compact text DAG: one line per job with what it depends on, stale/failed marks. The
    Ray tasks of one function that one job or cell ran fold into one line
    (`200 × ray_task featurize`) unless `tasks`."""
    if not dag.jobs:
        return "no jobs yet"
    refs = {j.id: j.ref for j in dag.jobs}
    groups = {} if tasks else _task_groups(dag.jobs)
    for members in groups.values():
        r = _ref_range(members)
        refs.update((m.id, r) for m in members)
    first_of = {members[0].id: members for members in groups.values()}
    folded = {m.id for members in groups.values() for m in members[1:]}
    lines = []
    # @N numbers restart per session: when several sessions are shown, head each group.
    many = len({j.session_id for j in dag.jobs}) > 1
    current = None
    for j in sorted(dag.jobs, key=lambda j: (j.session_id, j.started_at)) if many else dag.jobs:
        if many and j.session_id != current:
            current = j.session_id
            where = f"notebook {display_path(j.notebook)}" if j.notebook else f"{j.kind} jobs"
            lines.append(style.dim(f"── {where} (session {j.session_id[:8]}) ──"))
        if j.id in folded:
            continue
        if j.id in first_of:
            lines.extend(_group_line(first_of[j.id], refs, dag, style, show_artifacts))
            continue
        deps = sorted(set(refs.get(d, "?") for d in dag.deps.get(j.id, ())))
        arrow = style.dim(" <- " + ", ".join(deps)) if deps else ""
        marks = []
        if j.status != "ok":
            marks.append(style.bad("failed"))
        if j.id in dag.stale:
            marks.append(style.warn("stale: " + dag.stale[j.id]))
        if j.id in dag.superseded:
            marks.append(style.dim("superseded"))
        if j.capture_level != CAPTURE_COMPLETE:
            marks.append(style.warn(j.capture_level))
        mark = ("  [" + "; ".join(marks) + "]") if marks else ""
        ref, _, label_text = dag_mod.label(j, 60).partition(" ")
        lines.append(f"{style.ref(ref):>5} {label_text}{arrow}{mark}")
        if show_artifacts:
            for e in j.inputs:
                lines.append(style.dim(f"        < {short(e.hash)} {display_path(e.path, j.cwd)}"))
            for e in j.outputs:
                lines.append(f"        > {short(e.hash)} {display_path(e.path, j.cwd)}")
    return "\n".join(lines)


def status_text(project, style: Style = Style()) -> str:
    store = project.store
    session = store.active_session(create=False)
    lines = [f"project    {text(project.root)}"]
    if session is None:
        lines.append("session    (none yet: `roar run` starts one)")
        return "\n".join(lines)
    jobs = store.jobs(session.id)
    d = dag_mod.build(jobs, session_id=session.id, project_jobs=store.jobs())
    failed = sum(1 for j in jobs if j.status != "ok")
    lines.append(f"session    {short_id(session.id)}  started {time.strftime('%Y-%m-%d %H:%M', time.localtime(session.created_at))}")
    lines.append(f"jobs       {len(jobs)} ({len(d.jobs)} steps" + (f", {failed} failed" if failed else "") + ")")
    if d.stale:
        lines.append(f"stale      {', '.join(sorted(j.ref for j in d.jobs if j.id in d.stale))}")
    lines.append(f"dag hash   {d.hash()[:16]}")
    if jobs:
        last = jobs[-1]
        lines.append(f"last       {last.ref} {dag_mod.label(last, 50).split(' ', 1)[1]}")
    return "\n".join(lines)


def plan_text(plan, style: Style = Style()) -> str:
    """The preview of `roar reproduce`: environment, sources, ordered steps, drift."""
    env = plan.environment
    lines = [f"Reproduction plan for {text(plan.target)} ({', '.join(short(h, 12) for h in plan.target_hashes)})"]
    git = f"git {text(short_id(env['git_commit']))} on {text(env.get('git_branch') or '-')}" if env.get("git_commit") else "no git commit"
    if env.get("git_dirty"):
        git += style.warn(" (tree was dirty)")
    lines.append(f"  environment  python {env.get('python') or '?'}, {len(env.get('packages') or {})} packages, {git}")
    lines.append(f"  sources ({len(plan.sources)})")
    for s in plan.sources:
        mark = {"ok": style.good("ok       "), "elsewhere": style.warn("elsewhere"),
                "missing": style.bad("missing  "), "differs": style.warn("changed  "),
                "unknown": style.bad("unknown  ")}[s.status]
        extra = f"  (found at {display_path(s.found_at)})" if s.found_at else ""
        if s.status == "unknown":
            extra = "  (updated in place from a version roar never recorded)"
        lines.append(f"    {mark} {short(s.hash, 12)}  {display_path(s.path)}{extra}")
    lines.append(f"  steps ({len(plan.steps)})")
    for k, j in enumerate(plan.steps, 1):
        outs = ", ".join(text(os.path.basename(e.path)) for e in j.outputs if e.hash)
        lines.append(f"    {k}. {style.ref(j.ref):>4} {j.kind:<5} {dag_mod.label(j, 50).split(' ', 1)[1]}"
                     + (style.dim(f"  -> {outs}") if outs else ""))
    planned = {j.id for j in plan.steps}
    extra = [j for unit in plan.replay for j in unit if j.id not in planned]
    pre = sum(1 for unit in plan.replay for j in unit if j.preamble)
    if extra or pre:
        lines.append(style.dim(f"  kernel state: also replays {len(extra)} other cell(s) of the notebook session"
                               f" and {pre} untraced preamble(s) (imports, definitions)"))
    if plan.drift:
        lines.append(style.warn(f"  drift ({len(plan.drift)}): the current environment differs from the recorded one"))
        lines.extend(f"    {text(d)}" for d in plan.drift[:10])
        if len(plan.drift) > 10:
            lines.append(f"    ... and {len(plan.drift) - 10} more")
    return "\n".join(lines)


def outcome_text(outcome, style: Style = Style()) -> str:
    colors = {"identical": style.good, "differs": style.bad, "missing": style.bad, "nondeterministic": style.warn}
    lines = []
    if outcome.failed_step:
        lines.append(style.bad(f"step failed: {text(outcome.failed_step)}"))
    for p in outcome.not_installed:  # --in: the venv holds only what it could get
        lines.append(style.warn(f"recorded package not installed in the venv: {text(p)}"))
    for v in outcome.verdicts:
        mark = "*" if v.target else " "
        detail = ""
        if v.verdict == "differs":
            detail = f"  recorded {short(v.expected, 12)}, now {short(v.actual, 12)}"
        elif v.verdict == "nondeterministic":
            detail = "  two fresh runs disagree"
        lines.append(f"  {mark} {colors[v.verdict](f'{v.verdict:<16}')} {display_path(v.path)}{detail}")
    verdict = style.good("reproduced") if outcome.ok else style.bad("NOT reproduced")
    lines.append(f"{verdict}: {sum(v.verdict == 'identical' for v in outcome.verdicts)}/{len(outcome.verdicts)}"
                 f" outputs identical (* = requested target); record {short_id(outcome.id)}")
    return "\n".join(lines)


def reproductions_text(records: list, style: Style = Style()) -> str:
    if not records:
        return ""
    lines = ["  reproductions"]
    for r in records:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r.created_at))
        counts: dict = {}
        for v in r.verdicts:
            if "verdict" in v:
                counts[v["verdict"]] = counts.get(v["verdict"], 0) + 1
        summary = ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no outputs"
        ok = style.good("ok") if r.ok else style.bad("failed")
        lines.append(f"    {short_id(r.id)} {when} {text(r.mode):<8} {ok}: {text(summary)}")
    return "\n".join(lines)
