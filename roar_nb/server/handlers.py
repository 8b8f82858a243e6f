"""REST handlers under /roar/api/: sessions, DAG, job, artifact, and a cheap change token.

Responsibility: turn an HTTP request into a call on the same use-case layer as
the CLI (`session.Project`, `views.scope`/`artifact_json`, `dag.build`/`job_json`) and the
result into JSON. Every handler requires Jupyter's authentication
(`@tornado.web.authenticated` on an `APIHandler`: no token -> 403) and read
access to contents (the DAG shows file paths and source); every error is
`{"error": {"message": ...}}`.

What it must not do: write to the database (the panel is a viewer; pending jobs
are still ingested by `Project.store`, as any roar command does), bind sockets
or start anything, block the server's event loop (SQLite work runs in a thread),
or render HTML: strings from the DB leave here as JSON and the panel shows them
as text.

Paths in requests (`?path=`) are notebook paths as JupyterLab names them,
relative to the server's root directory; they must stay inside it. So must the
project served: `Project.find` walks upward (and honours $ROAR_PROJECT), so a
project found above the root (or outside it through a symlink) is treated as no
project, as `/api/contents` refuses paths outside the root.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Callable, Optional

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado.ioloop import IOLoop

from roar_nb import dag as dag_mod
from roar_nb import shapes, views
from roar_nb.errors import AmbiguousRef, NotInitialized, RefNotFound, RoarError, StoreError, UsageError
from roar_nb.session import Project

# Shown by the panel (as text) when there is no .roar/ for the notebook or the server root.
HINT_NO_PROJECT = ("No roar project here yet. Run `%load_ext roar` in a notebook cell "
                   "(it creates .roar/ and records traced cells), or `roar init` in a terminal.")
HINT_NO_SESSION = ("This notebook has no roar session yet. Run `%load_ext roar` in it, then "
                   "`%roar on` (every cell) or `%%roar` (one cell).")

_STATUS = {NotInitialized: 404, RefNotFound: 404, AmbiguousRef: 400, UsageError: 400, StoreError: 503}


class _Projects:
    """Open projects of this server, one store connection each, used by one thread at a time.

    A sqlite3 connection must not run two statements at once from two threads,
    and `Store.snapshot()` is a transaction on the connection: hence the lock.
    The key includes the DB file's inode so a deleted and re-created .roar/ is
    reopened instead of read through a stale connection."""

    def __init__(self):
        self._lock = threading.Lock()
        self._open: dict[tuple, tuple[Project, threading.Lock]] = {}

    def get(self, start: str, root: str) -> tuple[Project, threading.Lock]:
        found = Project.find(start)
        if not _inside(found.root, root):
            raise NotInitialized("no roar project at or below the server's root directory")
        try:
            ino = os.stat(os.path.join(found.roar_dir, "roar.db")).st_ino
        except OSError as e:
            raise NotInitialized(f"{found.roar_dir}: {e.strerror}") from None
        key = (str(found.root), ino)
        with self._lock:
            if key not in self._open:
                for old in [k for k in self._open if k[0] == key[0]]:
                    self._close(self._open.pop(old)[0])
                self._open[key] = (found, threading.Lock())
            return self._open[key]

    @staticmethod
    def _close(project: Project) -> None:
        if project._store is not None:
            project._store.close()


def _inside(path: str, root: str) -> bool:
    """Whether `path` is `root` or below it, symlinks resolved."""
    path, root = os.path.realpath(path), os.path.realpath(root)
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class RoarHandler(APIHandler):
    """Base: JSON errors, the server's root directory, and DB work off the event loop."""

    auth_resource = "contents"  # the DAG reveals paths and cell source: same right as reading files

    @property
    def root_dir(self) -> str:
        return self.settings["roar_root_dir"]

    @property
    def projects(self) -> _Projects:
        return self.settings["roar_projects"]

    def write_error(self, status_code: int, **kwargs) -> None:
        message = self._reason
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError):
            message = exc.log_message or exc.reason or message
        elif exc is not None and status_code == 500:
            message = "internal error in the roar server extension (see the server log)"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"error": {"message": message, "status": status_code}}))

    def notebook_abspath(self) -> Optional[str]:
        """The `path` argument as an absolute path inside the root dir, or None if absent."""
        rel = self.get_argument("path", "").strip()
        if not rel:
            return None
        root = os.path.abspath(self.root_dir)
        full = os.path.abspath(os.path.join(root, rel.lstrip("/")))
        if full != root and not full.startswith(root + os.sep):
            raise tornado.web.HTTPError(400, "path is outside the server's root directory")
        return full

    def relpath(self, path: Optional[str]) -> Optional[str]:
        """A recorded absolute path as JupyterLab names it (None when outside the root dir)."""
        if not path:
            return None
        root = os.path.abspath(self.root_dir)
        return os.path.relpath(path, root) if path.startswith(root + os.sep) else None

    async def run(self, fn: Callable[[Project], dict], need_project: bool = True) -> None:
        """Find the project for ?path= (else the root dir), run `fn` in a thread under the
        project's lock, write its JSON. RoarErrors become JSON errors with a fitting status."""
        nb = self.notebook_abspath()
        start = os.path.dirname(nb) if nb else self.root_dir

        def work():
            try:
                project, lock = self.projects.get(start, self.root_dir)
            except NotInitialized:
                if need_project:
                    raise
                return {"project": None, "hint": HINT_NO_PROJECT}
            with lock:
                return fn(project)

        try:
            doc = await IOLoop.current().run_in_executor(None, work)
        except RoarError as e:
            raise tornado.web.HTTPError(_STATUS.get(type(e), 500), str(e)) from None
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(doc))


