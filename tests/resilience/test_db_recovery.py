"""Item 11 of issue 12: recover from a read-only episode; refuse a newer schema.

* roar.db made read-only for a while (its owner runs roar meanwhile): SQLite creates
  roar.db-shm with the database's read-only mode then, and once roar.db is writable again
  that -shm would keep every later job in pending/ forever. Run as `nobody` (root ignores
  file modes).
* A database written by a newer roar-nb (PRAGMA user_version above what this one knows)
  is refused with one line naming both versions, never written into, and the jobs wait in
  pending/ until a roar that knows the schema stores them.
"""

from __future__ import annotations

import os
import sqlite3

from _faults import NOBODY, bare, db_jobs, pending, roar, roar_lines, shared_proj  # noqa: F401 (fixture)

CMD = ["sh", "-c", "echo out; exit 4"]


def test_read_only_episode_then_recovery(shared_proj):
    root, extra = shared_proj
    db = root / ".roar" / "roar.db"
    os.chmod(db, 0o444)
    r = roar(["run", "-q", *CMD], root, extra, prefix=NOBODY)
    assert (r.returncode, r.stdout) == (4, b"out\n")
    assert b"job kept in pending" in r.stderr and b"read-only" in r.stderr
    assert len(pending(root)) == 1
    os.chmod(db, 0o644)  # the episode is over
    r = roar(["run", "-q", *CMD], root, extra, prefix=NOBODY)
    assert (r.returncode, r.stdout, r.stderr) == (4, b"out\n", b"")
    assert pending(root) == []
    assert [j[0] for j in db_jobs(root)] == [1, 2]


def test_newer_schema_is_refused_and_never_written(proj):
    proj.roar("run", "-q", "true")
    db = proj.root / ".roar" / "roar.db"
    conn = sqlite3.connect(db)
    known = conn.execute("PRAGMA user_version").fetchone()[0]
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    before = db.read_bytes()
    b = bare(CMD, proj.root)
    r = roar(["run", "-q", *CMD], proj.root)
    assert (r.returncode, r.stdout) == (b.returncode, b.stdout)
    assert len(roar_lines(r.stderr)) == r.stderr.count(b"\n") == 1
    assert b"schema version 99" in r.stderr and f"({known})".encode() in r.stderr
    assert len(pending(proj.root)) == 1
    r = roar(["log"], proj.root)
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1 and b"schema version 99" in r.stderr
    assert db.read_bytes() == before and not os.path.exists(str(db) + "-wal")
    assert len(pending(proj.root)) == 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {known}")  # a roar that knows the schema again
    conn.close()
    roar(["status"], proj.root)
    assert pending(proj.root) == [] and [j[1] for j in db_jobs(proj.root)] == ["true", "sh -c 'echo out; exit 4'"]
