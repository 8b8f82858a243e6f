"""The lineage DAG of a session (or a whole project): jobs linked through artifacts.

Job B depends on job A when B read an artifact (same blake3) that A wrote, and
A is the latest job before B to have written it. The compact view keeps the
latest job of each step; a job is *stale* when one of its inputs was rewritten
afterwards with different content (directly or upstream). Staleness is a fact
about the data: a view of one session is given the project's jobs too
(`project_jobs`), so a later `roar run` in another session makes a cell stale
in the notebook's own view exactly as in `roar dag --all`. `to_json` is a
stable contract used by `roar dag --json`, the server extension and users.
"""

from __future__ import annotations


from roar_nb.model import Job, factory, record
from roar_nb.store import path_to_db


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
        return {
            "session": self.session_id,
            "dag_hash": self.hash(),
            "jobs": [job_json(j, stale=self.stale.get(j.id), superseded=j.id in self.superseded,
                              depends_on=sorted(self.deps.get(j.id, ())))
                     for j in self.jobs],
        }


def job_json(job: Job, stale: str | None = None, superseded: bool = False,
             depends_on: list | None = None) -> dict:
    """The JSON shape of one job (the `jobs[]` items of `roar dag --json`, and `roar show --json`)."""
    def edge(e):
        # Non-UTF-8 bytes appear as \xNN escapes, exactly as in the job_io.path column.
        return {"path": path_to_db(e.path)[0], "hash": e.hash, "size": e.size, "changed": e.changed,
                "note": e.note}

    return {
        "id": job.id, "ref": job.ref, "seq": job.seq, "step": job.step, "kind": job.kind,
        "command": job.command, "source": job.source, "cwd": job.cwd,
        "exit_code": job.exit_code, "status": job.status,
        "started_at": job.started_at, "ended_at": job.ended_at, "duration": round(job.duration, 6),
        "backend": job.backend, "capture_level": job.capture_level,
        "capture_notes": list(job.capture_notes),
        "notebook": job.notebook, "cell_id": job.cell_id, "execution_count": job.execution_count,
        "git": {"commit": job.git_commit, "branch": job.git_branch, "dirty": job.git_dirty,
                "root": job.git_root},
        "session": job.session_id,
        "inputs": [edge(e) for e in job.inputs],
        "outputs": [edge(e) for e in job.outputs],
        "depends_on": depends_on or [],
        "stale": stale,
        "superseded": superseded,
    }


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
        step_latest = {j.step: j.id for j in kept}
        id_step = {j.id: j.step for j in jobs}
        deps = {j.id: {step_latest.get(id_step[d], d) for d in deps[j.id]} - {j.id} for j in kept}
    return Dag(kept, {j.id: deps[j.id] for j in kept}, {k: v for k, v in stale.items()
               if k in {j.id for j in kept}}, superseded if expanded else set(), session_id)


def _link(jobs: list[Job]) -> tuple[dict, set, dict]:
    """(dependencies, superseded ids, stale reasons) of jobs, oldest first."""
    last_writer_of_hash: dict[str, str] = {}
    deps: dict[str, set] = {}
    for j in jobs:
        deps[j.id] = {last_writer_of_hash[e.hash] for e in j.inputs
                      if e.hash and e.hash in last_writer_of_hash and last_writer_of_hash[e.hash] != j.id}
        for e in j.outputs:
            if e.hash:
                last_writer_of_hash[e.hash] = j.id

    latest_of_step: dict[str, Job] = {}
    for j in jobs:
        latest_of_step[j.step] = j
    superseded = {j.id for j in jobs if latest_of_step[j.step].id != j.id}

    # Stale: an input path was later written with different bytes by another job,
    # or a job it depends on is stale.
    stale: dict[str, str] = {}
    index = {j.id: i for i, j in enumerate(jobs)}
    writes_after: dict[str, list] = {}
    for i, j in enumerate(jobs):
        for e in j.outputs:
            writes_after.setdefault(e.path, []).append((i, e.hash, j))
    for i, j in enumerate(jobs):
        for e in j.inputs:
            for k, h, writer in writes_after.get(e.path, ()):
                if k > i and h != e.hash and writer.step != j.step:
                    stale[j.id] = f"{e.path} rewritten by {writer.ref}"
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
    return f"{job.ref} {first}"
