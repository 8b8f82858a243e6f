"""The use-case layer: capture -> hash -> store, shared by every front end.

`Project` finds .roar/ and opens the store; `run_command` runs a command under
the native tracer and records it; `record_job` turns any backend's events into a
stored job (the magics call it for cells). No IPython, no CLI framework, no
printing here: results and warnings are returned for the front end to show.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable


from roar_nb import config as cfg_mod
from roar_nb.lean import join_argv, signal
from roar_nb.capture import events as ev_mod
from roar_nb import ray as ray_mod
from roar_nb.capture.result import CaptureResult
from roar_nb.capture.result import fold as fold_capture
from roar_nb.errors import NotInitialized, ProxyError, RoarError, StoreError, UsageError
from roar_nb.model import CAPTURE_COMPLETE, CAPTURE_PARTIAL, Edge, Job, Session, asdict, factory, new_id, record, replace


class Project:
    """A directory holding .roar/: its config and (lazily opened) store."""

    # Paths are plain strings: pathlib (and the `re` it imports) would add ~10 ms to
    # every `roar run`.
    def __init__(self, root: str | os.PathLike):
        self.root = os.fspath(root)
        self.roar_dir = os.path.join(self.root, cfg_mod.ROAR_DIR)
        self._store = None
        self._config = None
        self._spooled = False  # this process sent a job to pending/ (see record_job)

    @classmethod
    def find(cls, start: str | os.PathLike | None = None) -> "Project":
        """The project for `start` (default: cwd): $ROAR_PROJECT, else the nearest .roar/ upwards."""
        env = os.environ.get(cfg_mod.ENV_PROJECT)
        if env:
            if not os.path.isdir(os.path.join(env, cfg_mod.ROAR_DIR)):
                raise NotInitialized(f"${cfg_mod.ENV_PROJECT}={env} has no .roar/; run `roar init` there")
            return cls(os.path.abspath(env))
        # A deleted working directory has no getcwd(); the shell's $PWD still names it.
        d = os.path.abspath(start or _getcwd() or os.environ.get("PWD") or "/")
        while True:
            if os.path.exists(os.path.join(d, cfg_mod.ROAR_DIR, cfg_mod.DB_NAME)):
                return cls(d)
            parent = os.path.dirname(d)
            if parent == d:
                break
            d = parent
        raise NotInitialized("no .roar/ in this directory or any parent; run `roar init` first")

    @classmethod
    def init(cls, root: str | os.PathLike) -> tuple["Project", bool]:
        """Create .roar/ under `root` (idempotent). Returns (project, created)."""
        root = os.path.realpath(root)
        roar_dir = os.path.join(root, cfg_mod.ROAR_DIR)
        created = not os.path.exists(os.path.join(roar_dir, cfg_mod.DB_NAME))
        try:
            # Owner-only: the DB holds `roar env set` values (often secrets) and every path and
            # command run here. 0700 on .roar/ protects all below it (pending/, traces/).
            os.makedirs(roar_dir, mode=0o700, exist_ok=True)
            from roar_nb.store import owner_only

            owner_only(roar_dir)
            cfg_path = os.path.join(roar_dir, cfg_mod.CONFIG_NAME)
            if not os.path.exists(cfg_path):
                with open(os.open(cfg_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
                    f.write("# roar-nb project settings; `roar config list` shows every key.\n")
            with open(os.path.join(roar_dir, ".gitignore"), "w") as f:
                f.write("*\n")  # never commit the DB by accident
        except OSError as e:
            raise StoreError(f"cannot create {roar_dir}: {e.strerror}") from None
        from roar_nb.store import Store

        p = cls(root)
        p._store = Store.create(roar_dir)
        p._store.active_session()  # created now, so `roar run` only ever reads it
        return p, created

    @property
    def store(self):
        if self._store is None:
            from roar_nb.store import Store

            self._store = Store(self.roar_dir)
            ingest_pending(self)
        return self._store

    @property
    def config(self) -> cfg_mod.Config:
        if self._config is None:
            self._config = cfg_mod.Config(self.roar_dir)
        return self._config

    def read_filter(self) -> Callable[[str], bool]:
        """A predicate: True for reads that are dropped (system, packages, caches, .roar/)."""
        prefixes, markers = cfg_mod.read_filters(self.config)
        # roar's own package (an editable install lives outside site-packages): its modules are
        # read by `roar get`/`roar put` jobs and by code that imports roar, never user data.
        prefixes = prefixes + (self.roar_dir + "/", os.path.dirname(os.path.abspath(cfg_mod.__file__)) + "/")

        def ignore(p: str) -> bool:
            if p.startswith("/dev/shm/"):  # a tmpfs of real files, under the dropped /dev/
                return any(m in p for m in markers)
            return p.startswith(prefixes) or any(m in p for m in markers)

        return ignore


# --- recording ------------------------------------------------------------------

# Notes of input edges that the use cases read back (reproduce.py).
GONE = "gone by the end of the job"  # an input the job itself deleted or renamed
UNKNOWN_VERSION = "version at open unknown"  # changed in place from bytes roar never recorded

@record
class JobDraft:
    """Everything about a job except what capture and hashing find out."""

    kind: str
    command: str
    cwd: str
    started_at: float
    session_id: str
    argv: tuple = ()
    step: str | None = None
    ended_at: float = 0.0
    exit_code: int | None = None
    status: str = "ok"
    backend: str = "preload"
    capture_level: str = CAPTURE_COMPLETE
    capture_notes: list = factory(list)
    source: str | None = None
    preamble: str | None = None
    notebook: str | None = None
    cell_id: str | None = None
    execution_count: int | None = None
    kernel_id: str | None = None
    git: object = None  # gitinfo.GitInfo
    id: str = factory(new_id)


def step_identity(command: str, cwd: str) -> str:
    from roar_nb.hashing import hash_bytes

    return hash_bytes(f"{cwd}\0{command}".encode("utf-8", "surrogateescape"))[:16]


class PendingNote(str):
    """The warning that says a job went to .roar/pending/ instead of the database: front
    ends print it as the job's one line (there is no @N yet) rather than as a warning.
    `once` says the same without naming the job, for a front end that tells it once
    (a kernel whose every cell would repeat it)."""

    once: str = ""


# The longest a notebook cell's recording waits for another process's write lock before
# its job goes to pending/: a kernel must not freeze behind `roar run` (the busy timeout
# is 60 s), while ordinary contention (other jobs' few-ms transactions) still gets through.
CELL_LOCK_WAIT_S = 0.25


class _CacheRows:
    """The store as hash_paths sees it, except that hash-cache rows are kept for the
    job's own transaction (one wait for the write lock per job, not two)."""

    def __init__(self, store):
        self.store = store
        self.rows: list = []

    def cache_lookup(self, keys):
        return self.store.cache_lookup(keys)

    def cache_store(self, rows):
        self.rows.extend(rows)


