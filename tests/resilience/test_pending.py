"""Item 12 of issue 12: a pending job says so (no `roar @0`), pending jobs get their @N
in the order they ran, and a failed spool leaves no `pending/*.tmp` behind."""

from __future__ import annotations

import os
import time

from _faults import LockHolder, db_jobs, pending, roar


def test_pending_jobs_are_said_and_numbered_in_run_order(proj):
    with LockHolder(proj.root / ".roar" / "roar.db"):
        for i in range(6):
            r = roar(["run", "sh", "-c", f"echo {i} > out{i}.txt"], proj.root, extra_env={"ROAR_BUSY_TIMEOUT": 0.3})
            assert r.returncode == 0
            lines = r.stderr.splitlines()
            assert len(lines) == 1 and lines[0].startswith(b"roar: job kept in pending (.roar/pending/"), lines
            assert b"@0" not in r.stderr
    names = [p.name for p in pending(proj.root)]
    assert len(names) == 6
    r = roar(["log"], proj.root)
    assert r.returncode == 0
    assert db_jobs(proj.root) == [(i + 1, f"sh -c 'echo {i} > out{i}.txt'", 0) for i in range(6)]


def test_stale_tmp_litter_is_cleaned(proj):
    """A process that died while writing its pending file leaves a .tmp; the next command
    that looks at pending/ removes it once it is clearly abandoned (10 minutes)."""
    d = proj.root / ".roar" / "pending"
    d.mkdir()
    old, fresh = d / "0123.tmp", d / "4567.tmp"
    old.write_text('{"job": ')
    fresh.write_text('{"job": ')
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    (d / "x.json").write_text("not json")  # an unreadable pending file is left alone, not fatal
    r = roar(["run", "-q", "true"], proj.root)
    assert r.returncode == 0 and r.stderr == b""
    assert sorted(p.name for p in d.iterdir()) == ["4567.tmp", "x.json"]
    assert db_jobs(proj.root) == [(1, "true", 0)]
