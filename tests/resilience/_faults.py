"""Helpers for tests/resilience/ (its test modules import them as `_faults`): bare-vs-roar
runs, job accounting, other users, mounts.

Every test here runs the real `roar` CLI in a subprocess on a scratch project (the
`proj` fixture of tests/conftest.py) and compares it with the same command run bare.
Tests run as root, where file modes do not stop writes, so "read-only" is made real
with a read-only bind mount or a tiny tmpfs in a private mount namespace (`unshare -m`),
or by running roar as `nobody` (setpriv).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from conftest import roar_cmd  # tests/conftest.py

ROAR = roar_cmd()
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]


def env(**extra) -> dict:
    e = dict(os.environ)
    e.pop("ROAR_PROJECT", None)
    e.update({k: str(v) for k, v in extra.items()})
    return e


def bare(argv, cwd, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, env=env(), capture_output=True, **kw)


def roar(args, cwd, extra_env=None, prefix=(), **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, *ROAR, *map(str, args)], cwd=cwd, env=env(**(extra_env or {})),
                          capture_output=True, **kw)


def without_none_note(stderr: bytes) -> bytes:
    """stderr minus the line `--tracer none` always prints (capture partial: tracing disabled)."""
    return b"".join(ln for ln in stderr.splitlines(True)
                    if not ln.startswith(b"roar: capture partial: tracing disabled"))


def roar_lines(stderr: bytes) -> list[bytes]:
    return [ln for ln in stderr.splitlines() if ln.startswith(b"roar")]


def db_jobs(root: Path) -> list[tuple]:
    """(seq, command, exit_code) of every stored job, straight from SQLite (no roar involved)."""
    conn = sqlite3.connect(f"file:{root / '.roar' / 'roar.db'}?mode=ro", uri=True)
    try:
        return conn.execute("SELECT seq, command, exit_code FROM jobs ORDER BY seq").fetchall()
    finally:
        conn.close()


def pending(root: Path, ext: str = "json") -> list[Path]:
    d = root / ".roar" / "pending"
    return sorted(d.glob(f"*.{ext}")) if d.is_dir() else []


def wait_for(cond, what: str, cap: float = 60.0, step: float = 0.05):
    """Poll `cond` until it is truthy (its value is returned); fail after `cap` seconds."""
    deadline = time.monotonic() + cap
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {cap:g} s waiting for {what}")
        time.sleep(step)


def proc_state(pid: int) -> str | None:
    """The state letter of a process (R, S, T, Z...), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rpartition(b")")[2].split()[0].decode()
    except (OSError, IndexError):
        return None


class LockHolder:
    """A second process holding a write transaction (BEGIN IMMEDIATE) on the project DB."""

    def __init__(self, db: Path):
        code = ("import sqlite3, sys\n"
                f"c = sqlite3.connect({str(db)!r}, isolation_level=None)\n"
                "c.execute('BEGIN IMMEDIATE')\n"
                "c.execute('INSERT OR REPLACE INTO meta(key, value) VALUES (\"lock-test\", \"1\")')\n"
                "print('held', flush=True)\n"
                "sys.stdin.read()\n"
                "c.execute('ROLLBACK')\n")
        self.p = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert self.p.stdout.readline() == b"held\n"

    def release(self) -> None:
        if self.p.poll() is None:
            self.p.stdin.close()
            self.p.wait(timeout=60)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()


@pytest.fixture
def shared_proj(native_lib):
    """A project in a directory `nobody` can reach (pytest's tmp_path is root-only), owned by
    nobody; yields (root, env extras for running roar as nobody)."""
    base = Path(tempfile.mkdtemp(prefix="roar-res-", dir="/tmp"))
    os.chmod(base, 0o755)
    root = base / "proj"
    root.mkdir()
    r = roar(["init", "-n"], root)
    assert r.returncode == 0, r.stderr
    subprocess.run(["chown", "-R", "nobody:nogroup", str(base)], check=True)
    yield root, {"HOME": str(base)}
    shutil.rmtree(base, ignore_errors=True)


def unshare_sh(script: str, cwd, timeout: float = 300) -> subprocess.CompletedProcess:
    """Run a shell script in a private mount namespace (root: mounts there are invisible outside)."""
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-ec", script],
                          cwd=cwd, env=env(), capture_output=True, timeout=timeout)