def record_job(project: Project, draft: JobDraft, capture: CaptureResult,
               store_problem: str | None = None, wait: float | None = None,
               s3: CaptureResult | None = None, setup: CaptureResult | None = None,
               ray: CaptureResult | None = None, after: list = ()) -> tuple[Job, list[str]]:
    """Hash what the job touched and store it. Returns (job, warnings). Never loses the job:
    if the database cannot take it, the job is kept in .roar/pending/ (then `job.seq` is 0
    and the last warning is a PendingNote) and stored by the next roar command.

    `capture` is what the tracer (or the kernel's capture) saw; `s3` what the S3 proxy saw
    (its edges already hashed by the proxy, `roar_nb.proxy.to_edges`); `setup` what the
    front end knew before and around the run (the tracer chosen and why, a proxy that did
    not start, a deleted working directory, a step timeout); `ray` what the merge of the
    job's Ray tasks could not see. Their backend, levels and notes are folded into the
    job here and nowhere else (`capture.result.fold`).
    `store_problem`: why the caller already knows the store cannot be used. `wait`: the
    longest this call may wait for another writer's lock (default: the busy timeout);
    a notebook cell passes a short one, so a held lock sends the job to pending at once.
    `after`: (job, ray_tasks row) pairs of the job's Ray tasks, stored with it in one
    transaction (or kept in pending with it).
    """
    from roar_nb import environment
    from roar_nb.hashing import hash_paths

    results = [r for r in (setup, capture, s3, ray) if r is not None]
    for r in results:
        fold_capture(draft, r)
    reduced = capture.events if capture.events is not None else ev_mod.reduce([])
    s3_edges = next((r.s3 for r in results if r.s3 is not None), None)
    warnings: list[str] = list(project.config.warnings)
    ev_mod.settle_updates(reduced)
    ignore = project.read_filter()
    roar_prefix = project.roar_dir + "/"
    inputs = {p: v for p, v in reduced.inputs.items() if not ignore(p)}
    outputs = [p for p in reduced.outputs if not p.startswith(roar_prefix)]
    out_set = set(outputs)
    # Files this job changed in place (or read and then rewrote): the version it saw at open
    # is an input, but those bytes are gone now. Look them up before hashing, which
    # replaces the hash cache's row for the file's inode with the version at the end.
    at_open = {p: v for p, v in inputs.items() if p in out_set}
    for p, v in reduced.updated.items():
        if p in out_set and not ignore(p):
            at_open.setdefault(p, v)

    store = None
    if store_problem is None:
        try:
            store = project.store
        except RoarError as e:
            store_problem = str(e)
    seen_versions = _versions_at_open(store, at_open)
    cache = _CacheRows(store) if store is not None else None
    hashed = hash_paths(
        list(inputs) + outputs, store=cache,
        extra=project.config.get("hash.extra"),
        progress_after=project.config.get("hash.progress_after"),
    )
    ins = []
    for p, (size, mtime_ns) in at_open.items():
        ins.append(_version_edge(p, size, seen_versions.get(p), "rewritten" if p in inputs else "updated in place"))
    for p, (size, mtime_ns) in inputs.items():
        h = hashed[p]
        if p in at_open:
            continue
        if h.hash is None:
            # Gone by the end (the job deleted or renamed what it read): the version it read
            # is still known if roar recorded those bytes.
            gone = _versions_at_open(store, {p: (size, mtime_ns)}) if not os.path.lexists(p) else {}
            ins.append(Edge("in", p, gone[p], size, False, "version at open; " + GONE)
                       if p in gone else Edge("in", p, None, 0, False, h.error))
            continue
        changed = h.changed or (mtime_ns >= 0 and h.key is not None and
                                (h.key[2] != size or h.key[3] != mtime_ns))
        ins.append(Edge("in", p, h.hash, h.size, changed, "modified while the job ran" if changed else None))
    outs = []
    for p in outputs:
        h = hashed[p]
        if h.hash is None and h.error == "not a regular file":
            continue  # e.g. a FIFO or a directory created with O_CREAT semantics
        outs.append(Edge("out", p, h.hash, h.size, h.changed, h.error, reduced.created.get(p)))
    digests = {h.hash: h.digests for h in hashed.values() if h.hash and h.digests}
    if s3_edges is not None:
        ins += s3_edges[0]
        outs += s3_edges[1]
        for h, d in s3_edges[2].items():
            digests.setdefault(h, {}).update(d)
    # The kernel refuses a name longer than PATH_MAX, so such a file cannot be opened (or
    # hashed) by its absolute path: its edge stays, without a hash, and the job says so.
    too_long = [e.path for e in (*ins, *outs) if e.hash is None and len(os.fsencode(e.path)) >= 4096]
    if too_long:
        draft.capture_notes.append(f"{len(too_long)} file(s) recorded without a hash: the path is longer than "
                                   f"PATH_MAX (4096 bytes), e.g. {ascii('...' + too_long[0][-50:])}")
        if draft.capture_level == CAPTURE_COMPLETE:
            draft.capture_level = CAPTURE_PARTIAL

    env_id, py, plat, pkgs = environment.snapshot()
    git = draft.git.settle() if draft.git is not None else None
    job = Job(
        id=draft.id, session_id=draft.session_id, seq=0, kind=draft.kind,
        step=draft.step or step_identity(draft.command, draft.cwd), command=draft.command,
        cwd=draft.cwd, started_at=draft.started_at, ended_at=draft.ended_at or time.time(),
        exit_code=draft.exit_code, status=draft.status, backend=draft.backend,
        capture_level=draft.capture_level, capture_notes=tuple(draft.capture_notes),
        argv=tuple(draft.argv), source=draft.source, preamble=draft.preamble, notebook=draft.notebook,
        cell_id=draft.cell_id,
        execution_count=draft.execution_count, kernel_id=draft.kernel_id,
        git_commit=git.commit if git else None, git_branch=git.branch if git else None,
        git_dirty=git.dirty if git else None, git_root=git.root if git else None, env_id=env_id,
        inputs=tuple(ins), outputs=tuple(outs),
    )
    environment_row = (env_id, py, plat, pkgs)
    if store is not None:
        try:
            if wait is not None:
                with store.wait_at_most(wait):
                    return _insert(project, store, job, digests, environment_row, cache.rows,
                                   reduced.nested_jobs, after), warnings
            return _insert(project, store, job, digests, environment_row, cache.rows,
                           reduced.nested_jobs, after), warnings
        except RoarError as e:
            store_problem = str(e)
    _save_pending(project, job, digests, environment_row, warnings, store_problem, reduced.nested_jobs, after)
    return job, warnings


