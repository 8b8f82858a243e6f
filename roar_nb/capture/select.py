"""Choosing the capture backend for a command, before it runs.

Owns: which backends exist here and why not (`status`), the `auto` decision
(`select`), the argv/env that run a command under the chosen backend, and the
capture notes the job records (`finish` adds what the tracer reported).

The decision looks only at files (is the program, or a launcher in front of it,
a static or setuid executable; is it a launcher that scrubs the environment),
never at the user's command running: a command runs exactly once, and a backend
that cannot start falls back *before* it runs (roar-ptrace does that itself
through `--fallback-preload`). Must not hash, store or print.
"""

from __future__ import annotations

import os
import struct

from roar_nb.model import factory, record
from roar_nb.capture import preload, ptrace
from roar_nb.errors import RoarError, TracerUnavailable, UsageError

TRACERS = ("auto", "preload", "ptrace", "none")

# Launchers that exec the real program after rebuilding its environment from
# scratch (LD_PRELOAD is dropped on the way) or under another identity.
ENV_CLEARING = frozenset({"sudo", "su", "doas", "pkexec", "runuser", "systemd-run"})
# Wrappers whose program is an argument: we look through them for static binaries.
_WRAPPERS = frozenset({"env", "nice", "nohup", "timeout", "stdbuf", "setsid", "taskset",
                       "ionice", "chrt", "time", "exec"})


@record
class Selection:
    """What `run_command` needs: run `argv` with `env`; record `backend` and `notes`."""

    backend: str  # "preload" | "ptrace" | "none"
    argv: list
    env: dict
    trace_dir: str | None
    notes: list = factory(list)
    partial: bool = False
    reason: str = ""  # why this backend (shown by `roar tracer status`/tests, not stored)


@record
class ProgramInfo:
    """The executables a command will run first: the program and any launchers in front."""

    chain: list  # resolved absolute paths, launcher first
    static: str | None = None  # first static executable in the chain
    setuid: str | None = None  # first setuid/setgid executable
    env_clearing: str | None = None  # first environment-scrubbing launcher


def _resolve(prog: str, path_env: str | None, cwd: str | None = None) -> str | None:
    exe = os.path.join(cwd or "", prog) if "/" in prog else preload.which(prog, path_env)
    return os.path.abspath(exe) if exe and os.path.isfile(exe) else None


def _is_static(exe: str) -> bool:
    """A 64/32-bit ELF executable without PT_INTERP (the loader never runs, so no LD_PRELOAD)."""
    try:
        with open(exe, "rb") as f:
            head = f.read(8192)
    except OSError:
        return False
    if head[:4] != b"\x7fELF":
        return False
    is64 = head[4] == 2
    if is64:
        e_phoff = struct.unpack_from("<Q", head, 0x20)[0]
        e_phentsize, e_phnum = struct.unpack_from("<HH", head, 0x36)
    else:
        e_phoff = struct.unpack_from("<I", head, 0x1C)[0]
        e_phentsize, e_phnum = struct.unpack_from("<HH", head, 0x2A)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if off + 4 > len(head):
            return False  # program headers beyond what we read: don't guess
        if struct.unpack_from("<I", head, off)[0] == 3:  # PT_INTERP
            return False
    return True


def _shebang(exe: str) -> list | None:
    try:
        with open(exe, "rb") as f:
            line = f.readline(256)
    except OSError:
        return None
    if not line.startswith(b"#!"):
        return None
    parts = line[2:].strip().split(None, 1)
    return [os.fsdecode(p) for p in parts] if parts else None


def _skip_wrapper_args(name: str, args: list) -> list:
    """The wrapped command of `env -i A=1 cmd`, `nice -n 5 cmd`, `timeout 10 cmd`..."""
    i = 0
    while i < len(args):
        a = args[i]
        if a == "--":
            return args[i + 1:]
        if name == "env" and "=" in a and not a.startswith("-"):
            i += 1
            continue
        if a.startswith("-"):
            takes_value = (name, a) in {("env", "-u"), ("env", "-C"), ("nice", "-n"), ("timeout", "-s"),
                                        ("timeout", "-k"), ("ionice", "-c"), ("ionice", "-n"),
                                        ("stdbuf", "-i"), ("stdbuf", "-o"), ("stdbuf", "-e")}
            i += 2 if takes_value else 1
            continue
        if name in ("timeout", "taskset", "chrt"):  # DURATION / MASK / PRIORITY first
            return args[i + 1:]
        return args[i:]
    return []


