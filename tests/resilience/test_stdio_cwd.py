"""Item 8 of issue 12: a deleted working directory, a closed stderr (`2>&-`), a stderr on
/dev/full. The command's exit status and output are what they are bare; no traceback;
the job is recorded."""

from __future__ import annotations

import shlex

import pytest

from _faults import ROAR, db_jobs, env
import subprocess

PROBE = ("import os, sys\n"
         "def state(fd):\n"
         "    try:\n"
         "        os.fstat(fd)\n"
         "        return 'open'\n"
         "    except OSError:\n"
         "        return 'closed'\n"
         "print('stdin', state(0), 'stderr', state(2), flush=True)\n"
         "try:\n"
         "    os.write(2, b'to stderr\\n')\n"
         "    print('write ok')\n"
         "except OSError as e:\n"
         "    print('write failed', e.errno)\n"
         "sys.exit(3)\n")


def _sh(line: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", line], cwd=cwd, env=env(), capture_output=True)


@pytest.mark.parametrize("redirect", ["2>&-", "2>/dev/full", "<&- 2>&-", ">/dev/full"])
@pytest.mark.parametrize("quiet", [[], ["-q"]])
def test_closed_or_full_stdio(proj, redirect, quiet):
    import sys

    cmd = shlex.join([sys.executable, "-c", PROBE])
    b = _sh(f"{cmd} {redirect}", proj.root)
    r = _sh(f"{shlex.join([*ROAR, 'run', *quiet])} {cmd} {redirect}", proj.root)
    assert (r.returncode, r.stdout) == (b.returncode, b.stdout)
    if quiet:
        assert r.stderr == b.stderr
    if "2>" in redirect:
        assert b.returncode == 3 and b"Traceback" not in r.stderr
    else:  # the probe's own print fails on /dev/full: a traceback of the user's, exit 1
        assert b.returncode == 1
    assert db_jobs(proj.root)[-1][2] == b.returncode


def test_deleted_working_directory(proj):
    inner = "echo in; cat /dev/null; exit 5"
    pre = "mkdir gone && cd gone && rmdir ../gone && "
    b = _sh(pre + f"sh -c {shlex.quote(inner)}", proj.root)
    r = _sh(pre + f"{shlex.join([*ROAR, 'run', '-q', 'sh', '-c', inner])}", proj.root)
    assert (r.returncode, r.stdout, r.stderr) == (b.returncode, b.stdout, b.stderr)
    assert b.returncode == 5
    assert db_jobs(proj.root)[-1][1:] == (f"sh -c {shlex.quote(inner)}", 5)
    job = proj.dag()["jobs"][-1]
    assert job["cwd"] == str(proj.root / "gone")
    assert any("deleted" in n for n in job["capture_notes"])


def test_other_commands_on_a_full_stdout_fail_in_one_line(proj):
    proj.roar("run", "-q", "true")
    for cmd in ("log", "dag --json", "status"):
        r = _sh(f"{shlex.join(ROAR)} {cmd} >/dev/full", proj.root)
        assert r.returncode == 1, cmd
        assert r.stderr == b"roar: error: No space left on device\n", (cmd, r.stderr)