def _insert(project: Project, store, job: Job, digests, env_row, cache_rows, children=(), after=()) -> Job:
    if project._spooled:
        # This process sent jobs to pending earlier: they started first, so they get their
        # @N first, now that the database takes writes again.
        ingest_pending(project)
    if not job.session_id:
        job = replace(job, session_id=store.active_session().id)
    after = [(j if j.session_id else replace(j, session_id=job.session_id), row) for j, row in after]
    return store.insert_job(job, digests, env_row, cache_rows, children, after)


def _versions_at_open(store, at_open: dict) -> dict:
    """path -> blake3 of the version a job saw at open, for files it has since changed.

    Only a version roar hashed before (hash cache, or a recorded edge at that path)
    with the same (size, mtime) counts; an empty file is the hash of no bytes.
    """
    out: dict = {}
    for p, (size, mtime_ns) in at_open.items():
        if size == 0 and mtime_ns >= 0:
            from roar_nb.hashing import hash_bytes

            out[p] = hash_bytes(b"")
        elif store is not None and mtime_ns >= 0:
            try:
                h = store.hash_of_version(p, size, mtime_ns)
            except RoarError:
                h = None
            if h is not None:
                out[p] = h
    return out


def _version_edge(path: str, size: int, h: str | None, how: str) -> Edge:
    """The input edge of the version at open of a file the job changed (see `_versions_at_open`)."""
    if h is None:
        # Never a guessed hash: a wrong version would link the job to the wrong producer.
        return Edge("in", path, None, size, False,
                    f"{how} by this job; {UNKNOWN_VERSION}: roar never recorded those bytes")
    return Edge("in", path, h, size, False, f"version at open; {how} by this job")


