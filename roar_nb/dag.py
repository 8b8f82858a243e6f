"""The lineage DAG of a session (or a whole project): jobs linked through artifacts.

Job B depends on job A when B read an artifact (same blake3) that A wrote, and
A is the latest job before B to have written it at the path B read it from (or,
when no job wrote it there, anywhere: a copy made outside roar). A file updated
in place links the job that updated it to the job that wrote the version it
started from; byte-identical files at two paths never link the wrong job. The compact view keeps the
latest job of each step; a job is *stale* when one of its inputs was rewritten
afterwards with different content (directly or upstream), except by jobs that
updated in place a file it wrote, each from the version the one before left.
Staleness is a fact about the data: a view of one session is given the project's
jobs too (`project_jobs`), so a later `roar run` in another session makes a cell
stale in the notebook's own view exactly as in `roar dag --all`. `to_json` is a
stable contract used by `roar dag --json`, the server extension and users.
"""

from __future__ import annotations


from roar_nb import present
from roar_nb.model import Job, factory, record


@record
class Dag:
    jobs: list  # Job, oldest first (compact: latest per step)
    deps: dict  # job id -> set of job ids it depends on
    stale: dict  # job id -> reason
    superseded: set = factory(set)  # ids of older runs of a step (expanded view)
    session_id: str | None = None

    def hash(self) -> str:
        """A digest of the compact DAG's structure and artifacts (the "DAG hash")."""
        from roar_nb.hashing import hash_bytes

        parts = []
        for j in self.jobs:
            ins = ",".join(sorted(e.hash or "-" for e in j.inputs))
            outs = ",".join(sorted(e.hash or "-" for e in j.outputs))
            parts.append(f"{j.step}|{ins}|{outs}")
        return hash_bytes("\n".join(parts).encode())

    def to_json(self) -> dict:
        """The DAG as `roar dag --json` prints it (`shapes.dag_json`)."""
        from roar_nb.shapes import dag_json

        return dag_json(self)


def build(jobs: list[Job], expanded: bool = False, session_id: str | None = None,
          project_jobs: list[Job] | None = None) -> Dag:
    """Link jobs (oldest first) through artifacts; compact unless `expanded`.

    `project_jobs` (every job of the project, oldest first) decides staleness when
    `jobs` is only part of it (one session)."""
    deps, superseded, stale = _link(jobs)
    if project_jobs is not None and len(project_jobs) != len(jobs):
        stale = _link(project_jobs)[2]
        shown = {j.id for j in jobs}
        stale = {k: v for k, v in stale.items() if k in shown}

    if expanded:
        kept = jobs
    else:
        kept = [j for j in jobs if j.id not in superseded]
        # Re-point dependencies on superseded runs to the latest run of that step.
        step_latest = {_run_of(j): j.id for j in kept}
        id_step = {j.id: _run_of(j) for j in jobs}

        def latest_deps(jid: str) -> set:
            # A dependency on an earlier run of the job's own step (a file it updates in
            # place on every run) stands for what that run depended on.
            out, todo, seen = set(), list(deps[jid]), set()
            while todo:
                d = todo.pop()
                t = step_latest.get(id_step[d], d)
                if t != jid:
                    out.add(t)
                elif d not in seen:
                    seen.add(d)
                    todo.extend(deps[d])
            return out

        deps = {j.id: latest_deps(j.id) for j in kept}
    return Dag(kept, {j.id: deps[j.id] for j in kept}, {k: v for k, v in stale.items()
               if k in {j.id for j in kept}}, superseded if expanded else set(), session_id)


def _run_of(j: Job):
    """What makes a later job a re-run of `j`: the same step, except that the Ray tasks of one
    function are different work when they write different files (step = function name)."""
    if j.kind == "ray_task":
        return (j.step, tuple(sorted(e.path for e in j.outputs)))
    return j.step


def _link(jobs: list[Job]) -> tuple[dict, set, dict]:
    """(dependencies, superseded ids, stale reasons) of jobs, oldest first."""
    last_writer_of_hash: dict[str, str] = {}
    last_writer_at: dict[tuple, str] = {}  # (path, hash) -> job id
    deps: dict[str, set] = {}
    for j in jobs:
        found = (last_writer_at.get((e.path, e.hash)) or last_writer_of_hash.get(e.hash)
                 for e in j.inputs if e.hash)
        deps[j.id] = {w for w in found if w is not None and w != j.id}
        for e in j.outputs:
            if e.hash:
                last_writer_of_hash[e.hash] = j.id
                last_writer_at[(e.path, e.hash)] = j.id

    latest_of_step: dict = {}
    for j in jobs:
        latest_of_step[_run_of(j)] = j
    superseded = {j.id for j in jobs if latest_of_step[_run_of(j)].id != j.id}

    # Stale: an input path was later written with different bytes by another job, or a
    # job it depends on is stale. A job that wrote the path itself is not made stale by
    # the jobs that then updated it in place, each from the version the one before left
    # (a log appended to, a database updated): they continue its work.
    stale: dict[str, str] = {}
    index = {j.id: i for i, j in enumerate(jobs)}
    writes_after: dict[str, list] = {}
    for i, j in enumerate(jobs):
        for e in j.outputs:
            writes_after.setdefault(e.path, []).append((i, e.hash, j))
    chain_end: dict[tuple, int] = {}  # (path, job id) -> position in writes_after past its updaters
    for path, writers in writes_after.items():
        end = len(writers)
        for t in range(len(writers) - 1, -1, -1):
            chain_end[(path, writers[t][2].id)] = end
            _, _, w = writers[t]
            prev = writers[t - 1][1] if t else None
            if not (prev is not None and any(x.path == path and x.hash == prev for x in w.inputs)):
                end = t  # writer t did not start from the version before it: a chain ends here
    for i, j in enumerate(jobs):
        for e in j.inputs:
            writers = writes_after.get(e.path, ())
            for k, h, writer in writers[chain_end.get((e.path, j.id), 0):]:
                if k > i and h != e.hash and writer.step != j.step:
                    stale[j.id] = f"{present.text(e.path)} rewritten by {writer.ref}"
                    break
            if j.id in stale:
                break
    for j in jobs:  # oldest first, so upstream staleness is known already
        if j.id not in stale:
            for d in deps[j.id]:
                if d in stale and d not in superseded:
                    up = jobs[index[d]]
                    stale[j.id] = f"upstream {up.ref} is stale"
                    break
    return deps, superseded, stale


def label(job: Job, width: int = 48) -> str:
    """`@N first line of source or command`, shortened for display."""
    text = job.source if job.kind == "cell" and job.source else job.command
    first = next((ln.strip() for ln in (text or "").splitlines()
                  if ln.strip() and not ln.strip().startswith(("%%roar", "#"))), "")
    if len(first) > width:
        first = first[: width - 1] + "…"
    return f"{job.ref} {present.text(first)}"
