"""The ptrace tracer under faults: its own death, setuid programs behind a static launcher.

Real processes only: the real `roar run` (or `roar-ptrace`) runs a real program, a test kills
the real tracer with SIGKILL, and the program, the exit status and the recorded job are checked.
A traced program cannot go on without its tracer (its seccomp filter turns every traced call
into ENOSYS), so the promise is: it dies as a whole, never runs on broken, and the job says so.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from _faults import bare, roar, roar_lines

REPO = Path(__file__).resolve().parent.parent.parent
sys.path.insert(0, str(REPO / "tests" / "fidelity"))

import fidelity_corpus as fc  # noqa: E402

MODES = {"notify": {}, "stops": {"ROAR_PTRACE_NOTIFY": "0"}}


@pytest.fixture(scope="module")
def tools(native_lib) -> fc.Tools:
    """The corpus programs and tracers, with the packaged copy of roar-ptrace kept fresh."""
    t = fc.build()
    dest = REPO / "roar_nb" / "_native" / "roar-ptrace"
    if not dest.exists() or dest.read_bytes() != Path(t.ptrace).read_bytes():
        shutil.copy2(t.ptrace, dest)
    return t


def _wait_for(cond, what: str, cap: float = 60.0):
    """Poll `cond` until it returns something true; a generous cap, never a timing assertion."""
    end = time.monotonic() + cap
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _ppid(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("PPid:"):
                return int(line.split()[1])
    raise AssertionError(f"no PPid for {pid}")


def _gone(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for init counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


@pytest.fixture
def reap():
    """Pids to SIGKILL after the test, so that a failing run leaves no program looping."""
    pids: list = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _start_loop(cmd: list, cwd: Path, env: dict) -> tuple[subprocess.Popen, int]:
    (cwd / "in.txt").write_text("x\n")
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ready = cwd / "ready"
    _wait_for(lambda: ready.exists() or p.poll() is not None, "the program to start")
    assert p.poll() is None, p.communicate()
    time.sleep(0.3)  # let it loop through opens and execs under the tracer for a while
    return p, int(ready.read_text())


def _roar_run_loop(tools, proj, mode: str, reap: list) -> tuple[subprocess.Popen, int]:
    """`roar run --tracer ptrace open_loop`, started and looping: (roar's Popen, program pid)."""
    env = dict(os.environ, **MODES[mode])
    env.pop("ROAR_PROJECT", None)
    roar = Path(sys.executable).parent / "roar"  # as tests/conftest.py runs it
    cmd = [str(roar)] if roar.exists() else [sys.executable, "-m", "roar_nb.cli"]
    p, pid = _start_loop([*cmd, "run", "--tracer", "ptrace", str(tools.bin_dir / "open_loop")], proj.root, env)
    reap.append(pid)
    return p, pid


@pytest.mark.parametrize("mode", MODES)
def test_killing_the_tracer_kills_the_program_and_the_job_says_so(tools, proj, mode, reap):
    """SIGKILL of the tracer: the program never sees a failing open or exec (PTRACE_O_EXITKILL
    kills it first, and in notification mode a keeper holds the seccomp listener until the kernel
    has done so); `roar run` records the job as failed (-9), partial, with the reason, and dies
    of SIGKILL too."""
    p, pid = _roar_run_loop(tools, proj, mode, reap)
    tracer = _ppid(pid)
    os.kill(tracer, signal.SIGKILL)
    out, err = p.communicate(timeout=60)
    assert b"BROKEN" not in err, err
    _wait_for(lambda: _gone(pid), "the traced program to die with its tracer", cap=30)
    assert p.returncode == -signal.SIGKILL, (out, err)  # roar run dies of the same signal
    j = json.loads(proj.roar("show", "@1", "--json").stdout)
    assert (j["status"], j["exit_code"], j["backend"], j["capture_level"]) == ("failed", -9, "ptrace", "partial")
    assert any("tracer was killed by signal 9" in n and "killed with it" in n for n in j["capture_notes"]), j


@pytest.mark.parametrize("mode", MODES)
def test_killing_every_roar_ptrace_process_is_said(tools, proj, mode, reap):
    """`pkill -9 roar-ptrace`: front and tracer die at once, so nobody writes a reason.
    The job must still not claim a complete capture: the front had noted that the command
    started but never that its fate arrived."""
    p, pid = _roar_run_loop(tools, proj, mode, reap)
    tracer = _ppid(pid)
    front = _ppid(tracer)
    for victim in (front, tracer):
        os.kill(victim, signal.SIGKILL)
    _, err = p.communicate(timeout=60)
    assert b"BROKEN" not in err, err
    _wait_for(lambda: _gone(pid), "the traced program to die with its tracer", cap=30)
    j = json.loads(proj.roar("show", "@1", "--json").stdout)
    assert (j["status"], j["exit_code"], j["capture_level"]) == ("failed", -9, "partial"), j
    assert any("roar-ptrace was killed before it learned the command's fate" in n for n in j["capture_notes"]), j


@pytest.mark.parametrize("mode", MODES)
def test_killing_the_front_takes_the_tracer_and_the_program_with_it(tools, tmp_path, mode, reap):
    """The front (the pid the caller waits for) killed: the tracer dies with it
    (PR_SET_PDEATHSIG) and the program with the tracer, instead of running on unwatched."""
    trace = tmp_path / "trace"
    trace.mkdir()
    env = dict(os.environ, **MODES[mode])
    p, pid = _start_loop([tools.ptrace, "--trace-dir", str(trace), "--", str(tools.bin_dir / "open_loop")],
                         tmp_path, env)
    reap.append(pid)
    tracer = _ppid(pid)
    reap.append(tracer)
    assert _ppid(tracer) == p.pid
    p.kill()
    _, err = p.communicate(timeout=60)
    _wait_for(lambda: _gone(tracer) and _gone(pid), "the tracer and the program to die with the front", cap=30)
    assert b"BROKEN" not in err, err


@pytest.mark.parametrize("mode", MODES)
def test_a_tracer_dying_before_exitkill_never_lets_the_command_run(tools, tmp_path, mode, reap):
    """The tracer killed between forking the command and setting PTRACE_O_EXITKILL (fault
    injection: it SIGKILLs itself there): the command child, stopped before its exec with the
    filter already installed, must never run the command nor stay behind; the front reports
    the tracer's death and returns only once the child is gone."""
    trace = tmp_path / "trace"
    trace.mkdir()
    p = subprocess.run([tools.ptrace, "--trace-dir", str(trace), "--", "touch", "ran.txt"], cwd=tmp_path,
                       env=dict(os.environ, ROAR_PTRACE_FAULT="die", **MODES[mode]), capture_output=True,
                       timeout=60)
    assert p.returncode == -signal.SIGKILL, p
    notes = (trace / "roar-ptrace.notes").read_text()
    started = int(notes.split("started\t")[1].split("\n")[0])
    reap.append(started)
    assert _gone(started)
    assert not (tmp_path / "ran.txt").exists()
    assert "the ptrace tracer was killed by signal 9" in notes


def test_stragglers_keep_their_tracer_after_the_front_exits(tools, tmp_path):
    """The death tie ends with the command: a daemon left behind is still traced and works."""
    trace = tmp_path / "trace"
    trace.mkdir()
    (tmp_path / "in.txt").write_text("late\n")
    p = subprocess.run([tools.ptrace, "--trace-dir", str(trace), "--", "sh", "-c",
                        "(sleep 0.5; cat in.txt > late.txt) & echo started"],
                       cwd=tmp_path, capture_output=True, timeout=60)
    assert p.returncode == 0 and p.stdout == b"started\n", p
    _wait_for(lambda: (tmp_path / "late.txt").exists() and (tmp_path / "late.txt").read_text() == "late\n",
              "the straggler to finish its copy")


# --- setuid programs exec'd under the tracer ------------------------------------------

NOBODY = 65534
USER = 1000  # the unprivileged user that runs the tracer (no account needed)


@pytest.fixture
def suid_dir(tools):
    """A world-writable scratch dir holding `suid_check` setuid to nobody and setgid to
    nogroup (`sgid_check`). Needs root: making a program of another user is the point."""
    if os.geteuid() != 0:
        pytest.skip("needs root to install a setuid program owned by another user")
    d = Path(tempfile.mkdtemp(prefix="roar-suid-"))
    try:
        os.chmod(d, 0o777)
        for name, mode, owner in (("suid_check", 0o4755, (NOBODY, 0)), ("sgid_check", 0o2755, (0, NOBODY))):
            shutil.copy(tools.bin_dir / "suid_check", d / name)
            os.chown(d / name, *owner)
            os.chmod(d / name, mode)  # after chown, which clears the set-id bits
        yield d
    finally:
        subprocess.run(["rm", "-rf", str(d)], check=True)


def _as_user(argv: list) -> list:
    return ["setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "--", *argv]


def _ptrace_as_user(tools, d: Path, script: str, env: dict, prefix=()) -> tuple[subprocess.CompletedProcess, list]:
    """`roar-ptrace busybox sh -c SCRIPT` run by the unprivileged user, and its partial notes."""
    from roar_nb.capture import ptrace as ptrace_mod

    trace = d / "trace"
    shutil.rmtree(trace, ignore_errors=True)
    trace.mkdir()
    os.chmod(trace, 0o777)
    p = subprocess.run([*prefix, *_as_user([tools.ptrace, "--trace-dir", str(trace), "--", fc.BUSYBOX, "sh", "-c",
                                            script])],
                       cwd=d, env=dict(os.environ, **env), capture_output=True, timeout=60)
    return p, ptrace_mod.read_notes(str(trace))[1]


def test_setuid_program_runs_as_it_would_without_roar(suid_dir):
    """The reference: run bare by the unprivileged user, both programs get their privileges."""
    for prog in ("./suid_check", "./sgid_check gid"):
        p = subprocess.run(_as_user([fc.BUSYBOX, "sh", "-c", prog]), cwd=suid_dir, capture_output=True)
        assert (p.returncode, p.stdout) == (0, b"privileged\n"), p


def _info_notes(d: Path) -> str:
    return "\n".join(ln for ln in (d / "trace" / "roar-ptrace.notes").read_text().splitlines()
                     if ln.startswith("info\t"))


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("prog,kind", [("./suid_check", "setuid"), ("./sgid_check gid", "setgid")])
def test_setuid_behind_a_static_launcher_is_detached_and_keeps_its_privileges(tools, suid_dir, prog, kind, mode):
    """An unprivileged tracer traces without a seccomp filter (which would need no_new_privs),
    so it can detach the thread at the exec of a set-id program, which then runs untraced with
    its privileges, exactly as bare; the job says so, and the launcher stays traced."""
    (suid_dir / "in.txt").write_text("x\n")
    os.chmod(suid_dir / "in.txt", 0o644)
    p, notes = _ptrace_as_user(tools, suid_dir, f"{prog}; echo after; cat in.txt > out.txt", MODES[mode])
    assert (p.returncode, p.stdout) == (0, b"privileged\nafter\n"), p
    assert any(f"{kind} program {suid_dir}/{prog.split()[0][2:]} ran untraced" in n for n in notes), notes
    assert "no seccomp filter (without CAP_SYS_ADMIN" in _info_notes(suid_dir)
    from roar_nb.capture import events as ev_mod

    events, _ = ev_mod.read_trace_dir(str(suid_dir / "trace"))
    assert ("W", str(suid_dir / "out.txt")) in {(e.op, e.path) for e in events}


@pytest.mark.parametrize("mode", MODES)
def test_an_unprivileged_tracer_never_sets_no_new_privs(tools, suid_dir, mode):
    """no_new_privs would make every set-id program exec'd later run without its privileges
    (a different program): the command of an unprivileged tracer runs without it, as bare."""
    bare = subprocess.run(_as_user([fc.BUSYBOX, "grep", "NoNewPrivs", "/proc/self/status"]), capture_output=True)
    p, notes = _ptrace_as_user(tools, suid_dir, "grep NoNewPrivs /proc/self/status", MODES[mode])
    assert (p.returncode, p.stdout) == (bare.returncode, bare.stdout) == (0, b"NoNewPrivs:\t0\n"), p
    assert notes == []


@pytest.mark.parametrize("mode", MODES)
def test_under_inherited_no_new_privs_the_filter_stays_and_nothing_changes(tools, suid_dir, mode):
    """Started under no_new_privs already (a container's no-new-privileges), no exec can gain
    privileges, traced or not: the fast filter is safe and kept, the set-id program fails
    exactly as it does bare, and roar has nothing to say about it."""
    script = "./suid_check; echo after $?"
    b = subprocess.run(["setpriv", "--no-new-privs", *_as_user([fc.BUSYBOX, "sh", "-c", script])], cwd=suid_dir,
                       capture_output=True)
    assert (b.returncode, b.stdout) == (0, b"after 3\n"), b
    p, notes = _ptrace_as_user(tools, suid_dir, script, MODES[mode], prefix=["setpriv", "--no-new-privs"])
    assert (p.returncode, p.stdout, p.stderr) == (b.returncode, b.stdout, b.stderr), p
    assert notes == [] and _info_notes(suid_dir) == "", notes


@pytest.fixture
def user_proj(native_lib, suid_dir):
    """A roar project owned by the unprivileged user, holding `suid_check` setuid to nobody."""
    base = Path(tempfile.mkdtemp(prefix="roar-user-", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        root = base / "proj"
        root.mkdir()
        assert roar(["init", "-n"], root).returncode == 0
        (root / "in.txt").write_text("x\n")
        subprocess.run(["chown", "-R", f"{USER}:{USER}", str(base)], check=True)
        shutil.copy(suid_dir / "suid_check", root / "suid_check")
        os.chown(root / "suid_check", NOBODY, 0)
        os.chmod(root / "suid_check", 0o4755)
        yield root, {"HOME": str(base)}
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_roar_run_as_a_user_runs_a_setuid_program_as_bare(user_proj):
    """Issue 12 item 6: `roar run busybox sh -c ./suidprog` by an ordinary user (auto picks
    ptrace for the static launcher). Same exit status and output as the bare run; the job is
    partial and names the program that ran untraced; the launcher's own I/O is recorded."""
    root, extra = user_proj
    script = "./suid_check; echo after $?; cat in.txt > out.txt"
    b = bare(_as_user([fc.BUSYBOX, "sh", "-c", script]), root)
    assert (b.returncode, b.stdout, b.stderr) == (0, b"privileged\nafter 0\n", b""), b
    (root / "out.txt").unlink()
    r = roar(["run", fc.BUSYBOX, "sh", "-c", script], root, extra, prefix=_as_user([]))
    assert (r.returncode, r.stdout) == (b.returncode, b.stdout), r
    assert [ln for ln in r.stderr.splitlines() if ln not in roar_lines(r.stderr)] == [], r.stderr
    j = json.loads(roar(["show", "@1", "--json"], root, extra, prefix=_as_user([])).stdout)
    assert (j["backend"], j["exit_code"], j["capture_level"]) == ("ptrace", 0, "partial"), j
    assert any(f"setuid program {root}/suid_check ran untraced" in n for n in j["capture_notes"]), j
    assert {os.path.basename(e["path"]) for e in j["outputs"]} == {"out.txt"}, j


def test_setuid_under_a_root_tracer_keeps_its_privileges_and_is_traced(tools, suid_dir, proj):
    """A tracer with CAP_SYS_PTRACE (root) and no no_new_privs: the kernel grants the
    privileges to a traced program, so it stays traced and the job is complete."""
    (proj.root / "in.txt").write_text("x\n")
    shutil.copy2(suid_dir / "suid_check", proj.root / "suid_check")
    os.chown(proj.root / "suid_check", NOBODY, 0)
    os.chmod(proj.root / "suid_check", 0o4755)
    p = proj.roar("run", "--tracer", "ptrace", fc.BUSYBOX, "sh", "-c", "./suid_check && cat in.txt > out.txt")
    assert p.stdout.startswith(b"privileged\n"), p
    j = json.loads(proj.roar("show", "@1", "--json").stdout)
    assert (j["exit_code"], j["capture_level"]) == (0, "complete"), j
    assert {os.path.basename(e["path"]) for e in j["outputs"]} == {"out.txt"}


@pytest.mark.parametrize("mode", MODES)
def test_a_tracer_without_cap_sys_ptrace_lets_a_set_id_program_keep_its_privileges(tools, suid_dir, mode):
    """A tracer with CAP_SYS_ADMIN but without CAP_SYS_PTRACE (could install its filter without
    no_new_privs), tracing a root shell without CAP_SETUID: the kernel would withhold the
    program's privileges from a traced process, and under a filter it could not be let go
    (ENOSYS). So the tracer uses no filter, detaches at the exec, and the program runs as bare."""
    trace = suid_dir / "trace"
    trace.mkdir()
    from roar_nb.capture import ptrace as ptrace_mod

    script = "./suid_check; echo after $?"
    cmd = ["setpriv", "--bounding-set=-setuid", "--", fc.BUSYBOX, "sh", "-c", script]
    b = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--", *cmd], cwd=suid_dir, capture_output=True)
    assert (b.returncode, b.stdout) == (0, b"privileged\nafter 0\n"), b
    p = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--", tools.ptrace, "--trace-dir", str(trace), "--",
                        *cmd], cwd=suid_dir, env=dict(os.environ, **MODES[mode]), capture_output=True, timeout=60)
    assert (p.returncode, p.stdout, p.stderr) == (b.returncode, b.stdout, b.stderr), p
    notes = ptrace_mod.read_notes(str(trace))[1]
    assert any(f"setuid program {suid_dir}/suid_check ran untraced" in n for n in notes), notes
    assert "no seccomp filter (without CAP_SYS_PTRACE" in _info_notes(suid_dir)


def test_a_process_out_of_the_tracers_reach_is_said(tools, suid_dir):
    """A root tracer without CAP_SYS_PTRACE (a container's default) stays the tracer of a
    command that drops to another user (su, gosu, setpriv), but may not read its memory, so
    it cannot name the files it opens: the job must say so, not claim a complete capture."""
    (suid_dir / "in.txt").write_text("hi\n")
    trace = suid_dir / "trace"
    trace.mkdir()
    from roar_nb.capture import ptrace as ptrace_mod

    p = subprocess.run(["setpriv", "--bounding-set=-sys_ptrace", "--", tools.ptrace, "--trace-dir", str(trace), "--",
                        *_as_user([fc.BUSYBOX, "sh", "-c", "cat in.txt"])],
                       cwd=suid_dir, capture_output=True, timeout=60)
    assert (p.returncode, p.stdout) == (0, b"hi\n"), p
    notes = ptrace_mod.read_notes(str(trace))[1]
    assert any("may not read the memory of a process that changed its user" in n for n in notes), notes