def _job_to_json(job: Job) -> dict:
    d = asdict(job)
    for k in ("inputs", "outputs"):
        d[k] = [asdict(e) for e in getattr(job, k)]
    return d


def _job_from_json(project: Project, jd: dict, session_id: str = "") -> Job:
    jd["inputs"] = tuple(Edge(**e) for e in jd["inputs"])
    jd["outputs"] = tuple(Edge(**e) for e in jd["outputs"])
    for k in ("capture_notes", "argv"):
        jd[k] = tuple(jd[k])
    if not jd.get("session_id"):  # the DB was unreadable when the job ran
        jd["session_id"] = session_id or project._store.active_session().id
    return Job(**jd)


PENDING = "pending"


def _save_pending(project: Project, job: Job, digests, env_row, warnings: list[str],
                  reason: str | None, children: list = (), after: list = ()) -> None:
    import json

    pending = os.path.join(project.roar_dir, PENDING)
    rel = os.path.join(cfg_mod.ROAR_DIR, PENDING) + "/"
    why = f": {reason}" if reason else ""
    tmp = os.path.join(pending, f"{job.id}.tmp")
    try:
        os.makedirs(pending, exist_ok=True)
        with open(tmp, "w") as f:
            f.write(json.dumps({"job": _job_to_json(job), "digests": digests, "env": env_row,
                                "children": list(children),
                                "after": [[_job_to_json(j), row] for j, row in after]}))
        os.replace(tmp, os.path.join(pending, f"{job.id}.json"))
        project._spooled = True
        note = PendingNote(f"job kept in pending ({rel}{job.id}.json{why}); a later roar command stores it"
                           " once the database takes writes")
        # Said once per kernel: the same words for every cell, whatever each one waited.
        note.once = f"jobs are kept in {rel} until the database takes them{why.partition(' (waited ')[0]}"
        warnings.append(note)
    except OSError as e:
        try:
            os.unlink(tmp)  # a full disk must not leave litter behind
        except OSError:
            pass
        note = PendingNote(f"job not recorded: it could not be kept in {rel} either ({e.strerror or e}){why}")
        note.once = note
        warnings.append(note)


