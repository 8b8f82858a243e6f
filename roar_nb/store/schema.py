"""Schema migrations of .roar/roar.db, applied in order and tracked by PRAGMA user_version.

Migrations use sqlite-utils (imported only here and only when a migration must
run, which keeps `import sqlite_utils` off the hot path of `roar run`). The
schema is documented table by table in ARCHITECTURE.md; keep the two in step.
"""

from __future__ import annotations

import sqlite3


def _m1(db) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["sessions"].create(
        {"id": str, "created_at": float, "kind": str, "name": str, "notebook": str}, pk="id"
    )
    db["environments"].create(
        {"id": str, "python": str, "platform": str, "packages": str}, pk="id"
    )
    db["jobs"].create(
        {
            "id": str, "session_id": str, "seq": int, "kind": str, "step": str,
            "command": str, "argv": str, "cwd": str, "source": str, "notebook": str,
            "cell_id": str, "execution_count": int, "kernel_id": str,
            "started_at": float, "ended_at": float, "exit_code": int, "status": str,
            "backend": str, "capture_level": str, "capture_notes": str,
            "git_commit": str, "git_branch": str, "git_dirty": int, "git_root": str,
            "env_id": str,
        },
        pk="id",
        foreign_keys=[("session_id", "sessions", "id"), ("env_id", "environments", "id")],
    )
    # @N and @BN are numbered separately within a session.
    db.execute(
        "CREATE UNIQUE INDEX jobs_session_ref ON jobs(session_id, kind = 'build', seq)"
    )
    db["jobs"].create_index(["step"])
    db["artifacts"].create({"hash": str, "size": int, "first_seen": float}, pk="hash")
    db["artifact_digests"].create(
        {"hash": str, "algo": str, "value": str}, pk=("hash", "algo"),
        foreign_keys=[("hash", "artifacts", "hash")],
    )
    db["job_io"].create(
        {
            "job_id": str, "direction": str, "path": str, "path_raw": bytes,
            "hash": str, "size": int, "changed": int, "note": str,
        },
        pk=("job_id", "direction", "path"),
        foreign_keys=[("job_id", "jobs", "id"), ("hash", "artifacts", "hash")],
    )
    db["job_io"].create_index(["hash"])
    db["job_io"].create_index(["path"])
    db["labels"].create(
        {"entity_type": str, "entity_id": str, "version": int, "doc": str, "created_at": float},
        pk=("entity_type", "entity_id", "version"),
    )
    db["env_vars"].create({"name": str, "value": str}, pk="name")
    db["hash_cache"].create(
        {"dev": int, "ino": int, "size": int, "mtime_ns": int, "ctime_ns": int, "hash": str},
        pk=("dev", "ino"),
    )


def _m2(db) -> None:
    # A reproduction: what was re-run for which target, and the verdict per output.
    db["reproductions"].create(
        {
            "id": str, "created_at": float, "target": str, "target_hashes": str,
            "mode": str, "directory": str, "ok": int, "plan": str, "verdicts": str,
        },
        pk="id",
    )
    db["reproduction_jobs"].create(
        {"reproduction_id": str, "original_job_id": str, "new_job_id": str},
        pk=("reproduction_id", "original_job_id", "new_job_id"),
        foreign_keys=[("reproduction_id", "reproductions", "id")],
    )
    db["reproduction_jobs"].create_index(["original_job_id"])


def _m3(db) -> None:
    # jobs.preamble: the untraced cells a traced cell depends on (see model.Job).
    db["jobs"].add_column("preamble", str)


def _m4(db) -> None:
    # job_io is keyed by a path's exact bytes. The primary key was the display text, in
    # which b"x\xff" (not UTF-8, shown with a \xNN escape) and the ASCII name "x\\xff" are
    # the same string: the second edge replaced the first. SQLite cannot change a primary
    # key in place, so the table is rebuilt with a unique index that includes path_raw
    # (NULL for UTF-8 paths, hence the ifnull) instead. One transaction (SQLite's DDL is
    # transactional): a crash leaves the old table or the new one, never neither; re-running
    # after a crash before user_version moved is harmless.
    db.execute("BEGIN IMMEDIATE")
    try:
        _m4_rebuild(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


def _m4_rebuild(db) -> None:
    db.execute("""
        CREATE TABLE job_io_new (
           "job_id" TEXT REFERENCES "jobs"("id"),
           "direction" TEXT,
           "path" TEXT,
           "path_raw" BLOB,
           "hash" TEXT REFERENCES "artifacts"("hash"),
           "size" INTEGER,
           "changed" INTEGER,
           "note" TEXT
        )""")
    db.execute("INSERT INTO job_io_new SELECT job_id, direction, path, path_raw, hash, size, changed, note"
               " FROM job_io")
    db.execute("DROP TABLE job_io")
    db.execute("ALTER TABLE job_io_new RENAME TO job_io")
    db.execute("CREATE UNIQUE INDEX job_io_key ON job_io(job_id, direction, path, ifnull(path_raw, x''))")
    db.execute('CREATE INDEX "idx_job_io_hash" ON "job_io" ("hash")')
    db.execute('CREATE INDEX "idx_job_io_path" ON "job_io" ("path")')


def _m5(db) -> None:
    # job_io.created: whether the job created an output (see model.Edge); NULL = unknown.
    db["job_io"].add_column("created", int)




def _m6(db) -> None:
    # jobs.parent_job_id: the job whose command ran this one (`roar run` nested in a
    # `roar run` or a traced cell); set by the parent when it is stored.
    db["jobs"].add_column("parent_job_id", str)


def _m7(db) -> None:
    # ray_tasks: Ray's ids of a `ray_task` job (one row per job; the job holds the I/O).
    db.execute(
        "CREATE TABLE ray_tasks (job_id TEXT PRIMARY KEY REFERENCES jobs(id), task_id TEXT, attempt INTEGER,"
        " actor_id TEXT, node_id TEXT, worker_id TEXT, pid INTEGER, function TEXT, status TEXT,"
        " exception_type TEXT)")
    db.execute("CREATE INDEX idx_ray_tasks_task ON ray_tasks(task_id)")


MIGRATIONS = [_m1, _m2, _m3, _m4, _m5, _m6, _m7]
LATEST = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, lock_path: str) -> None:
    """Bring the database at `conn` to LATEST.

    sqlite-utils commits each DDL statement itself, so a SQL transaction cannot
    make a migration atomic across processes; an exclusive file lock does: the
    second of two racing processes waits, then sees the new user_version.
    """
    if conn.execute("PRAGMA user_version").fetchone()[0] >= LATEST:
        return
    import fcntl

    import sqlite_utils

    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        db = sqlite_utils.Database(conn)
        current = conn.execute("PRAGMA user_version").fetchone()[0]
        for number in range(current + 1, LATEST + 1):
            MIGRATIONS[number - 1](db)
            conn.execute(f"PRAGMA user_version = {number}")