def inspect(argv: list, path_env: str | None, cwd: str | None = None) -> ProgramInfo:
    """Look at the executables the command starts with, through launchers and #! lines."""
    info = ProgramInfo(chain=[])
    words = list(argv)
    for _ in range(6):  # launchers rarely nest deeper; never loop forever
        if not words:
            break
        exe = _resolve(words[0], path_env, cwd)
        if exe is None:
            break
        info.chain.append(exe)
        try:
            st = os.stat(exe)
        except OSError:
            break
        if st.st_mode & 0o6000 and info.setuid is None:
            info.setuid = exe
        name = os.path.basename(exe)
        if name in ENV_CLEARING and info.env_clearing is None:
            info.env_clearing = exe
        if _is_static(exe):
            info.static = info.static or exe
        shebang = _shebang(exe)
        if shebang:
            words = shebang + [exe] + words[1:]
            continue
        if name in _WRAPPERS:
            words = _skip_wrapper_args(name, words[1:])
            continue
        break
    return info


def select(requested: str | None, argv: list, env: dict, trace_dir: str,
           cwd: str | None = None) -> Selection:
    """Pick the backend for `argv` (never runs it) and build how to run it.

    `requested` is auto | preload | ptrace | none. The trace directory is created
    when a backend will write into it.
    """
    requested = requested or "auto"
    if requested not in TRACERS:
        raise UsageError(f"unknown tracer {requested!r} (choose {', '.join(TRACERS)})")
    if requested == "none":
        return Selection("none", list(argv), dict(env), None, ["tracing disabled (--tracer none)"], True,
                         "requested")
    lib_problem = preload.problem()
    lib = None
    if lib_problem is None:
        try:
            lib = preload.injectable_path()  # no space or colon: ld.so splits LD_PRELOAD on them
        except TracerUnavailable as e:
            lib_problem = str(e)
    pt_problem = ptrace.problem()
    info = inspect(argv, env.get("PATH"), cwd)
    root = os.geteuid() == 0
    notes: list = []

    if requested == "auto":
        if info.setuid and not root:
            # Under ptrace the kernel would run it without its privileges: a different program.
            backend, why = "preload", f"setuid program {info.setuid}: ptrace would drop its privileges"
        elif info.static and pt_problem is None:
            backend, why = "ptrace", f"static executable {info.static}: LD_PRELOAD cannot enter it"
        elif info.env_clearing and pt_problem is None:
            backend, why = "ptrace", f"{info.env_clearing} rebuilds the environment (drops LD_PRELOAD)"
        elif lib_problem is None:
            backend, why = "preload", "dynamic executables: preload is cheapest"
        elif pt_problem is None:
            backend, why = "ptrace", f"preload unavailable: {lib_problem}"
        else:
            backend, why = "none", "no tracer available"
    else:
        backend, why = requested, "requested"
        if backend == "ptrace" and pt_problem is not None:
            notes.append(f"ptrace unavailable ({pt_problem}); fell back to preload before running")
            backend = "preload" if lib_problem is None else "none"
        if backend == "preload" and lib_problem is not None:
            if pt_problem is None and requested == "preload":
                notes.append(f"preload unavailable ({lib_problem}); fell back to ptrace before running")
                backend = "ptrace"
            else:
                backend = "none"

    if backend == "none":
        notes.append(lib_problem or pt_problem or "no tracer available")
        return Selection("none", list(argv), dict(env), None, notes, True, why)

    os.makedirs(trace_dir, exist_ok=True)
    if backend == "ptrace":
        cmd = ptrace.command(trace_dir, list(argv), fallback_preload=lib)
        return Selection("ptrace", cmd, dict(env), trace_dir, notes, bool(notes), why)

    child_env = dict(env)
    child_env["LD_PRELOAD"] = preload.compose(lib, child_env.get("LD_PRELOAD"))
    from roar_nb.config import ENV_PTRACE_BIN, ENV_TRACE_DIR

    child_env[ENV_TRACE_DIR] = trace_dir
    # A static program started under preload is handed to the ptrace tracer
    # (roar_events::attach); empty: ptrace cannot work here, keep the note.
    child_env[ENV_PTRACE_BIN] = (ptrace.binary_path() or "") if pt_problem is None else ""
    run_argv = list(argv)
    if info.static and pt_problem is None:
        # The preload launcher hands a static command to `roar-ptrace --attach` (static
        # programs started later are handed over by the library); each notes what it could not.
        run_argv = ptrace.preload_command(trace_dir, run_argv, lib)
        child_env["LD_PRELOAD"] = env.get("LD_PRELOAD", "")  # the launcher puts the library first
        if not child_env["LD_PRELOAD"]:
            del child_env["LD_PRELOAD"]
    elif info.static:
        notes.append(f"static binary {info.static} ran under preload: its own file I/O was not seen")
    if info.setuid and not root:
        notes.append(f"setuid program {info.setuid} ran under preload: the loader ignores LD_PRELOAD for it")
    elif info.env_clearing:
        notes.append(f"{info.env_clearing} rebuilds the environment: programs it starts may not be traced")
    return Selection("preload", run_argv, child_env, trace_dir, notes, bool(notes), why)