# A `.tmp` older than this was left by a process that died while writing it.
_STALE_TMP_S = 600.0


def ingest_pending(project: Project) -> int:
    """Store jobs that an earlier process could not write, oldest job first (so `@N`
    follows the order the jobs ran in). Stops at the first that the database refuses
    as locked or read-only: one wait, not one per file. Returns how many were stored."""
    pending = os.path.join(project.roar_dir, PENDING)
    try:
        names = os.listdir(pending)
    except OSError:
        return 0
    if not names:
        return 0
    import json

    docs = []
    now = time.time()
    for name in names:
        f = os.path.join(pending, name)
        if name.endswith(".tmp"):
            try:
                if now - os.stat(f).st_mtime > _STALE_TMP_S:
                    os.unlink(f)
            except OSError:
                pass
            continue
        if not name.endswith(".json"):
            continue
        try:
            with open(f) as fh:
                doc = json.loads(fh.read())
            docs.append((float(doc["job"]["started_at"]), name, f, doc))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    docs.sort(key=lambda d: (d[0], d[1]))
    n = 0
    for _, _, f, doc in docs:
        try:
            job = _job_from_json(project, doc["job"])
            after = [(_job_from_json(project, j, job.session_id), row) for j, row in doc.get("after") or ()]
        except (ValueError, KeyError, TypeError, RoarError):
            continue
        try:
            project._store.insert_job(job, doc.get("digests"), tuple(doc["env"]) if doc.get("env") else None,
                                      children=doc.get("children") or (), after=after)
        except StoreError as e:
            if "locked" in str(e) or "read-only" in str(e):
                break
            if "UNIQUE" not in str(e):
                continue
            # Stored already by a process that died before removing the file.
        try:
            os.unlink(f)
            n += 1
        except OSError:
            continue
    if n == len(docs):
        project._spooled = False
    return n


# --- running commands -------------------------------------------------------------

@record
class RunResult:
    job: Job | None
    returncode: int  # as subprocess reports it: negative for a signal
    warnings: list
    error: str | None = None  # the command could not be started (not found, not executable)


