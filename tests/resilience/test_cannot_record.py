"""Item 3 of issue 12: the command runs even when roar cannot record it.

A corrupt, truncated or empty roar.db, a read-only .roar/ (before any -wal/-shm exists),
a full disk, an invalid config.toml, a bogus tracer name: the command runs once, with
its own output and exit status; roar says one line; the job is kept in .roar/pending/
when there is anywhere to keep it, and an empty roar.db is never re-initialised.
"""

from __future__ import annotations

import shlex
import sqlite3

import pytest

from _faults import ROAR, bare, db_jobs, pending, roar, roar_lines, unshare_sh

CMD = ["sh", "-c", "echo out; echo err >&2; exit 3"]


def _same_as_bare(proj, r, roar_line_count=1):
    b = bare(CMD, proj.root)
    assert r.returncode == b.returncode == 3
    assert r.stdout == b.stdout
    assert r.stderr.startswith(b.stderr)
    extra = r.stderr[len(b.stderr):]
    assert b"Traceback" not in extra
    assert len(roar_lines(extra)) == extra.count(b"\n") == roar_line_count, extra
    return extra


def _seed(proj):
    """A project with history (two jobs), so that losing it would show."""
    for i in range(2):
        proj.roar("run", "-q", "sh", "-c", f"echo {i} > seed{i}.txt")
    return proj.root / ".roar" / "roar.db"


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_database(proj, damage):
    db = _seed(proj)
    data = db.read_bytes()
    db.write_bytes(b"this is not sqlite" * 300 if damage == "garbage" else data[: len(data) // 3])
    before = db.read_bytes()
    r = roar(["run", "-q", *CMD], proj.root)
    extra = _same_as_bare(proj, r)
    assert b"job kept in pending" in extra
    assert len(pending(proj.root)) == 1
    assert db.read_bytes() == before  # never rewritten


def test_zero_byte_database_is_not_reinitialised(proj):
    db = _seed(proj)
    db.write_bytes(b"")
    r = roar(["run", "-q", *CMD], proj.root)
    extra = _same_as_bare(proj, r)
    assert b"empty (0 bytes)" in extra and b"job kept in pending" in extra
    assert db.stat().st_size == 0 and not (proj.root / ".roar" / "roar.db-wal").exists()
    assert len(pending(proj.root)) == 1
    r = roar(["status"], proj.root)  # still refused, in one line, by every command
    assert r.returncode == 1 and r.stderr.count(b"\n") == 1 and b"empty (0 bytes)" in r.stderr
    assert db.stat().st_size == 0


def test_read_only_roar_dir_before_wal_exists(proj):
    """A read-only bind mount of .roar/ (as root, chmod would not stop writes)."""
    _seed(proj)
    assert not (proj.root / ".roar" / "roar.db-wal").exists()
    script = ("mount --bind .roar .roar && mount -o remount,bind,ro .roar && exec "
              + shlex.join([*ROAR, "run", "-q", *CMD]))
    r = unshare_sh(script, proj.root)
    extra = _same_as_bare(proj, r)
    assert b"job not recorded" in extra and b"Read-only file system" in extra
    assert [j[0] for j in db_jobs(proj.root)] == [1, 2]


@pytest.mark.parametrize("ro", [".roar", ".roar/traces"])
def test_nowhere_to_put_traces(proj, ro):
    """/dev/shm unusable and no trace directory under .roar/ either: the command still
    runs, untraced, and the job (when it can be stored) says why."""
    _seed(proj)
    (proj.root / ".roar" / "traces").mkdir(exist_ok=True)
    script = (f"mount -t tmpfs -o ro,size=64k tmpfs /dev/shm && mount --bind {ro} {ro} && "
              f"mount -o remount,bind,ro {ro} && exec " + shlex.join([*ROAR, "run", "-q", *CMD]))
    r = unshare_sh(script, proj.root)
    extra = _same_as_bare(proj, r)
    if ro == ".roar":
        assert b"job not recorded" in extra
        return
    assert extra.startswith(b"roar: capture partial: tracing could not be prepared (Read-only file system)")
    conn = sqlite3.connect(proj.root / ".roar" / "roar.db")
    assert conn.execute("SELECT exit_code, backend, capture_level FROM jobs ORDER BY seq DESC").fetchone() == (
        3, "none", "partial")


def test_full_disk(proj, tmp_path):
    """A 512 KiB tmpfs holding the project, filled up: the command still runs."""
    roar_cmd = shlex.join(ROAR)
    script = f"""
mount -t tmpfs -o size=512k tmpfs "$PWD"
cd "$PWD"
{roar_cmd} init -n >/dev/null
{roar_cmd} run -q sh -c 'echo seed > seed.txt'
dd if=/dev/zero of=fill bs=4k 2>/dev/null || true
exec {roar_cmd} run -q {shlex.join(CMD)}
"""
    d = tmp_path / "full"
    d.mkdir()
    r = unshare_sh(script + "\n", d)
    extra = _same_as_bare(proj, r)
    assert b"job not recorded" in extra and b"No space left on device" in extra, extra
    # Nothing is left behind in the project directory of the test (the tmpfs is gone).


def test_invalid_config_toml(proj):
    (proj.root / ".roar" / "config.toml").write_text("[filters\nignore_paths = [")
    r = roar(["run", "-q", *CMD], proj.root)
    extra = _same_as_bare(proj, r)
    assert b"invalid TOML" in extra and b"default" in extra
    assert db_jobs(proj.root)[-1][1:] == ("sh -c 'echo out; echo err >&2; exit 3'", 3)


@pytest.mark.parametrize("where", ["config", "env"])
def test_bogus_tracer_name(proj, where):
    if where == "config":
        (proj.root / ".roar" / "config.toml").write_text('[tracer]\ndefault = "nosuch"\n')
        r = roar(["run", "-q", *CMD], proj.root)
    else:
        r = roar(["run", "-q", *CMD], proj.root, extra_env={"ROAR_TRACER": "nosuch"})
    extra = _same_as_bare(proj, r)
    assert b"nosuch" in extra
    assert db_jobs(proj.root)[-1][2] == 3
    conn = sqlite3.connect(proj.root / ".roar" / "roar.db")
    assert conn.execute("SELECT backend FROM jobs ORDER BY seq DESC").fetchone()[0] == "preload"
