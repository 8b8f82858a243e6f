"""Preload capture around starting programs, through `roar run` and the real library.

Every case is captured exactly or the job is `partial` with a note naming the real
reason (issue 11 items 9, 10, 14; issue 12 item 9): a static program started by a
dynamic one (handed to `roar-ptrace --attach`; partial only if that cannot be done),
a daemon that outlives the command, io_uring, file calls through libc's `syscall()`,
posix_spawn file actions, and trace records that cannot be written because /dev/shm
is tiny or full.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

PY = sys.executable
BUSYBOX = "/bin/busybox"


def last_job(proj):
    return proj.dag("--expanded")["jobs"][-1]


def names(job, direction):
    return {os.path.relpath(e["path"], job["cwd"]) for e in job[direction]}


def notes(job) -> str:
    return "\n".join(job["capture_notes"])


@pytest.fixture
def inp(proj):
    (proj.root / "in.txt").write_text("data\n")
    return proj


def bare(proj, *argv, env=None):
    """`argv` run untraced in the project: (exit code, stdout, stderr)."""
    p = subprocess.run(argv, cwd=proj.root, capture_output=True, timeout=120, env=env)
    return p.returncode, p.stdout, p.stderr


# `env` finds busybox with execvp, whose failed attempts along PATH come first.
STATIC_BY_SHELL = "busybox cat in.txt; busybox cat in.txt > /dev/null; env busybox cp in.txt out.txt"


@pytest.mark.parametrize("tracer", ["auto", "preload"])
def test_static_binary_started_by_a_shell_is_captured(inp, tracer):
    """Issue 11 item 9: the preload library hands the static program to `roar-ptrace --attach`
    before its exec: its reads and writes are recorded, the job is complete, and the command
    behaves as it does bare."""
    plain = bare(inp, "sh", "-c", STATIC_BY_SHELL)
    (inp.root / "out.txt").unlink()
    r = inp.roar("run", "--tracer", tracer, "sh", "-c", STATIC_BY_SHELL, check=False)
    assert (r.returncode, r.stdout) == plain[:2]
    assert (inp.root / "out.txt").read_text() == "data\n"
    job = last_job(inp)
    assert job["backend"] == "preload" and job["capture_level"] == "complete", job["capture_notes"]
    assert names(job, "inputs") == {"in.txt"} and names(job, "outputs") == {"out.txt"}
    assert b"capture partial" not in r.stderr


def test_static_program_that_forks_and_execs_is_followed(inp):
    """The attached tracer follows the static program's own children and execs (a static
    shell running a background job and another static program), and lets go of a dynamic
    program it execs (the preload library records that one itself)."""
    script = ("busybox sh -c 'busybox cp in.txt a.txt & wait; busybox cat a.txt > b.txt; "
              "/bin/cat b.txt > c.txt; /bin/grep TracerPid /proc/self/status > tracer.txt; "
              "exec busybox cp c.txt d.txt'")
    inp.roar("run", "sh", "-c", script)
    job = last_job(inp)
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert names(job, "outputs") == {"a.txt", "b.txt", "c.txt", "tracer.txt", "d.txt"}
    assert names(job, "inputs") == {"in.txt"}
    assert (inp.root / "d.txt").read_text() == "data\n"
    # The dynamic grep was let go by the tracer (the library recorded it).
    assert (inp.root / "tracer.txt").read_text().split() == ["TracerPid:", "0"]


def test_failing_static_program_keeps_its_exit_status_and_output(inp):
    for script in ("busybox cat missing.txt", "exec busybox sh -c 'busybox cat in.txt; exit 7'",
                   "busybox sh -c 'kill -TERM $$'; echo after $?"):
        plain = bare(inp, "sh", "-c", script)
        r = inp.roar("run", "sh", "-c", script, check=False)
        assert (r.returncode, r.stdout) == plain[:2], script
        assert plain[2] in r.stderr, script  # the program's own stderr, then roar's summary
        assert last_job(inp)["exit_code"] == plain[0]


def test_static_program_sees_no_extra_child_and_keeps_its_parent(inp):
    """Same pid, same parent, and no child of ours to see or reap: the tracer is a
    reparented grandchild and the intermediate process is reaped before the exec."""
    code = textwrap.dedent(f"""
        import os
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.dup2(w, 1)
            me = os.getpid()
            os.execv({BUSYBOX!r}, ["busybox", "cat", f"/proc/{{me}}/task/{{me}}/children", f"/proc/{{me}}/stat"])
        os.close(w)
        out = os.read(r, 65536).decode()
        _, status = os.waitpid(pid, 0)
        stat = out.split(") ")[-1].split()
        assert out.startswith(f"{{pid}} (busybox)"), out  # no children listed before the stat line
        assert int(stat[1]) == os.getpid(), (stat, os.getpid())
        assert status == 0
        print("ok")
    """)
    r = inp.roar("run", PY, "-c", code)
    assert r.stdout == b"ok\n"
    assert last_job(inp)["capture_level"] == "complete", last_job(inp)["capture_notes"]


def test_children_that_outlive_the_static_program_are_noted(inp):
    """A static shell leaves a background job behind: the attached tracer follows it (its
    output is recorded here because the command waits), and says that it outlived the
    program (a job that ends first could be read before that I/O)."""
    r = inp.roar("run", "sh", "-c", 'busybox sh -c "(busybox sleep 0.3; busybox cp in.txt late.txt) &"; '
                 "i=0; while [ ! -e late.txt ] && [ $i -lt 600 ]; do busybox sleep 0.1; i=$((i+1)); done; "
                 "busybox sleep 0.5", timeout=180)
    job = last_job(inp)
    assert "late.txt" in names(job, "outputs")
    assert job["capture_level"] == "partial"
    assert "processes started by a static program outlived it" in notes(job)
    assert b"outlived it" in r.stderr


def test_failed_exec_of_a_static_program_lets_the_caller_go(inp):
    """The exec the tracer was attached for fails (E2BIG: one argument over 128 KiB): the
    tracer lets go, and the program carries on untraced by ptrace, recorded by the library."""
    code = textwrap.dedent(f"""
        import os
        try:
            os.execv({BUSYBOX!r}, ["busybox", "echo", "x" * 200000])
        except OSError as e:
            print("failed", e.errno)
        status = open("/proc/self/status").read()
        print([l for l in status.splitlines() if l.startswith("TracerPid")][0].split())
        open("after.txt", "w").write(open("in.txt").read())
    """)
    r = inp.roar("run", PY, "-c", code)
    assert r.stdout.decode().splitlines() == ["failed 7", "['TracerPid:', '0']"]
    job = last_job(inp)
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert names(job, "outputs") == {"after.txt"} and "in.txt" in names(job, "inputs")


@pytest.mark.parametrize("how", ["started by a shell", "the command under --tracer preload"])
def test_static_program_with_file_capabilities_is_not_attached(inp, how):
    """A tracer without CAP_SYS_PTRACE would make the kernel drop the program's file
    capabilities: it runs untraced, as before, and the job says so."""
    (inp.root / "capbin").mkdir()
    shutil.copy(BUSYBOX, inp.root / "capbin" / "busybox")
    subprocess.run(["setcap", "cap_net_raw+ep", str(inp.root / "capbin" / "busybox")], check=True)
    if how == "started by a shell":
        inp.roar("run", "sh", "-c", "capbin/busybox cp in.txt out.txt")
    else:
        inp.roar("run", "--tracer", "preload", "capbin/busybox", "cp", "in.txt", "out.txt")
    assert (inp.root / "out.txt").read_text() == "data\n"
    job = last_job(inp)
    assert job["capture_level"] == "partial"
    assert "capbin/busybox" in notes(job) and ("ran untraced" in notes(job) or "ran under preload" in notes(job))


def test_static_binary_is_partial_with_the_reason_when_ptrace_cannot_attach(inp):
    """The tracer refuses to attach (test fault): the program runs untraced, as before, and
    the job says so."""
    r = inp.roar("run", "sh", "-c", "busybox cp in.txt out.txt", env={"ROAR_PTRACE_FAULT": "attach"})
    assert (inp.root / "out.txt").read_text() == "data\n"  # the command itself ran normally
    job = last_job(inp)
    assert job["backend"] == "preload" and job["capture_level"] == "partial"
    assert "busybox started by" in notes(job) and "ran untraced" in notes(job)
    assert b"capture partial: static binary" in r.stderr


@pytest.mark.parametrize("how", ["execv", "subprocess"])
def test_static_binary_started_from_python_is_captured(inp, how):
    code = {
        "execv": f"import os; os.execv({BUSYBOX!r}, ['busybox', 'cp', 'in.txt', 'out.txt'])",
        "subprocess": f"import subprocess; subprocess.run([{BUSYBOX!r}, 'cp', 'in.txt', 'out.txt'], check=True)",
    }[how]
    inp.roar("run", PY, "-c", code)
    job = last_job(inp)
    assert job["exit_code"] == 0 and (inp.root / "out.txt").exists()
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert names(job, "outputs") == {"out.txt"} and "in.txt" in names(job, "inputs")


def test_static_binary_started_by_posix_spawn_is_partial(inp):
    """posix_spawn execs inside libc, in a child no hook of ours runs in: still said."""
    code = (f"import os; pid = os.posix_spawn({BUSYBOX!r}, ['busybox', 'cp', 'in.txt', 'out.txt'], "
            "os.environ); os.waitpid(pid, 0)")
    inp.roar("run", PY, "-c", code)
    job = last_job(inp)
    assert job["exit_code"] == 0 and (inp.root / "out.txt").exists()
    assert job["capture_level"] == "partial"
    assert f"static binary {BUSYBOX} started by" in notes(job)


def test_dynamic_children_and_waited_background_jobs_stay_complete(inp):
    inp.roar("run", "sh", "-c", "cp in.txt a.txt & wait; cat a.txt > b.txt")
    job = last_job(inp)
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert names(job, "outputs") == {"a.txt", "b.txt"}


def test_daemon_that_outlives_the_command_is_partial_and_not_waited_for(inp):
    go = inp.root / "go"
    code = textwrap.dedent(f"""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                null = os.open(os.devnull, os.O_RDWR)  # as daemons do: let go of roar's pipes
                for fd in (0, 1, 2):
                    os.dup2(null, fd)
                for _ in range(6000):  # until the test says go (at most 60 s)
                    if os.path.exists({str(go)!r}):
                        break
                    time.sleep(0.01)
                open("daemon_out.txt", "w").write(open("in.txt").read())
            os._exit(0)
        os._exit(0)
    """)
    try:
        r = inp.roar("run", PY, "-c", code, timeout=120)
        # roar returned while the daemon was still waiting for us: it did not wait for it.
        assert not (inp.root / "daemon_out.txt").exists()
        job = last_job(inp)
        assert job["capture_level"] == "partial"
        assert "still running when the job ended" in notes(job)
        assert b"process(es) were still running when the job ended" in r.stderr
    finally:
        go.write_text("")
    for _ in range(6000):
        if (inp.root / "daemon_out.txt").exists():
            break
        time.sleep(0.01)
    assert (inp.root / "daemon_out.txt").read_text() == "data\n"


def test_io_uring_setup_through_syscall_is_partial(inp):
    code = ("import ctypes; libc = ctypes.CDLL(None, use_errno=True); "
            "params = ctypes.create_string_buffer(120); fd = libc.syscall(425, 4, params); "
            "assert fd >= 0, ctypes.get_errno(); open('out.txt', 'w').write('x')")
    inp.roar("run", PY, "-c", code)
    job = last_job(inp)
    assert names(job, "outputs") == {"out.txt"}
    assert job["capture_level"] == "partial"
    assert "set up io_uring" in notes(job)


def test_file_calls_through_syscall_are_recorded_at_the_right_path(inp):
    """syscall(SYS_openat2/openat/renameat2/unlinkat) are recorded like their wrappers, and
    syscall(SYS_chdir) moves where later relative opens are recorded (never a wrong path)."""
    (inp.root / "sub").mkdir()
    code = textwrap.dedent("""
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        AT_FDCWD = -100
        how = (ctypes.c_uint64 * 3)(os.O_RDONLY, 0, 0)
        fd = libc.syscall(437, AT_FDCWD, b"in.txt", ctypes.byref(how), 24)  # openat2
        assert fd >= 0
        os.close(fd)
        open("first.txt", "w").close()  # a relative open: the cwd is cached now
        assert libc.syscall(80, b"sub") == 0  # chdir
        open("rel.txt", "w").write("r")
        fd = libc.syscall(257, AT_FDCWD, b"raw.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.close(fd)
        assert libc.syscall(316, AT_FDCWD, b"raw.txt", AT_FDCWD, b"moved.txt", 0) == 0  # renameat2
    """)
    inp.roar("run", PY, "-c", code)
    job = last_job(inp)
    assert names(job, "outputs") == {"first.txt", "sub/rel.txt", "sub/moved.txt"}
    assert "in.txt" in names(job, "inputs")
    assert job["capture_level"] == "complete", job["capture_notes"]


def test_posix_spawn_file_actions_opens_are_recorded(inp):
    code = textwrap.dedent("""
        import os
        os.mkdir("d")
        pid = os.posix_spawn("/bin/cat", ["cat"], os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "in.txt", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "d/spawn_out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)])
        os.waitpid(pid, 0)
    """)
    inp.roar("run", PY, "-c", code)
    job = last_job(inp)
    assert (inp.root / "d" / "spawn_out.txt").read_text() == "data\n"
    assert names(job, "outputs") == {"d/spawn_out.txt"}
    assert "in.txt" in names(job, "inputs")
    assert job["capture_level"] == "complete", job["capture_notes"]


# --- a tiny or full /dev/shm (private mount namespace, as root) ----------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                                reason="a private mount namespace needs root and unshare(1)")

WRITE_2000 = ("import os\nos.makedirs('many', exist_ok=True)\n"
              "for i in range(2000):\n    open(f'many/f{i:04d}.txt', 'w').write(str(i))\n")


def _run_with_shm(proj, size: str, script: str) -> subprocess.CompletedProcess:
    """`roar run python script` with a fresh tmpfs of `size` on /dev/shm, in a private mount ns."""
    from conftest import roar_cmd

    (proj.root / "job.py").write_text(script)
    roar = " ".join(f"'{a}'" for a in roar_cmd())
    sh = f"mount -t tmpfs -o size={size} tmpfs /dev/shm && exec {roar} run {PY} job.py"
    env = dict(os.environ)
    env.pop("ROAR_PROJECT", None)
    return subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c", sh], cwd=proj.root,
                          env=env, capture_output=True, timeout=300)


@needs_root
def test_tiny_dev_shm_falls_back_and_records_every_file(proj):
    r = _run_with_shm(proj, "1m", WRITE_2000)
    assert r.returncode == 0, r.stderr
    job = last_job(proj)
    assert len(job["outputs"]) == 2000
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert not os.listdir(proj.root / ".roar" / "traces")  # the fallback trace dir was removed


@needs_root
def test_dev_shm_filled_by_the_job_marks_it_partial(proj):
    """/dev/shm had room when the job began; the job filled it (as PyTorch does), so trace
    writes failed: the job must say so instead of recording a silent subset."""
    fill = ("import os\nwith open('/dev/shm/filler', 'wb', buffering=0) as f:\n"
            "    try:\n        while True:\n            f.write(b'\\0' * 4096)\n"
            "    except OSError:\n        pass\n")
    r = _run_with_shm(proj, "24m", fill + WRITE_2000)
    assert r.returncode == 0, r.stderr
    job = last_job(proj)
    assert len(job["outputs"]) < 2000  # records were lost ...
    assert job["capture_level"] == "partial"  # ... and the job says so, with the reason
    assert "could not write its trace records (No space left on device" in notes(job)


SPAWN_CHDIR = textwrap.dedent("""
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    fa = ctypes.create_string_buffer(256)  # posix_spawn_file_actions_t (80 bytes on glibc x86_64)
    assert libc.posix_spawn_file_actions_init(fa) == 0
    if sys.argv[1] == "chdir":
        assert libc.posix_spawn_file_actions_addchdir_np(fa, b"sub") == 0
    else:
        dirfd = os.open("sub", os.O_RDONLY | os.O_DIRECTORY)
        assert libc.posix_spawn_file_actions_addfchdir_np(fa, dirfd) == 0
    assert libc.posix_spawn_file_actions_addopen(fa, 1, b"out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                                 0o644) == 0
    argv = (ctypes.c_char_p * 3)(b"echo", b"hi", None)
    env = (ctypes.c_char_p * (len(os.environ) + 1))(*[f"{k}={v}".encode() for k, v in os.environ.items()],
                                                     None)
    pid = ctypes.c_int()
    assert libc.posix_spawn(ctypes.byref(pid), b"/bin/echo", fa, None, argv, env) == 0
    os.waitpid(pid.value, 0)
    libc.posix_spawn_file_actions_destroy(fa)
""")


@pytest.mark.parametrize("how", ["chdir", "fchdir"])
def test_posix_spawn_file_actions_after_a_chdir(inp, how):
    """An open after `addchdir_np` is recorded in that directory; after `addfchdir_np` the
    directory is unknown to the tracer, so the job is partial rather than a guessed path."""
    (inp.root / "sub").mkdir()
    (inp.root / "spawn.py").write_text(SPAWN_CHDIR)
    inp.roar("run", PY, "spawn.py", how)
    assert (inp.root / "sub" / "out.txt").read_text() == "hi\n"
    job = last_job(inp)
    if how == "chdir":
        assert names(job, "outputs") == {"sub/out.txt"}
        assert job["capture_level"] == "complete", job["capture_notes"]
    else:
        assert names(job, "outputs") == set()
        assert job["capture_level"] == "partial"
        assert "posix_spawn file action open-after-fchdir 'out.txt' was not recorded" in notes(job)


def test_a_programs_own_ld_preload_is_kept_after_ours_and_a_second_copy_is_dropped(inp):
    """A traced program that sets LD_PRELOAD for a child (its allocator, and a stale copy of roar's
    library from another install) gets roar's library first, its own after it in order, and no
    second copy of roar's (roar_events::preload_var, the rule preload.compose states in Python)."""
    # A real library to preload: libm, as this Python process mapped it.
    libm = next(ln.split()[-1] for ln in open("/proc/self/maps") if "/libm.so" in ln)
    script = (f"LD_PRELOAD='/stale/libroar_preload.so {libm}' sh -c 'echo \"$LD_PRELOAD\"; cat in.txt > copy.txt'")
    r = inp.roar("run", "--tracer", "preload", "sh", "-c", script)
    first, *rest = r.stdout.decode().strip().split(":")
    assert first.endswith("/libroar_preload.so") and not first.startswith("/stale"), r.stdout
    assert rest == [libm], r.stdout
    assert b"cannot be preloaded" not in r.stderr, r.stderr  # the stale copy never reached ld.so
    job = last_job(inp)
    assert "copy.txt" in names(job, "outputs") and job["capture_level"] == "complete"