def run_command(project: Project, argv: list[str], kind: str = "run",
                session: Session | None = None, tracer: str | None = None,
                step: str | None = None, cwd: str | None = None,
                timeout: float | None = None, extra_env: dict | None = None,
                proxy: bool | None = None) -> RunResult:
    """Run `argv` under tracing, passing stdio, exit code and signals through; record the job.

    `cwd` defaults to the current directory; `timeout` (seconds) kills the command
    (recorded as failed, exit -9); `extra_env` is laid over the environment.

    The command runs even when roar cannot record it: a database that cannot be
    opened or written, a bad config value or tracer name only cost the record
    (kept in .roar/pending/ where possible) and add a warning. Once the command
    has run, nothing here raises: its exit status is what the caller gets.
    `proxy`: route S3 through a job-scoped proxy (None: as configured; True: required,
    so a proxy that cannot start raises ProxyError before anything runs).
    """
    if not argv:
        raise UsageError("no command given")
    from roar_nb.gitinfo import read_git

    warnings: list[str] = []
    # Inside a traced command or cell (a Makefile rule, `!roar run`): this job records its
    # own I/O, so stop the enclosing trace from recording us and our command, and tell it
    # which job we are (it becomes our parent_job_id).
    outer_trace = None
    if os.environ.get(cfg_mod.ENV_TRACE_DIR):
        from roar_nb.capture import preload as preload_mod

        outer_trace = preload_mod.detach_from_outer_trace()
    base_env = dict(os.environ)
    # A job of its own: its processes must not follow a kernel's control block (if this
    # `roar run` was started from a notebook cell) but record into this job's directory.
    base_env.pop(cfg_mod.ENV_CONTROL, None)
    base_env.update(extra_env or {})
    store = None
    store_problem = None
    try:
        store = project.store
        session = session or store.active_session()
        base_env.update(store.env_vars())
    except RoarError as e:
        # The DB is locked, corrupt, read-only or too new: run anyway, keep the job pending.
        store_problem = str(e)
        session = None
    here = _getcwd()
    spawn_dir = None  # None: the child starts where roar runs (even a deleted directory)
    if cwd:
        cwd = os.path.abspath(cwd)
        spawn_dir = None if cwd == here else cwd
    else:
        cwd = here or os.environ.get("PWD") or "/"
    draft = JobDraft(kind=kind, command=join_argv(argv), cwd=cwd, argv=tuple(argv),
                     started_at=time.time(), session_id=session.id if session else "", step=step)
    if outer_trace is not None:
        ev_mod.announce_nested_job(outer_trace, draft.id)
    # What is known before the command runs, and while it runs: folded by record_job.
    setup = CaptureResult()
    if here is None and spawn_dir is None:
        setup.notes.append("the working directory had been deleted; cwd is $PWD")
    from roar_nb.capture import select as select_mod

    tracer = tracer or os.environ.get(cfg_mod.ENV_TRACER)
    if tracer and tracer not in select_mod.TRACERS:
        warnings.append(f"unknown tracer {tracer!r} in ${cfg_mod.ENV_TRACER}; using auto")
        tracer = None
    tracer = tracer or project.config.get("tracer.default")  # validated: a bad value is the default
    trace_dir = ""
    running_proxy = None
    try:
        draft.git = read_git(cwd)
        trace_dir = ev_mod.make_trace_dir(draft.id, os.path.join(project.roar_dir, "traces"))
        run_argv = ray_mod.prepare(project, base_env, str(trace_dir), list(argv), cwd, setup)
        if proxy or (proxy is None and _proxy_wanted(project)):
            # Before `select`, which builds the child's environment: it gains the endpoint.
            running_proxy = _start_job_proxy(project, str(trace_dir), base_env, setup, required=bool(proxy))
        sel = select_mod.select(tracer, run_argv, base_env, str(trace_dir), cwd)  # decided before running
    except ProxyError:  # only when the proxy is required (roar get/put): nothing has run yet
        raise
    except Exception as e:  # noqa: BLE001 - roar failing to prepare must not stop the command
        why = e.strerror if isinstance(e, OSError) and e.strerror else f"{type(e).__name__}: {e}"
        sel = select_mod.Selection("none", list(argv), dict(base_env), None,
                                   [f"tracing could not be prepared ({why}); the command ran untraced"], True)
    setup.backend = sel.backend
    setup.notes.extend(sel.notes)
    if sel.partial:
        setup.capture_level = CAPTURE_PARTIAL

    child_argv, child_env = _die_with_roar(sel)
    error = None
    waiter = _ChildWaiter()
    try:
        try:
            if child_argv[0] != argv[0]:  # wrapped by a tracer: fail like Popen(argv) would
                select_mod.check_runnable(argv, base_env, cwd)
            rc = waiter.run(child_argv, child_env, spawn_dir, timeout, setup.notes)
        except FileNotFoundError:
            rc, error = 127, f"command not found: {argv[0]}"
        except PermissionError:
            rc, error = 126, f"permission denied: {argv[0]}"
        except OSError as e:  # e.g. the recorded directory of `roar run @N` is gone
            rc, error = 126, f"cannot run {argv[0]}: {e.strerror or e}"
        job = None
        try:
            job = _finish_run(project, draft, setup, sel, select_mod, str(trace_dir), rc, store_problem, warnings,
                              running_proxy)
        except Exception as e:  # noqa: BLE001 - the command ran: its status must reach the caller
            warnings.append(f"internal error, job not recorded: {type(e).__name__}: {e}")
        if trace_dir:
            remove_trace_dir(str(trace_dir))
    finally:
        waiter.restore()
    return RunResult(job, rc, warnings, error)


def _finish_run(project, draft, setup, sel, select_mod, trace_dir, rc, store_problem, warnings,
                running_proxy=None) -> Job:
    draft.ended_at = time.time()
    draft.exit_code = rc
    draft.status = "ok" if rc == 0 else "failed"
    capture = CaptureResult()
    if sel.trace_dir is not None:
        events, problems = ev_mod.read_trace_dir(trace_dir)
        backend, notes, partial = select_mod.finish(sel)
        capture = CaptureResult(backend=backend, notes=[*notes, *problems],
                                capture_level=CAPTURE_PARTIAL if partial or problems else CAPTURE_COMPLETE)
    else:
        events = []
    s3 = _finish_job_proxy(project, running_proxy, trace_dir) if running_proxy is not None else None
    events, ray_tasks, ray_said = ray_mod.merge(project, draft, trace_dir, events)  # Ray tasks: child jobs
    capture.events = ev_mod.reduce(events)
    job, more = record_job(project, draft, capture, store_problem=store_problem, s3=s3, setup=setup,
                           ray=ray_said, after=ray_tasks)
    warnings.extend(more)
    return job


