"""Turning what a user types into a job or an artifact.

Accepted: `@N` / `@BN` (step numbers in a session), a job id or unique prefix, a
file path (current or recorded), a blake3 hash or unique prefix. Shared by the
CLI, the magics and the server so that a reference means the same everywhere.
"""

from __future__ import annotations

import os
import re

from roar_nb import present
from roar_nb.errors import AmbiguousRef, RefNotFound
from roar_nb.model import Job, Session

_STEP = re.compile(r"^@(B?)(\d+)$", re.IGNORECASE)
_HEX = re.compile(r"^[0-9a-fA-F]{4,64}$")


def resolve_job(project, ref: str, session: Session | None = None) -> Job:
    store = project.store
    m = _STEP.match(ref.strip())
    if m:
        if session is None:
            from roar_nb.views import default_session

            session, _ = default_session(project)
        if session is None:
            raise RefNotFound(f"no job {ref}: the session has no jobs yet")
        seq = int(m.group(2))
        job = store.job_by_seq(session.id, seq, build=bool(m.group(1))) if seq < 2**63 else None  # SQLite's int
        if job is None:
            n = store.count_jobs(session.id)
            raise RefNotFound(f"no job {ref} in this session ({n} job{'s' if n != 1 else ''}; see `roar log`)")
        return job
    if _HEX.match(ref):
        jobs = store.jobs_by_id_prefix(ref)
        if len(jobs) == 1:
            return jobs[0]
        if len(jobs) > 1:
            raise AmbiguousRef(f"{ref!r} matches {len(jobs)} jobs: " + ", ".join(present.short_id(j.id) for j in jobs[:6]))
    raise RefNotFound(f"no job matches {ref!r}")


def resolve_artifact(project, ref: str) -> str:
    """The blake3 hash that `ref` (path or hash prefix) names."""
    store = project.store
    path = ref if ref.startswith("s3://") else os.path.abspath(ref)  # S3 objects keep their URL
    if os.path.isfile(path):
        from roar_nb.hashing import hash_paths

        h = hash_paths([path], store=store, progress_after=-1)[path].hash
        if h and store.artifact(h):
            return h
    recorded = store.latest_hash_at_path(path)
    if recorded:
        return recorded
    if _HEX.match(ref):
        hashes = store.hashes_by_prefix(ref)
        if len(hashes) == 1:
            return hashes[0]
        if len(hashes) > 1:
            lines = []
            for h in hashes[:8]:
                uses = store.uses_of_artifact(h)
                where = present.text(uses[-1].path) if uses else "?"
                lines.append(f"{h[:16]} ({where})")
            raise AmbiguousRef(f"{ref!r} matches {len(hashes)} artifacts: " + "; ".join(lines))
    if os.path.exists(path):
        raise RefNotFound(f"{ref} is not a recorded artifact (no job read or wrote it)")
    raise RefNotFound(f"no artifact matches {ref!r}")


def resolve_any(project, ref: str, session: Session | None = None):
    """('job', Job) or ('artifact', hash) for `roar show REF`. Step refs and paths win over prefixes."""
    if _STEP.match(ref.strip()):
        return "job", resolve_job(project, ref, session)
    if os.path.exists(ref) or "/" in ref or not _HEX.match(ref):
        return "artifact", resolve_artifact(project, ref)
    # A bare hex string: a unique job-id prefix wins, then an artifact prefix.
    jobs = project.store.jobs_by_id_prefix(ref)
    arts = project.store.hashes_by_prefix(ref)
    if len(jobs) == 1 and not arts:
        return "job", jobs[0]
    if arts and not jobs:
        return "artifact", resolve_artifact(project, ref)
    if jobs and arts:
        raise AmbiguousRef(f"{ref!r} matches both a job and an artifact; use more characters")
    raise RefNotFound(f"nothing matches {ref!r}")
