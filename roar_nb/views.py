"""Read views shared by every front end: which session a view shows, and the artifact view.

Owns the one rule for the session that `roar dag`, `roar log`, `@N`, `%roar dag`
and the lab panel show when none is named (`default_session`), how an explicit
choice (a session prefix, a notebook path, the whole project) turns into jobs
(`scope`), and the JSON shape of one artifact (`artifact_json`, as `roar show
HASH --json` and the server's /artifact endpoint give it).

What it must not do: write to the store (views are read-only; `Project.store`
may still ingest pending jobs, as every roar command does), print, or format for
a terminal (report.py does that), or know about argparse, IPython or tornado.
"""

from __future__ import annotations

import os

from roar_nb import present
from roar_nb.errors import RoarError
from roar_nb.model import Job, Session, record


@record
class Scope:
    """What a view shows: a session (None for the whole project, or when there is none yet),
    its jobs, and a note to show the user when the session was chosen by fallback."""

    session: Session | None
    jobs: list
    note: str | None = None
    everything: bool = False


def default_session(project) -> tuple[Session | None, str | None]:
    """The session that `roar dag`, `roar log`, `@N` and the panel mean when none is named.

    The CLI's active session; when that has no jobs (e.g. the work happened in notebooks),
    the notebook session with the most recent job, if it started after the CLI session did
    (so that `roar reset` still shows an empty session). Returns (session, note or None).
    """
    store = project.store
    s = store.active_session(create=False)
    if s is not None and store.count_jobs(s.id):
        return s, None
    since = s.created_at if s is not None else 0.0
    recent = [r for r in store.sessions()
              if r.jobs and r.session.kind == "notebook" and r.session.created_at >= since]
    if not recent:
        return s, None
    latest = max(recent, key=lambda r: r.last_job_at or 0).session
    what = f"notebook {latest.notebook}" if latest.notebook else f"{latest.kind} session {present.short_id(latest.id)}"
    return latest, f"the CLI session has no jobs; using the latest active one ({what})"


def scope(project, session: str | None = None, notebook: str | None = None, everything: bool = False,
          must_exist: bool = False) -> Scope:
    """The jobs a view shows: `everything` (the project), `session` (an id prefix), `notebook`
    (a notebook path: its latest session; `must_exist` raises when it has none, else the scope
    is empty), else `default_session`. Call inside `store.snapshot()` for a consistent read."""
    store = project.store
    if everything:
        return Scope(None, store.jobs(), everything=True)
    if session:
        s = store.find_session(session)
        return Scope(s, store.jobs(s.id))
    if notebook:
        s = store.notebook_session(os.path.abspath(notebook))
        if s is None and must_exist:
            raise RoarError(f"no session recorded for notebook {notebook}")
        return Scope(s, store.jobs(s.id) if s else [])
    s, note = default_session(project)
    return Scope(s, store.jobs(s.id) if s else [], note)


def project_jobs(project, sc: Scope) -> list[Job] | None:
    """Every job of the project when `sc` is one session (staleness is project-wide), else None."""
    return project.store.jobs() if sc.session is not None else None


def artifact_json(project, hash_: str) -> dict:
    """One artifact as `roar show HASH --json` and GET /roar/api/artifact/HASH give it."""
    from roar_nb.shapes import artifact_json as shape

    store = project.store
    return shape(hash_, store.artifact(hash_), store.uses_of_artifact(hash_))