def _die_with_roar(sel) -> tuple[list, dict]:
    """The argv and env that run the command so that it dies if roar is killed (SIGKILL
    cannot be relayed): the native side reads $ROAR_DIE_WITH (roar's pid), sets
    PR_SET_PDEATHSIG and removes the variable before the program's main. The preload
    library does it in its constructor, roar-ptrace in its front process; untraced
    commands go through `roar-ptrace --exec-only` (nothing else: one exec). Without a
    native part, the command runs untied rather than with a stray variable."""
    from roar_nb.capture import ptrace

    argv, env = sel.argv, sel.env
    if sel.backend == "none":
        launcher = ptrace.binary_path()
        if launcher is None:
            return argv, env
        argv = [launcher, "--exec-only", "--", *argv]
    env[cfg_mod.ENV_DIE_WITH] = str(os.getpid())
    return argv, env


def _getcwd() -> str | None:
    """The current directory, or None when it has been deleted (the command still runs there)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def _proxy_wanted(project: Project) -> bool:
    env = os.environ.get(cfg_mod.ENV_PROXY)
    if env is not None and env != "":
        return env not in ("0", "false", "no", "off")
    return bool(project.config.get("proxy.enabled"))


def _start_job_proxy(project: Project, trace_dir: str, env: dict, setup: CaptureResult, required: bool = False):
    """A proxy for this job only, its events in the job's trace dir; `env` gains the endpoint.

    On failure the command still runs (unrouted): `setup` makes the job partial, with the
    reason; unless the proxy is `required` (roar get/put), then ProxyError is raised."""
    from roar_nb import proxy as proxy_mod
    from roar_nb.errors import ProxyError

    try:
        # Its active-storage listener too (a free port): reductions the command asks of it
        # (roar_nb.activestorage) become the job's inputs like its GETs.
        running = proxy_mod.start(trace_dir, os.path.join(trace_dir, "proxy.log"),
                                  upstream=proxy_mod.upstream_for(project.config.get("proxy.upstream"), env),
                                  region=project.config.get("proxy.region"), env=dict(env),
                                  active_port=0, extra=proxy_mod.active_args(project.config))
    except ProxyError as e:
        if required:
            remove_trace_dir(trace_dir)
            raise
        setup.missed(f"S3 proxy not started ({e}); S3 I/O not captured")
        return None
    env.update(proxy_mod.child_env(running.url, running.active_url))
    return running


def _finish_job_proxy(project: Project, running, trace_dir: str) -> CaptureResult:
    """Stops the job's proxy; what it saw as a capture result (S3 edges; partial with a note
    when it stopped badly or its events could not all be read)."""
    from roar_nb import proxy as proxy_mod

    problems = []
    note = running.stop()
    if note:
        problems.append(note)
    events, more = proxy_mod.read_events(trace_dir)
    problems.extend(more)
    try:
        store = project.store
        lookup = lambda etag: store.hash_by_digest("s3.etag", etag)  # noqa: E731
    except RoarError:
        lookup = None
    return CaptureResult(s3=proxy_mod.to_edges(events, lookup), notes=problems,
                         capture_level=CAPTURE_PARTIAL if problems else CAPTURE_COMPLETE)


def remove_trace_dir(path: str) -> None:
    """Delete a job's trace directory (flat: one event file per process); errors ignored.

    Not shutil.rmtree: importing shutil costs `roar run` several milliseconds."""
    try:
        names = os.listdir(path)
    except OSError:
        return
    for n in names:
        try:
            os.unlink(os.path.join(path, n))
        except OSError:
            pass
    try:
        os.rmdir(path)
    except OSError:
        pass


# Signals that another process may send to roar's own pid (CI runners, orchestrators,
# Popen.terminate()) and that are meant for the command: forwarded to it while it runs.
_FORWARD = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1,
            signal.SIGUSR2, signal.SIGCONT)
# Python ignores these at start-up; posix_spawn would pass that on, so they are reset.
_PYTHON_IGNORED = (signal.SIGPIPE, signal.SIGXFSZ)
_POLL_S = 0.25  # the longest the wait goes without looking at the child (see _ChildWaiter._wait)
_SI_KERNEL = 0x80  # si_code of a signal the kernel raised itself (the terminal's ^C, ^\\)


class _ChildWaiter:
    """Runs one child and waits for it like a shell would, relaying signals.

    The child starts with the signal mask and dispositions roar itself was started
    with (Python's ignored SIGPIPE/SIGXFSZ reset to default, caught ones reset by
    exec). While it runs, the signals in `_FORWARD` are blocked in roar and taken
    with sigwaitinfo: one sent to roar's pid by another process (si_code <= 0) is
    relayed to the child; one raised by the kernel (^C, ^\\ from the terminal, which
    reach the whole foreground process group and so the child directly) is not.
    A signal ignored when roar started stays ignored and is not relayed. A child
    that stops (SIGSTOP, ^Z) stops roar too, so a shell sees the job stopped and
    `fg`/SIGCONT resumes both; the wait never hangs on a stopped child.
    Signals that reach roar after the command ended are held until the job is
    recorded (restore()): SIGINT/SIGQUIT are then dropped (the command they were
    aimed at is gone), the others act on roar.
    """

    def __init__(self):
        self.mask = None
        self.waited: tuple = ()

    def run(self, argv, env, chdir, timeout, notes) -> int:
        waited = [signal.SIGCHLD]
        sigdef = list(_PYTHON_IGNORED)
        for s in _FORWARD:
            if signal.getsignal(s) == signal.SIG_IGN:
                continue  # inherited as ignored (nohup, a background job): the child inherits it too
            waited.append(s)
            sigdef.append(s)
        self.waited = tuple(waited)
        self.mask = signal.pthread_sigmask(signal.SIG_BLOCK, self.waited)
        kw = {"setsigmask": self.mask, "setsigdef": sigdef}
        if chdir is None:
            pid = os.posix_spawnp(argv[0], argv, env, **kw)
        else:
            # posix_spawn has no working-directory attribute: move there for the spawn
            # only (roar is single-threaded here), and come back through a descriptor.
            back = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.chdir(chdir)
                try:
                    pid = os.posix_spawnp(argv[0], argv, env, **kw)
                finally:
                    os.fchdir(back)
            finally:
                os.close(back)
        return self._wait(pid, timeout, notes)

    def _wait(self, pid: int, timeout: float | None, notes: list) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            done, status = os.waitpid(pid, os.WNOHANG | os.WUNTRACED)
            if done:
                if os.WIFSTOPPED(status):
                    _stop_with_child(pid)
                    continue
                return os.waitstatus_to_exitcode(status)
            # Bounded: in a process with other threads (a kernel running `%roar reproduce`)
            # SIGCHLD may be taken, and dropped, by a thread that does not block it.
            wait = _POLL_S if deadline is None else min(_POLL_S, deadline - time.monotonic())
            info = signal.sigtimedwait(self.waited, wait) if wait > 0 else None
            if info is None:
                if deadline is not None and time.monotonic() >= deadline:
                    os.kill(pid, signal.SIGKILL)
                    notes.append(f"killed after the {timeout:g} s step timeout")
                    deadline = None
                continue
            if info.si_signo != signal.SIGCHLD and info.si_code < _SI_KERNEL and info.si_pid != pid:
                try:
                    os.kill(pid, info.si_signo)
                except OSError:
                    pass  # already gone: the next waitpid says how

    def restore(self) -> None:
        if self.mask is None:
            return
        for s in (signal.SIGINT, signal.SIGQUIT):
            if s in self.waited:
                while signal.sigtimedwait((s,), 0) is not None:
                    pass
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        self.mask = None


def _stop_with_child(pid: int) -> None:
    """The child stopped: stop roar too (a shell then sees the job stopped), and when roar
    is continued, continue the child. Skipped if the child already runs again (the
    terminal's ^Z stopped both, and `fg` continued both before we looked)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rpartition(b")")[2].split()[0]
    except (OSError, IndexError):
        state = b"T"
    if state not in (b"T", b"t"):
        return
    os.kill(os.getpid(), signal.SIGSTOP)
    try:
        os.kill(pid, signal.SIGCONT)
    except OSError:
        pass
