"""The lineage store: .roar/roar.db (SQLite, WAL). The only code that writes SQL.

Hot-path writes and reads (`roar run`, `roar status`, `roar show`) go through a
stdlib `sqlite3` connection; sqlite-utils, ~90 ms to import, is used only for
migrations (store/schema.py) and is offered lazily as `Store.utils` to
long-lived processes. Several kernels, CLIs and Ray drivers may write at once:
every write is one short `BEGIN IMMEDIATE` transaction under a busy timeout, and
all rows of one job are written in one transaction.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable

from roar_nb import present
from roar_nb.lean import json as _json
from roar_nb.lean import json_string_list as _json_string_list
from roar_nb.lean import json_string_map as _json_string_map
from roar_nb.lean import json_strings as _json_strings
from roar_nb.errors import AmbiguousRef, RefNotFound, StoreError
from roar_nb.model import (
    Artifact, ArtifactUse, Edge, Environment, Job, LabelVersion, Reproduction, Session, SessionStats, new_id,
    replace,
)
from roar_nb.store import schema

# How long a writer waits for another's transaction; ROAR_BUSY_TIMEOUT (seconds) overrides it.
# The ray_tasks columns after job_id, as the Ray merge's rows name them (roar_nb/ray/fragments.py).
RAY_TASK_FIELDS = ("task_id", "attempt", "actor_id", "node_id", "worker_id", "pid", "function", "status",
                   "exception_type")
BUSY_TIMEOUT_S = float(os.environ.get("ROAR_BUSY_TIMEOUT") or 60.0)


def path_to_db(path: str) -> tuple[str, bytes | None]:
    """(text, raw): text is the path as every view shows it (present.text: non-UTF-8 bytes and
    control characters as `\\xNN`); raw keeps the exact bytes when the text differs."""
    text = present.text(path)
    return (text, None) if text == path else (text, os.fsencode(path))


def path_from_db(text: str, raw: bytes | None) -> str:
    return os.fsdecode(raw) if raw is not None else text


_DB_FILES = ("roar.db", "roar.db-wal", "roar.db-shm")


def owner_only(roar_dir: str) -> None:
    """Make .roar/ 0700 and the database files 0600 when they are ours and looser than that.

    The DB holds `roar env set` values (often credentials), commands and paths. SQLite
    gives -wal/-shm the mode of the DB file, and 0700 on the directory covers pending/,
    traces/ and config.toml. Projects made before this rule are tightened on open; a file
    we do not own (or cannot chmod) is left as it is: recording must not fail over this.
    """
    uid = os.geteuid()
    for name, mode in (("", 0o700), *((f, 0o600) for f in _DB_FILES)):
        path = os.path.join(roar_dir, name) if name else roar_dir
        try:
            st = os.stat(path)
            if st.st_uid == uid and st.st_mode & 0o077:
                os.chmod(path, mode & st.st_mode if name else mode)
        except OSError:
            pass


def _friendly(e: sqlite3.Error, where: str, waited: float | None = BUSY_TIMEOUT_S) -> StoreError:
    msg = str(e)
    if "locked" in msg or "busy" in msg:
        if waited:
            return StoreError(f"{where} is locked by another process (waited {waited:g}s)")
        return StoreError(f"{where} is locked by another process")
    if "not a database" in msg or "malformed" in msg:
        return StoreError(f"{where} is not a valid roar database ({msg}); move it aside and run `roar init`")
    if "readonly" in msg or "read-only" in msg:
        return StoreError(f"{where} is read-only")
    if "unable to open" in msg:
        return StoreError(f"{where} cannot be opened (is {os.path.dirname(where)}/ read-only or missing?)")
    return StoreError(f"{where}: {msg}")


def _refuse_empty(path: str) -> None:
    """A 0-byte roar.db (truncated by a full disk, a bad copy, `> roar.db`) would open as an
    empty database and be migrated into a new one: the history would vanish without a word."""
    try:
        if os.path.getsize(path) != 0:
            return
    except OSError:
        return
    try:
        if os.path.getsize(path + "-wal") > 0:
            return  # everything is still in the write-ahead log: SQLite will read it
    except OSError:
        pass
    raise StoreError(f"{path} is empty (0 bytes); roar will not re-initialise it (its history would be"
                     " lost): restore it, or move it aside and run `roar init`")


def _repair_sidecars(path: str) -> None:
    """After a read-only episode (roar.db chmod'ed 0444 while roar ran), SQLite has created
    -shm/-wal with the database's mode then; once roar.db is writable again they would keep
    every connection read-only. Give them the database's mode back (only our own files can
    be chmod'ed; SQLite then reports what is still wrong)."""
    for side in (path + "-shm", path + "-wal"):
        if not os.access(side, os.W_OK) and os.path.exists(side) and os.access(path, os.W_OK):
            try:
                os.chmod(side, os.stat(path).st_mode & 0o666)
            except OSError:
                pass


class Store:
    """One open lineage database. Cheap to open; safe to share across threads of one process."""

    def __init__(self, roar_dir: str, readonly: bool = False):
        self.roar_dir = os.fspath(roar_dir)
        self.path = os.path.join(self.roar_dir, "roar.db")
        if not os.path.exists(self.path):
            raise StoreError(f"{self.path} does not exist; run `roar init`")
        _refuse_empty(self.path)
        if not readonly:
            _repair_sidecars(self.path)
        self._wait = BUSY_TIMEOUT_S  # the busy timeout in force on the connection
        self._limit = BUSY_TIMEOUT_S  # the longest a write may wait now (see wait_at_most)
        self._gave_up = False  # a write already waited in vain: later ones do not wait (see _tx)
        owner_only(self.roar_dir)
        try:
            uri = f"file:{self.path}?mode=ro" if readonly else str(self.path)
            self.conn = sqlite3.connect(
                uri, uri=readonly, timeout=BUSY_TIMEOUT_S, isolation_level=None,
                check_same_thread=False,
            )
            self.conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
            self.conn.execute("PRAGMA foreign_keys = ON")
            version = self.conn.execute("PRAGMA user_version").fetchone()[0]
            if version > schema.LATEST:
                # Written by a newer roar-nb: its tables may mean more than we know; never write.
                self.conn.close()
                raise StoreError(f"{self.path} has schema version {version}, newer than this roar-nb"
                                 f" knows ({schema.LATEST}); upgrade roar-nb to use it")
            if not readonly:
                self.conn.execute("PRAGMA synchronous = NORMAL")
                if version < schema.LATEST:
                    schema.migrate(self.conn, os.path.join(self.roar_dir, "migrate.lock"))
            elif version < schema.LATEST:
                raise StoreError(f"{self.path} needs a migration; run any roar command with write access")
        except sqlite3.Error as e:
            raise _friendly(e, self.path) from None
        self._utils = None
        self._known_envs: set[str] = set()  # environment rows this process knows exist

    @classmethod
    def create(cls, roar_dir: str) -> "Store":
        """Create (or open) the database in `roar_dir`, in WAL mode."""
        roar_dir = os.fspath(roar_dir)
        os.makedirs(roar_dir, mode=0o700, exist_ok=True)
        path = os.path.join(roar_dir, "roar.db")
        if os.path.exists(path):
            _refuse_empty(path)
        try:
            # Created 0600 before SQLite opens it: SQLite gives -wal/-shm the DB file's mode.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError as e:
            raise StoreError(f"cannot create {path}: {e.strerror}") from None
        try:
            conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
            conn.execute("PRAGMA journal_mode = WAL")
            conn.close()
        except sqlite3.Error as e:
            raise _friendly(e, path) from None
        return cls(roar_dir)

    def _set_wait(self, seconds: float) -> None:
        if seconds != self._wait:
            self.conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
            self._wait = seconds

    def wait_at_most(self, seconds: float):
        """Context manager: writes inside it wait at most `seconds` for another writer's lock
        (a notebook cell must not freeze its kernel behind `roar run`'s transaction)."""
        store = self

        class _Limit:
            def __enter__(self):
                self.before = store._limit
                store._limit = min(seconds, store._limit)

            def __exit__(self, *exc):
                store._limit = self.before
                return False

        return _Limit()

    @property
    def utils(self):
        """A sqlite_utils.Database on the same connection, for ad-hoc queries in long-lived processes."""
        if self._utils is None:
            import sqlite_utils

            self._utils = sqlite_utils.Database(self.conn)
        return self._utils

    def close(self) -> None:
        self.conn.close()

    # -- plumbing ------------------------------------------------------------
    def _q(self, sql: str, params: Iterable = ()) -> list[sqlite3.Row]:
        try:
            cur = self.conn.execute(sql, tuple(params))
            cols = [c[0] for c in cur.description] if cur.description else []
            return [dict(zip(cols, row)) for row in cur.fetchall()]
        except sqlite3.Error as e:
            raise _friendly(e, self.path) from None

    def _tx(self):
        """One write transaction. Its wait for another writer is paid at most once per
        Store: after a write gave up on the lock, later ones try without waiting (and go
        to pending at once) until one succeeds."""
        store = self

        class _Tx:
            def __enter__(self):
                try:
                    store._set_wait(0 if store._gave_up else store._limit)
                    store.conn.execute("BEGIN IMMEDIATE")
                except sqlite3.Error as e:
                    err = _friendly(e, store.path, store._wait)
                    if "locked" in str(err):
                        store._gave_up = True
                    raise err from None
                return store.conn

            def __exit__(self, et, ev, tb):
                try:
                    store.conn.execute("COMMIT" if et is None else "ROLLBACK")
                except sqlite3.Error as e:
                    if et is None:
                        raise _friendly(e, store.path) from None
                if isinstance(ev, sqlite3.Error):
                    raise _friendly(ev, store.path) from None
                if et is None:
                    store._gave_up = False  # the lock is free again: wait normally next time
                return False

        return _Tx()

    # -- consistent reads (long-lived readers such as the server extension) ----
    def snapshot(self):
        """Context manager: every read inside it sees one snapshot of the database.

        `jobs()` reads `jobs` and then `job_io` in separate statements; a reader
        that must never show a half-written or half-deleted job (the JupyterLab
        panel polls while kernels write) wraps its reads in this deferred read
        transaction, which WAL pins to one snapshot. Read-only: it never takes the
        write lock and always ends with ROLLBACK. Not reentrant; callers sharing
        the connection across threads serialise their use of it.
        """
        store = self

        class _Snap:
            def __enter__(self):
                try:
                    store.conn.execute("BEGIN DEFERRED")
                except sqlite3.Error as e:
                    raise _friendly(e, store.path) from None
                return store

            def __exit__(self, et, ev, tb):
                try:
                    store.conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass  # nothing was written; a failed rollback loses nothing
                return False

        return _Snap()

    def change_token(self) -> str:
        """A short string that changes whenever a job or session is added, removed or replaced.

        Cheap (aggregates over the rowid b-trees), so the JupyterLab panel can poll it
        every second and fetch the DAG only when it changed. `total(ended_at)` is
        there because SQLite reuses the highest rowid after `roar pop`: a popped
        and re-recorded job keeps count and max(rowid) but not its end time.
        """
        j = self._q("SELECT count(*) AS n, coalesce(max(rowid), 0) AS r, total(ended_at) AS t FROM jobs")[0]
        s = self._q("SELECT count(*) AS n, coalesce(max(rowid), 0) AS r FROM sessions")[0]
        return f"{j['n']}.{j['r']}.{j['t']:.6f}.{s['n']}.{s['r']}"

    # -- meta / sessions -----------------------------------------------------
    def meta_get(self, key: str) -> str | None:
        rows = self._q("SELECT value FROM meta WHERE key = ?", (key,))
        return rows[0]["value"] if rows else None

    def new_session(self, kind: str = "cli", name: str | None = None,
                    notebook: str | None = None, make_active: bool = False) -> Session:
        s = Session(id=new_id(), created_at=time.time(), kind=kind, name=name, notebook=notebook)
        with self._tx() as c:
            c.execute(
                "INSERT INTO sessions(id, created_at, kind, name, notebook) VALUES (?,?,?,?,?)",
                (s.id, s.created_at, s.kind, s.name, s.notebook),
            )
            if make_active:
                c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('active_session', ?)", (s.id,))
        return s

    def session(self, session_id: str) -> Session:
        rows = self._q("SELECT * FROM sessions WHERE id = ?", (session_id,))
        if not rows:
            raise RefNotFound(f"no session {session_id}")
        return Session(**rows[0])

    def sessions(self) -> list[SessionStats]:
        """Every session, oldest first, with its job count and latest job's end."""
        rows = self._q(
            "SELECT s.*, count(j.id) AS jobs, max(j.ended_at) AS last_job_at FROM sessions s "
            "LEFT JOIN jobs j ON j.session_id = s.id GROUP BY s.id ORDER BY s.created_at"
        )
        return [SessionStats(Session(**{k: r[k] for k in Session.__record_fields__}), r["jobs"], r["last_job_at"])
                for r in rows]

    def find_session(self, prefix: str) -> Session:
        # substr, not LIKE: `%` and `_` in what a user typed are characters, not wildcards.
        rows = self._q("SELECT * FROM sessions WHERE substr(id, 1, ?) = ?", (len(prefix), prefix.lower()))
        if not rows:
            raise RefNotFound(f"no session matches {prefix!r}")
        if len(rows) > 1:
            raise AmbiguousRef(f"session prefix {prefix!r} matches {len(rows)} sessions")
        return Session(**rows[0])

    def active_session(self, create: bool = True) -> Session | None:
        """The CLI's current session; created on first use."""
        sid = self.meta_get("active_session")
        if sid:
            rows = self._q("SELECT * FROM sessions WHERE id = ?", (sid,))
            if rows:
                return Session(**rows[0])
        if not create:
            return None
        return self.new_session("cli", make_active=True)

    def notebook_session(self, notebook: str) -> Session | None:
        """The most recent session of a notebook path, if any."""
        rows = self._q(
            "SELECT * FROM sessions WHERE notebook = ? ORDER BY created_at DESC LIMIT 1", (notebook,)
        )
        return Session(**rows[0]) if rows else None

    # -- environments ----------------------------------------------------------
    def has_environment(self, env_id: str) -> bool:
        return bool(self._q("SELECT 1 FROM environments WHERE id = ?", (env_id,)))

    def environment(self, env_id: str) -> Environment | None:
        rows = self._q("SELECT * FROM environments WHERE id = ?", (env_id,))
        if not rows:
            return None
        r = rows[0]
        return Environment(r["id"], r["python"], r["platform"], _json().loads(r["packages"] or "{}"))

    # -- jobs ------------------------------------------------------------------
    def hash_by_digest(self, algo: str, value: str) -> str | None:
        """The blake3 of an artifact recorded with this extra digest (e.g. an S3 ETag), if any."""
        row = self.conn.execute("SELECT hash FROM artifact_digests WHERE algo = ? AND value = ? LIMIT 1",
                                (algo, value)).fetchone()
        return row[0] if row else None

    def insert_job(self, job: Job, digests: dict | None = None,
                   environment: tuple | None = None, cache_rows: list | None = None,
                   children: Iterable = (), after: Iterable = ()) -> Job:
        """Write a job, its edges and new artifacts in one transaction; assigns `seq`.

        `digests` maps blake3 -> {algo: value}; `environment` is
        (env_id, python, platform, packages) when the job's environment is new;
        `cache_rows` are hash-cache rows (see cache_store) written in the same
        transaction, so a job waits for the write lock once, not twice.
        `children` are ids of jobs its command ran (nested `roar run`), which get
        this job as their `parent_job_id` (a job whose parent is already known, e.g.
        a Ray task, carries it in `job.parent_job_id`). `after`: (job, ray_tasks row) pairs
        stored right after this job, in the same transaction (its Ray tasks: numbered after
        it, in the order given).
        """
        if environment is not None and (environment[0] in self._known_envs or self.has_environment(environment[0])):
            # Usually known: encoding hundreds of packages as JSON for every job would be waste.
            self._known_envs.add(environment[0])
            environment = None
        with self._tx() as c:
            if environment is not None:
                env_id, python, platform, packages = environment
                c.execute(
                    "INSERT OR IGNORE INTO environments(id, python, platform, packages) VALUES (?,?,?,?)",
                    (env_id, python, platform, _json_string_map(packages)),
                )
                self._known_envs.add(env_id)
            seq = self._write_job(c, job, digests, cache_rows)
            children = list(children)
            if children:
                c.executemany("UPDATE jobs SET parent_job_id = ? WHERE id = ? AND id != ?",
                              [(job.id, child, job.id) for child in children])
            for child, row in after:
                self._write_job(c, child)
                if row is not None:
                    c.execute(
                        "INSERT INTO ray_tasks(job_id, task_id, attempt, actor_id, node_id, worker_id, pid,"
                        " function, status, exception_type) VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (child.id, *(row.get(k) for k in RAY_TASK_FIELDS)))
        return _replace(job, seq=seq)

    def _write_job(self, c, job: Job, digests: dict | None = None, cache_rows: list | None = None) -> int:
        """The rows of one job, inside the caller's transaction; returns its seq."""
        now = time.time()
        io_rows, art_rows = [], {}
        for e in (*job.inputs, *job.outputs):
            text, raw = path_to_db(e.path)
            io_rows.append((job.id, e.direction, text, raw, e.hash, e.size, int(e.changed), e.note,
                            None if e.created is None else int(e.created)))
            if e.hash is not None:
                art_rows[e.hash] = (e.hash, e.size, now)
        build = job.kind == "build"
        seq = c.execute(
            "SELECT coalesce(max(seq), 0) + 1 FROM jobs WHERE session_id = ? AND (kind = 'build') = ?",
            (job.session_id, build),
        ).fetchone()[0]
        c.execute(
            "INSERT INTO jobs(id, session_id, seq, kind, step, command, argv, cwd, source, notebook,"
            " cell_id, execution_count, kernel_id, started_at, ended_at, exit_code, status, backend,"
            " capture_level, capture_notes, git_commit, git_branch, git_dirty, git_root, env_id,"
            " preamble, parent_job_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                job.id, job.session_id, seq, job.kind, job.step, present.storable(job.command),
                # argv keeps exact bytes (JSON \udcNN escapes); command/cwd are text for display
                _json_strings(job.argv), present.storable(job.cwd), job.source, job.notebook, job.cell_id,
                job.execution_count, job.kernel_id, job.started_at, job.ended_at,
                job.exit_code, job.status, job.backend, job.capture_level,
                _json_strings(job.capture_notes), job.git_commit, job.git_branch,
                None if job.git_dirty is None else int(job.git_dirty), job.git_root, job.env_id,
                job.preamble, job.parent_job_id,
            ),
        )
        c.executemany(
            "INSERT OR IGNORE INTO artifacts(hash, size, first_seen) VALUES (?,?,?)", art_rows.values()
        )
        if digests:
            c.executemany(
                "INSERT OR IGNORE INTO artifact_digests(hash, algo, value) VALUES (?,?,?)",
                [(h, a, v) for h, d in digests.items() for a, v in d.items()],
            )
        c.executemany(
            "INSERT OR REPLACE INTO job_io(job_id, direction, path, path_raw, hash, size, changed, note,"
            " created) VALUES (?,?,?,?,?,?,?,?,?)",
            io_rows,
        )
        if cache_rows:
            c.executemany("INSERT OR REPLACE INTO hash_cache VALUES (?,?,?,?,?,?)", cache_rows)
        return seq

    def _jobs_from_rows(self, rows: list[dict], with_edges: bool = True) -> list[Job]:
        edges: dict[str, tuple[list, list]] = {r["id"]: ([], []) for r in rows}
        if with_edges and rows:
            ids = list(edges)
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                for e in self._q(
                    f"SELECT * FROM job_io WHERE job_id IN ({','.join('?' * len(chunk))})"
                    " ORDER BY rowid", chunk,
                ):
                    edge = Edge(e["direction"], path_from_db(e["path"], e["path_raw"]), e["hash"],
                                e["size"] or 0, bool(e["changed"]), e["note"],
                                None if e["created"] is None else bool(e["created"]))
                    edges[e["job_id"]][0 if e["direction"] == "in" else 1].append(edge)
        jobs = []
        for r in rows:
            ins, outs = edges[r["id"]]
            jobs.append(Job(
                id=r["id"], session_id=r["session_id"], seq=r["seq"], kind=r["kind"], step=r["step"],
                command=r["command"], cwd=r["cwd"], started_at=r["started_at"], ended_at=r["ended_at"],
                exit_code=r["exit_code"], status=r["status"], backend=r["backend"],
                capture_level=r["capture_level"],
                capture_notes=tuple(_json_string_list(r["capture_notes"] or "[]")),
                argv=tuple(_json_string_list(r["argv"] or "[]")), source=r["source"], notebook=r["notebook"],
                preamble=r.get("preamble"),
                cell_id=r["cell_id"], execution_count=r["execution_count"], kernel_id=r["kernel_id"],
                git_commit=r["git_commit"], git_branch=r["git_branch"],
                git_dirty=None if r["git_dirty"] is None else bool(r["git_dirty"]),
                git_root=r["git_root"], env_id=r["env_id"], parent_job_id=r.get("parent_job_id"),
                inputs=tuple(ins), outputs=tuple(outs),
            ))
        return jobs

    def jobs(self, session_id: str | None = None, limit: int | None = None,
             with_edges: bool = True, newest_first: bool = False) -> list[Job]:
        """Jobs of a session (or all), oldest first unless `newest_first`."""
        sql = "SELECT * FROM jobs"
        params: list = []
        if session_id is not None:
            sql += " WHERE session_id = ?"
            params.append(session_id)
        sql += " ORDER BY started_at DESC, rowid DESC" if newest_first else " ORDER BY started_at, rowid"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(limit)
        return self._jobs_from_rows(self._q(sql, params), with_edges)

    def job(self, job_id: str) -> Job:
        rows = self._q("SELECT * FROM jobs WHERE id = ?", (job_id,))
        if not rows:
            raise RefNotFound(f"no job {job_id}")
        return self._jobs_from_rows(rows)[0]

    def job_by_seq(self, session_id: str, seq: int, build: bool = False) -> Job | None:
        rows = self._q(
            "SELECT * FROM jobs WHERE session_id = ? AND seq = ? AND (kind = 'build') = ?",
            (session_id, seq, build),
        )
        return self._jobs_from_rows(rows)[0] if rows else None

    def jobs_by_id_prefix(self, prefix: str) -> list[Job]:
        rows = self._q("SELECT * FROM jobs WHERE substr(id, 1, ?) = ? LIMIT 20", (len(prefix), prefix.lower()))
        return self._jobs_from_rows(rows)

    def count_jobs(self, session_id: str | None = None) -> int:
        if session_id is None:
            return self._q("SELECT count(*) AS n FROM jobs")[0]["n"]
        return self._q("SELECT count(*) AS n FROM jobs WHERE session_id = ?", (session_id,))[0]["n"]

    def delete_job(self, job_id: str) -> None:
        with self._tx() as c:
            c.execute("DELETE FROM job_io WHERE job_id = ?", (job_id,))
            c.execute("DELETE FROM ray_tasks WHERE job_id = ?", (job_id,))
            c.execute("DELETE FROM jobs WHERE id = ?", (job_id,))

    # -- artifacts ---------------------------------------------------------------
    def hashes_by_prefix(self, prefix: str) -> list[str]:
        """The hashes of recorded artifacts that start with `prefix` (at most 20)."""
        return [r["hash"] for r in self._q("SELECT hash FROM artifacts WHERE substr(hash, 1, ?) = ? LIMIT 20",
                                           (len(prefix), prefix.lower()))]

    def artifact(self, hash_: str) -> Artifact | None:
        rows = self._q("SELECT hash, size FROM artifacts WHERE hash = ?", (hash_,))
        if not rows:
            return None
        digests = {r["algo"]: r["value"] for r in self._q(
            "SELECT algo, value FROM artifact_digests WHERE hash = ?", (hash_,))}
        return Artifact(rows[0]["hash"], rows[0]["size"], digests)

    def latest_hash_at_path(self, path: str) -> str | None:
        """The hash most recently recorded at `path` (written, else read)."""
        text, raw = path_to_db(path)
        rows = self._q(
            "SELECT io.hash FROM job_io io JOIN jobs j ON j.id = io.job_id"
            " WHERE io.path = ? AND io.path_raw IS ? AND io.hash IS NOT NULL"  # the exact bytes
            " ORDER BY j.ended_at DESC, io.direction = 'out' DESC LIMIT 1", (text, raw),
        )
        return rows[0]["hash"] if rows else None

    def hash_of_version(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The blake3 of the bytes that were at `path` with this (size, mtime_ns), if roar hashed them.

        First the hash cache row of the file's current inode (a file updated in place
        keeps it), then any cached version with that size and mtime whose hash was
        recorded at `path` (a file replaced by rename). None when roar never saw it.
        """
        try:
            st = os.stat(path)
            key = (st.st_dev, st.st_ino)
        except OSError:
            key = None
        text, _ = path_to_db(path)
        if key is not None:
            rows = self._q("SELECT hash FROM hash_cache WHERE dev = ? AND ino = ? AND size = ? AND mtime_ns = ?",
                           (*key, size, mtime_ns))
            if rows:
                return rows[0]["hash"]
        # Versions recorded at the path with that size (job_io's path index), and only then the
        # cache (a scan: it has no index on size or hash; a file replaced by rename is rare).
        known = [r["hash"] for r in self._q(
            "SELECT hash FROM job_io WHERE path = ? AND size = ? AND hash IS NOT NULL"
            " GROUP BY hash ORDER BY max(rowid) DESC LIMIT 500", (text, size))]
        if not known:
            return None
        rows = self._q(
            f"SELECT hash FROM hash_cache WHERE size = ? AND mtime_ns = ? AND hash IN ({','.join('?' * len(known))})"
            " LIMIT 1", (size, mtime_ns, *known),
        )
        return rows[0]["hash"] if rows else None

    def uses_of_artifact(self, hash_: str) -> list[ArtifactUse]:
        """Every (job, direction, path) touching an artifact, oldest first. `path` is the real
        path (its exact bytes, from path_raw when set): views escape it, reproduce opens it."""
        rows = self._q(
            "SELECT io.job_id, io.direction, io.path, io.path_raw, j.session_id, j.seq, j.kind, j.command,"
            " j.ended_at FROM job_io io JOIN jobs j ON j.id = io.job_id WHERE io.hash = ?"
            " ORDER BY j.started_at, j.rowid", (hash_,),
        )
        return [ArtifactUse(r["job_id"], r["direction"], path_from_db(r["path"], r["path_raw"]), r["session_id"],
                            r["seq"], r["kind"], r["command"], r["ended_at"]) for r in rows]

    # -- hash cache ------------------------------------------------------------
    def cache_lookup(self, keys: list[tuple]) -> dict[tuple, str]:
        """keys: (dev, ino, size, mtime_ns, ctime_ns) -> cached blake3 for those that still match."""
        out: dict[tuple, str] = {}
        wanted = set(keys)
        by_dev: dict[int, list[int]] = {}
        for dev, ino in sorted({(k[0], k[1]) for k in wanted}):
            by_dev.setdefault(dev, []).append(ino)
        try:
            # One query per device and 500 inodes (`dev = ? AND ino IN (...)` uses the primary
            # key) instead of one per file; the rest of the key is checked here.
            chunks = [(dev, inos[i:i + 500]) for dev, inos in by_dev.items() for i in range(0, len(inos), 500)]
            for dev, chunk in chunks:
                for row in self.conn.execute(
                    "SELECT dev, ino, size, mtime_ns, ctime_ns, hash FROM hash_cache"
                    f" WHERE dev = ? AND ino IN ({','.join('?' * len(chunk))})", [dev, *chunk],
                ):
                    if row[:5] in wanted:
                        out[row[:5]] = row[5]
        except sqlite3.Error as e:
            raise _friendly(e, self.path) from None
        return out

    def cache_store(self, rows: list[tuple]) -> None:
        """rows: (dev, ino, size, mtime_ns, ctime_ns, hash)."""
        if rows:
            with self._tx() as c:
                c.executemany("INSERT OR REPLACE INTO hash_cache VALUES (?,?,?,?,?,?)", rows)

    # -- reproductions ------------------------------------------------------------
    def insert_reproduction(self, rec: dict, job_pairs: list[tuple]) -> None:
        """rec: id, target, target_hashes (list), mode, directory, ok, plan (list), verdicts (list)."""
        with self._tx() as c:
            c.execute(
                "INSERT INTO reproductions(id, created_at, target, target_hashes, mode, directory, ok, plan,"
                " verdicts) VALUES (?,?,?,?,?,?,?,?,?)",
                (rec["id"], time.time(), rec["target"], _json().dumps(rec["target_hashes"]), rec["mode"],
                 rec.get("directory"), int(rec["ok"]), _json().dumps(rec["plan"]), _json().dumps(rec["verdicts"])),
            )
            c.executemany(
                "INSERT OR IGNORE INTO reproduction_jobs(reproduction_id, original_job_id, new_job_id)"
                " VALUES (?,?,?)", [(rec["id"], o, n or "") for o, n in job_pairs],
            )

    def reproductions(self, job_id: str | None = None, hash_: str | None = None) -> list[Reproduction]:
        """Reproduction records involving a job, or whose verdicts cover an artifact hash."""
        if job_id is not None:
            rows = self._q(
                "SELECT * FROM reproductions WHERE id IN (SELECT reproduction_id FROM reproduction_jobs"
                " WHERE original_job_id = ?) ORDER BY created_at", (job_id,))
        else:
            rows = self._q("SELECT * FROM reproductions WHERE verdicts LIKE '%' || ? || '%' ORDER BY created_at",
                           (hash_,))
        loads = _json().loads
        return [Reproduction(r["id"], r["created_at"], r["target"], r["mode"], bool(r["ok"]), r["directory"],
                             tuple(loads(r["target_hashes"] or "[]")), tuple(loads(r["plan"] or "[]")),
                             tuple(loads(r["verdicts"] or "[]"))) for r in rows]

    # -- env vars / labels -------------------------------------------------------
    def env_vars(self) -> dict[str, str]:
        return {r["name"]: r["value"] for r in self._q("SELECT name, value FROM env_vars ORDER BY name")}

    def env_set(self, name: str, value: str) -> None:
        with self._tx() as c:
            c.execute("INSERT OR REPLACE INTO env_vars(name, value) VALUES (?, ?)", (name, value))

    def env_unset(self, name: str) -> bool:
        with self._tx() as c:
            return c.execute("DELETE FROM env_vars WHERE name = ?", (name,)).rowcount > 0

    def label_history(self, entity_type: str, entity_id: str) -> list[LabelVersion]:
        rows = self._q(
            "SELECT version, doc, created_at FROM labels WHERE entity_type = ? AND entity_id = ?"
            " ORDER BY version", (entity_type, entity_id),
        )
        return [LabelVersion(r["version"], _json().loads(r["doc"]), r["created_at"]) for r in rows]

    def label_patch(self, entity_type: str, entity_id: str, patch: dict) -> dict:
        """Apply `patch` (value None deletes a key) as a new version; returns the new document."""
        with self._tx() as c:
            row = c.execute(
                "SELECT version, doc FROM labels WHERE entity_type = ? AND entity_id = ?"
                " ORDER BY version DESC LIMIT 1", (entity_type, entity_id),
            ).fetchone()
            version, doc = (row[0], _json().loads(row[1])) if row else (0, {})
            for k, v in patch.items():
                if v is None:
                    doc.pop(k, None)
                else:
                    doc[k] = v
            c.execute(
                "INSERT INTO labels(entity_type, entity_id, version, doc, created_at) VALUES (?,?,?,?,?)",
                (entity_type, entity_id, version + 1, _json().dumps(doc, sort_keys=True), time.time()),
            )
        return doc


def _replace(job: Job, **changes) -> Job:
    return replace(job, **changes)
