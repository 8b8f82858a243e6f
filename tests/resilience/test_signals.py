"""Items 1-2 of issue 12: the command's signals are its own, and roar's fate is tied to it.

1. Python ignores SIGPIPE/SIGXFSZ; a command started by roar must not inherit that
   (`roar run yes | head -1` dies of SIGPIPE, silently, like bare `yes`).
2. SIGTERM/SIGHUP/SIGINT sent to roar's pid reach the command, which decides its fate;
   the job records that fate. SIGKILL of roar takes the command with it. A command that
   stops itself stops roar (like a shell job), and SIGCONT to roar resumes both.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from _faults import ROAR, bare, db_jobs, env, proc_state, roar, wait_for, without_none_note

TRACERS = ["preload", "ptrace", "none"]


@pytest.mark.parametrize("tracer", TRACERS)
def test_command_starts_with_default_dispositions_and_mask(proj, tracer):
    cmd = ["grep", "-E", "^Sig(Ign|Blk|Cgt)", "/proc/self/status"]
    b = bare(cmd, proj.root)
    r = roar(["run", "-q", "--tracer", tracer, *cmd], proj.root)
    # What a shell gives a command: nothing blocked, nothing ignored. (Not compared with
    # `bare` byte for byte: a child spawned by this pytest process inherits glibc's internal
    # signal 32 ignored once some thread here was cancelled, which no shell passes on.)
    assert r.returncode == b.returncode == 0
    assert r.stdout.splitlines()[:2] == [b"SigBlk:\t0000000000000000", b"SigIgn:\t0000000000000000"]
    assert r.stdout.splitlines()[2] == b.stdout.splitlines()[2]  # SigCgt: grep catches nothing


@pytest.mark.parametrize("tracer", TRACERS)
def test_yes_into_head_dies_of_sigpipe_silently(proj, tracer):
    script = '{} | head -1; echo "status ${{PIPESTATUS[0]}}"'
    b = subprocess.run(["bash", "-c", script.format("yes")], capture_output=True)
    r = subprocess.run(["bash", "-c", script.format(" ".join([*ROAR, "run", "-q", "--tracer", tracer, "yes"]))],
                       cwd=proj.root, env=env(), capture_output=True)
    assert b.stdout == b"y\nstatus 141\n" and b.stderr == b""
    assert (r.stdout, without_none_note(r.stderr)) == (b.stdout, b.stderr)
    assert db_jobs(proj.root)[-1][2] == -signal.SIGPIPE


HANDLER = r"""
import signal, sys, time
def on(sig, frame):
    print("caught", sig, flush=True)
    sys.exit(7)
for s in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
    signal.signal(s, on)
print("ready", flush=True)
time.sleep(120)
"""
PLAIN = 'import time; print("ready", flush=True); time.sleep(120)'


def _send_after_ready(argv, cwd, sig) -> tuple[int, bytes]:
    p = subprocess.Popen(argv, cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert p.stdout.readline() == b"ready\n"
        p.send_signal(sig)
        out, _ = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, out


@pytest.mark.parametrize("tracer", TRACERS)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP, signal.SIGINT])
def test_signal_to_roar_reaches_the_command(proj, tracer, sig):
    cmd = [sys.executable, "-c", HANDLER]
    b_rc, b_out = _send_after_ready(cmd, proj.root, sig)
    r_rc, r_out = _send_after_ready([*ROAR, "run", "-q", "--tracer", tracer, *cmd], proj.root, sig)
    assert (r_rc, r_out) == (b_rc, b_out) == (7, f"caught {int(sig)}\n".encode())
    assert db_jobs(proj.root)[-1][2] == 7


@pytest.mark.parametrize("tracer", TRACERS)
def test_sigterm_fate_is_recorded(proj, tracer):
    cmd = [sys.executable, "-c", PLAIN]
    b_rc, _ = _send_after_ready(cmd, proj.root, signal.SIGTERM)
    r_rc, _ = _send_after_ready([*ROAR, "run", "-q", "--tracer", tracer, *cmd], proj.root, signal.SIGTERM)
    assert r_rc == b_rc == -signal.SIGTERM
    assert db_jobs(proj.root)[-1][2] == -signal.SIGTERM


@pytest.mark.parametrize("tracer", TRACERS)
def test_sigkill_of_roar_takes_the_command_with_it(proj, tracer):
    p = subprocess.Popen([*ROAR, "run", "-q", "--tracer", tracer, "sh", "-c", "echo $$; exec sleep 300"],
                         cwd=proj.root, env=env(), stdout=subprocess.PIPE)
    child = int(p.stdout.readline())
    assert proc_state(child) not in (None, "Z")
    p.kill()
    p.wait()
    wait_for(lambda: proc_state(child) in (None, "Z", "X"), f"command {child} to die with roar")


STOPPED = ("T", "t")  # a command under ptrace shows 't' (stopped while traced), bare 'T'


def _outputs(root, tracer: str) -> set:
    """Base names of the last job's outputs (none recorded under --tracer none)."""
    j = json.loads(roar(["show", "@1", "--json"], root).stdout)
    return {os.path.basename(e["path"]) for e in j["outputs"]}


