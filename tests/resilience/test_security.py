"""Security of what roar writes and shows: owner-only .roar/, escaped names in every view,
generated scripts and notebooks that user text cannot break out of (issue 12, items 15-17)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import Proj


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def open_dir():
    """A project directory every local user can traverse (pytest's tmp_path is 0700, which
    would hide a world-readable DB by accident and make the test prove nothing)."""
    d = tempfile.mkdtemp(prefix="roar-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                          capture_output=True, text=True, errors="replace")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")
def test_secrets_at_rest_are_owner_only(open_dir, native_lib):
    p = Proj(__import__("pathlib").Path(open_dir))
    p.roar("init", "-n")
    p.roar("env", "set", "AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    p.roar("run", "--", "sh", "-c", "echo x > out.txt")
    roar_dir = os.path.join(open_dir, ".roar")
    assert _mode(roar_dir) == 0o700
    for name in ("roar.db", "roar.db-wal", "roar.db-shm", "config.toml"):
        f = os.path.join(roar_dir, name)
        if os.path.exists(f):
            assert _mode(f) & 0o077 == 0, (name, oct(_mode(f)))
    # Another local user can neither list .roar/ nor read the DB (nor its WAL, which holds the value first).
    for target in ("roar.db", "roar.db-wal"):
        r = _as_nobody("cat", os.path.join(roar_dir, target))
        assert r.returncode != 0 and "s3cr3t" not in r.stdout
        assert "Permission denied" in r.stderr
    assert _as_nobody("ls", roar_dir).returncode != 0
    # The owner still works normally.
    assert "AWS_SECRET_ACCESS_KEY" in p.roar("env", "list").stdout.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")
def test_existing_world_readable_project_is_tightened_on_open(open_dir, native_lib):
    p = Proj(__import__("pathlib").Path(open_dir))
    p.roar("init", "-n")
    p.roar("env", "set", "TOKEN", "hunter2")
    roar_dir = os.path.join(open_dir, ".roar")
    # A project made by an older roar: world-readable directory and DB.
    os.chmod(roar_dir, 0o755)
    for name in ("roar.db", "roar.db-wal", "roar.db-shm"):
        if os.path.exists(os.path.join(roar_dir, name)):
            os.chmod(os.path.join(roar_dir, name), 0o644)
    assert _as_nobody("cat", os.path.join(roar_dir, "roar.db")).returncode == 0  # the break, as it was
    p.roar("status")
    assert _mode(roar_dir) == 0o700
    assert _mode(os.path.join(roar_dir, "roar.db")) == 0o600
    r = _as_nobody("cat", os.path.join(roar_dir, "roar.db"))
    assert r.returncode != 0 and "hunter2" not in r.stdout