class ChangesHandler(RoarHandler):
    """GET /roar/api/changes?path=: {"token"}; the panel polls this and refetches the DAG on change."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        await self.run(lambda p: {"project": str(p.root), "token": p.store.change_token()},
                       need_project=False)


class SessionsHandler(RoarHandler):
    """GET /roar/api/sessions?path=: every session of the project, and which one is the notebook's."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        nb = self.notebook_abspath()

        def fn(project: Project) -> dict:
            store = project.store
            with store.snapshot():
                sessions = [shapes.session_json(s, self.relpath(s.session.notebook)) for s in store.sessions()]
                current = store.notebook_session(nb) if nb else None
                active, _ = views.default_session(project)
            return {"project": str(project.root), "sessions": sessions,
                    "current": current.id if current else None, "active": active.id if active else None}

        await self.run(fn, need_project=False)


class DagHandler(RoarHandler):
    """GET /roar/api/dag?path=NB[&session=ID|all][&expanded=1]: `roar dag --json` plus labels.

    Without `session`, the DAG of the notebook's latest session (the one `%load_ext
    roar` opened for it), or without `path` the default session (`views.default_session`,
    the one `roar dag` shows); `session=all` is the whole project. Jobs and their inputs
    and outputs are read in one snapshot, so a job being written is either complete
    or absent."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        nb = self.notebook_abspath()
        which = self.get_argument("session", "").strip()
        expanded = self.get_argument("expanded", "0") in ("1", "true", "yes")

        def fn(project: Project) -> dict:
            store = project.store
            with store.snapshot():
                token = store.change_token()
                # The one rule for which session a view shows, as `roar dag` and `%roar dag`.
                sc = views.scope(project, session=None if which == "all" else which, notebook=nb,
                                 everything=which == "all")
                session = sc.session
                everything = views.project_jobs(project, sc)  # staleness is project-wide
            d = dag_mod.build(sc.jobs, expanded=expanded, session_id=session.id if session else None,
                              project_jobs=everything)
            doc = d.to_json()
            by_id = {j.id: j for j in d.jobs}
            for jj in doc["jobs"]:
                job = by_id[jj["id"]]
                jj["label"] = dag_mod.label(job)
                jj["notebook_path"] = self.relpath(job.notebook)
            doc.update({
                "project": str(project.root), "token": token, "scope": "all" if which == "all" else "session",
                "session_info": None if session is None else shapes.session_info_json(
                    session, self.relpath(session.notebook)),
                "hint": HINT_NO_SESSION if (nb and not which and session is None) else None,
            })
            return doc

        await self.run(fn, need_project=False)


class JobHandler(RoarHandler):
    """GET /roar/api/job/<id or unique prefix>: one job, as `roar show @N --json`."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_ref: str):
        def fn(project: Project) -> dict:
            from roar_nb.resolve import resolve_job

            job = resolve_job(project, job_ref)
            doc = shapes.job_json(job)
            doc["label"] = dag_mod.label(job)
            doc["notebook_path"] = self.relpath(job.notebook)
            return doc

        await self.run(fn)


class ArtifactHandler(RoarHandler):
    """GET /roar/api/artifact/<blake3 or unique prefix>: as `roar show HASH --json`."""

    @tornado.web.authenticated
    @authorized
    async def get(self, ref: str):
        def fn(project: Project) -> dict:
            # One JSON shape for artifacts, shared with `roar show HASH --json`.
            from roar_nb.resolve import resolve_artifact

            if not all(c in "0123456789abcdefABCDEF" for c in ref):
                raise UsageError("an artifact is named by its blake3 hash (or a unique prefix)")
            store = project.store
            with store.snapshot():
                return views.artifact_json(project, resolve_artifact(project, ref))

        await self.run(fn)


class NotFoundHandler(RoarHandler):
    """Anything else under /roar/api/: a JSON 404 (after authentication, so it reveals nothing)."""

    @tornado.web.authenticated
    def get(self, *_):
        raise tornado.web.HTTPError(404, "no such roar API endpoint")


def setup_handlers(serverapp) -> None:
    web_app = serverapp.web_app
    web_app.settings["roar_root_dir"] = os.path.abspath(os.path.expanduser(serverapp.root_dir))
    web_app.settings["roar_projects"] = _Projects()
    base = url_path_join(web_app.settings["base_url"], "roar", "api")
    web_app.add_handlers(".*$", [
        (url_path_join(base, "changes"), ChangesHandler),
        (url_path_join(base, "sessions"), SessionsHandler),
        (url_path_join(base, "dag"), DagHandler),
        (url_path_join(base, r"job/([^/]+)"), JobHandler),
        (url_path_join(base, r"artifact/([^/]+)"), ArtifactHandler),
        (url_path_join(base, r"(.*)"), NotFoundHandler),
    ])