@pytest.mark.parametrize("tracer", TRACERS)
def test_stopped_command_stops_roar_and_sigcont_resumes_both(proj, tracer):
    """A command that stops itself stops roar (so a shell sees the job stopped); SIGCONT to
    roar resumes both, and tracing goes on: what the command writes after it is recorded."""
    (proj.root / "in.txt").write_text("x\n")
    script = "echo $$ > pid.txt; kill -STOP $$; cat in.txt > after.txt; echo resumed"
    p = subprocess.Popen([*ROAR, "run", "-q", "--tracer", tracer, "sh", "-c", script],
                         cwd=proj.root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: proc_state(p.pid) == "T", "roar to stop with its stopped command")
        assert proc_state(int((proj.root / "pid.txt").read_text())) in STOPPED
        os.kill(p.pid, signal.SIGCONT)
        out, err = p.communicate(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert (p.returncode, out, without_none_note(err)) == (0, b"resumed\n", b"")
    assert db_jobs(proj.root)[-1][1:] == (f"sh -c '{script}'", 0)
    if tracer != "none":
        assert "after.txt" in _outputs(proj.root, tracer)


def _children(pid: int) -> list:
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(c) for c in f.read().split()]


def _fifo_job(proj, tracer: str, **kw) -> tuple[subprocess.Popen, int]:
    """`roar run sh -c SCRIPT` where SCRIPT waits on a FIFO: (roar's Popen, the command's pid)."""
    os.mkfifo(proj.root / "go.fifo")
    (proj.root / "in.txt").write_text("x\n")
    script = "echo $$; read line < go.fifo; cat in.txt > after.txt; echo done"
    p = subprocess.Popen([*ROAR, "run", "-q", "--tracer", tracer, "sh", "-c", script],
                         cwd=proj.root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    return p, int(p.stdout.readline())


def _finish_fifo_job(proj, p: subprocess.Popen, tracer: str) -> None:
    with open(proj.root / "go.fifo", "w") as f:
        f.write("go\n")
    out, err = p.communicate(timeout=60)
    assert (p.returncode, out, without_none_note(err)) == (0, b"done\n", b"")
    assert db_jobs(proj.root)[-1][2] == 0
    if tracer != "none":
        assert "after.txt" in _outputs(proj.root, tracer)


@pytest.mark.parametrize("tracer", TRACERS)
def test_command_stopped_from_outside_stops_roar_and_sigcont_to_roar_resumes_it(proj, tracer):
    """`kill -STOP <command>` from another process: roar stops with it; `kill -CONT <roar>`
    (roar relays it) resumes the command, which then runs to its end, traced."""
    p, cmd = _fifo_job(proj, tracer)
    try:
        os.kill(cmd, signal.SIGSTOP)
        wait_for(lambda: proc_state(p.pid) == "T", "roar to stop with its stopped command")
        assert proc_state(cmd) in STOPPED
        os.kill(p.pid, signal.SIGCONT)
        wait_for(lambda: proc_state(cmd) not in STOPPED, "the command to be continued")
        _finish_fifo_job(proj, p, tracer)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()


@pytest.mark.parametrize("tracer", TRACERS)
def test_job_stopped_and_continued_as_a_group(proj, tracer):
    """^Z then `fg`: SIGTSTP to the job's whole process group (roar, roar-ptrace and the
    command alike), then SIGCONT to the group. Everything resumes once, and nothing stops
    again afterwards (roar-ptrace must not act on the command's stop after the group's
    SIGCONT has already continued it): the command finishes, traced, and roar with it."""
    p, cmd = _fifo_job(proj, tracer, process_group=0)
    try:
        os.killpg(p.pid, signal.SIGTSTP)
        wait_for(lambda: proc_state(p.pid) == "T" and proc_state(cmd) in STOPPED, "the job to stop")
        if tracer == "ptrace":
            front, tracer_pid = _children(p.pid)[0], _children(_children(p.pid)[0])[0]
            # The tracer has delivered the stop and is idle again (asked twice, a poll apart).
            for _ in range(2):
                wait_for(lambda: proc_state(front) == "T" and proc_state(tracer_pid) == "S"
                         and proc_state(cmd) == "t", "the tracer to leave the command stopped")
        os.killpg(p.pid, signal.SIGCONT)
        wait_for(lambda: proc_state(cmd) not in STOPPED, "the command to be continued")
        _finish_fifo_job(proj, p, tracer)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()


def test_step_timeout_and_other_directory_without_subprocess(proj, tmp_path):
    """The path `roar reproduce` takes (another directory, a step timeout) runs through the
    same spawn and wait: the command starts there, with default signals, and is killed at
    the timeout, recorded as such."""
    from roar_nb.session import Project, run_command

    other = tmp_path / "elsewhere"
    other.mkdir()
    project = Project(proj.root)
    res = run_command(project, ["sh", "-c", "pwd > where.txt; grep SigIgn /proc/self/status >> where.txt"],
                      cwd=str(other), timeout=60)
    assert res.returncode == 0
    assert (other / "where.txt").read_text() == f"{other}\nSigIgn:\t0000000000000000\n"
    res = run_command(project, ["sleep", "30"], cwd=str(other), timeout=0.5)
    assert res.returncode == -signal.SIGKILL
    assert "killed after the 0.5 s step timeout" in res.job.capture_notes
    assert db_jobs(proj.root)[-1] == (2, "sleep 30", -signal.SIGKILL)


@pytest.mark.parametrize("tracer", TRACERS)
def test_terminal_ctrl_c_reaches_the_command_once(proj, tracer):
    """^C on a real terminal (a pty whose foreground group is roar's) goes to roar and the
    command alike; roar must not relay it a second time."""
    import pty

    code = ("import signal, sys, time\nn = [0]\n"
            "signal.signal(signal.SIGINT, lambda *a: n.__setitem__(0, n[0] + 1))\n"
            "print('ready', flush=True)\ntime.sleep(3)\nprint('sigints', n[0], flush=True)\nsys.exit(n[0])")
    pid, fd = pty.fork()
    if pid == 0:  # the child: session leader on the pty, roar in the foreground
        os.chdir(proj.root)
        os.execve(ROAR[0], [*ROAR, "run", "-q", "--tracer", tracer, sys.executable, "-c", code], env())
    out = b""
    while b"ready" not in out:
        out += os.read(fd, 1024)
    os.write(fd, b"\x03")
    try:
        while chunk := os.read(fd, 1024):
            out += chunk
    except OSError:  # EIO once the pty has no process left
        pass
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 1 and b"sigints 1" in out
