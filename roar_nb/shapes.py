"""The JSON shapes of every view: one function per shape, one contract for Python and TypeScript.

`roar dag --json`, `roar show --json`, `roar log --json` and the REST API behind the
JupyterLab panel (roar_nb/server) all build their documents here, from read models
(`model.Job`, `ArtifactUse`, `SessionStats`, `Reproduction`), never from SQL rows.
The contract is `shapes.schema.json` beside this module (JSON Schema 2020-12): pytest
validates real documents against it (tests/unit/test_shapes.py) and the lab
extension's node tests check that `labextension/src/model.ts` declares exactly its
keys (labextension/test/schema.test.mjs), so the two sides cannot drift apart.
Change a shape here, in the schema and in model.ts together.

Paths and other user text appear as every view shows them (`present.text`: non-UTF-8
bytes and control characters as `\\xNN`); `roar show` prints the same text.

Must not: touch the store or the disk (callers read the records), import a front end.
"""

from __future__ import annotations

from roar_nb import present
from roar_nb.model import Artifact, ArtifactUse, Edge, Job, Reproduction, Session, SessionStats

SCHEMA_FILE = "shapes.schema.json"


def edge_json(e: Edge) -> dict:
    """One input or output of a job."""
    return {"path": present.text(e.path), "hash": e.hash, "size": e.size, "changed": e.changed, "note": e.note}


def job_json(job: Job, stale: str | None = None, superseded: bool = False,
             depends_on: list | None = None) -> dict:
    """One job (the `jobs[]` items of `roar dag --json`, `roar log --json`, and `roar show --json`)."""
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
        "parent_job": job.parent_job_id,
        "inputs": [edge_json(e) for e in job.inputs],
        "outputs": [edge_json(e) for e in job.outputs],
        "depends_on": depends_on or [],
        "stale": stale,
        "superseded": superseded,
    }


def dag_json(dag) -> dict:
    """A `dag.Dag` as `roar dag --json` prints it (the server adds its display keys)."""
    return {
        "session": dag.session_id,
        "dag_hash": dag.hash(),
        "jobs": [job_json(j, stale=dag.stale.get(j.id), superseded=j.id in dag.superseded,
                          depends_on=sorted(dag.deps.get(j.id, ())))
                 for j in dag.jobs],
    }


def session_info_json(s: Session, notebook_path: str | None = None) -> dict:
    """The session a DAG document shows (`notebook_path`: the notebook relative to the server root)."""
    return {"id": s.id, "kind": s.kind, "name": s.name, "notebook": s.notebook, "notebook_path": notebook_path}


def session_json(s: SessionStats, notebook_path: str | None = None) -> dict:
    """One item of GET /roar/api/sessions: the session, when it began, its job count and latest job's end."""
    return {**session_info_json(s.session, notebook_path), "created_at": s.session.created_at,
            "jobs": s.jobs, "last_job_at": s.last_job_at}


def artifact_json(hash_: str, art: Artifact | None, uses: list[ArtifactUse]) -> dict:
    """One artifact as `roar show HASH --json` and GET /roar/api/artifact/HASH give it."""
    def ref(u: ArtifactUse) -> dict:
        return {"job": u.job_id, "ref": u.ref, "session": u.session_id, "path": present.text(u.path),
                "command": u.command}

    return {
        "hash": hash_, "size": art.size if art else None, "digests": dict(art.digests) if art else {},
        "paths": sorted({present.text(u.path) for u in uses}),
        "producers": [ref(u) for u in uses if u.direction == "out"],
        "consumers": [ref(u) for u in uses if u.direction == "in"],
    }


def reproduction_json(r: Reproduction) -> dict:
    """One reproduction record (the `reproductions[]` of `roar show --json`)."""
    return {"id": r.id, "created_at": r.created_at, "target": r.target, "mode": r.mode, "ok": r.ok,
            "directory": r.directory, "target_hashes": list(r.target_hashes), "plan": list(r.plan),
            "verdicts": [{**v, "path": present.text(v.get("path"))} for v in r.verdicts]}


def schema() -> dict:
    """The JSON Schema of every shape above (`$defs`: job, edge, dag, session, artifact, reproduction...)."""
    import json
    import os

    with open(os.path.join(os.path.dirname(__file__), SCHEMA_FILE), encoding="utf-8") as f:
        return json.load(f)