def check_runnable(argv: list, env: dict, cwd: str | None = None) -> None:
    """Raise FileNotFoundError / PermissionError as Popen(argv) would, before a tracer wraps it."""
    prog = os.path.join(cwd or "", argv[0]) if "/" in argv[0] else argv[0]
    if "/" in prog:
        if not os.path.exists(prog):
            raise FileNotFoundError(prog)
        if os.path.isdir(prog) or not os.access(prog, os.X_OK):
            raise PermissionError(prog)
        return
    if preload.which(prog, env.get("PATH", os.defpath)) is None:
        raise FileNotFoundError(prog)


def finish(sel: Selection) -> tuple[str, list, bool]:
    """After the run: (backend actually used, notes, partial?) including what the tracer reported."""
    backend, notes, partial = sel.backend, list(sel.notes), sel.partial
    if sel.trace_dir and sel.backend in ("ptrace", "preload"):
        # Under preload the notes come from `roar-ptrace --attach` (static children).
        used, extra = ptrace.read_notes(sel.trace_dir)
        if used and sel.backend == "ptrace":
            backend = used
        for n in extra:
            if n not in notes:
                notes.append(n)
        partial = partial or bool(extra)
    return backend, notes, partial


def status() -> list[dict]:
    """Every backend: whether it is available here, whether it actually works, and why not."""
    out = []
    lib_problem = preload.problem()
    detail = lib_problem or preload.library_path()
    works = lib_problem is None and _preload_works()
    out.append({"name": "preload", "available": lib_problem is None, "works": works,
                "detail": detail if works or lib_problem else "library loads but recorded nothing"})
    pt_works, pt_text = ptrace.probe()
    out.append({"name": "ptrace", "available": ptrace.binary_path() is not None, "works": pt_works,
                "detail": f"{ptrace.binary_path()} ({pt_text})" if pt_works else pt_text})
    out.append({"name": "audit", "available": True, "works": True,
                "detail": "notebooks only: Python-level capture (audit hooks)"})
    return out


def _preload_works() -> bool:
    """Run a tiny dynamic program under the library and check it produced a trace file."""
    import subprocess
    import tempfile

    from roar_nb.config import ENV_TRACE_DIR

    head = preload.which("head")
    if head is None:
        return False
    with tempfile.TemporaryDirectory(prefix="roar-probe-") as d:
        try:
            lib = preload.injectable_path()
        except RoarError:
            return False
        env = dict(os.environ, LD_PRELOAD=lib, **{ENV_TRACE_DIR: d})
        try:
            subprocess.run([head, "-c0", preload.library_path()], env=env, timeout=10,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError):
            return False
        return any(n.endswith(".ev") for n in os.listdir(d))
