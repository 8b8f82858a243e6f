"""Locating the roar-ptrace tracer binary, building its command line, reading its notes.

The binary is found in roar_nb/_native/ (where `make build` copies it), else in
the Cargo target directory of a source checkout. `roar-ptrace` writes the same
event files as the preload library, plus `roar-ptrace.notes` in the trace
directory: when the command started and its exit status arrived, and anything
worth telling the user (it fell back to another backend, a tracer error,
processes that outlived the command).

This module runs nothing but `roar-ptrace --probe` (for `roar tracer status`);
it never decides which backend a job uses (that is capture/select.py).
"""

from __future__ import annotations

import os

BIN_NAME = "roar-ptrace"
NOTES_NAME = "roar-ptrace.notes"
_PKG = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # roar_nb/


def candidates() -> list[str]:
    return [os.path.join(_PKG, "_native", BIN_NAME),
            os.path.join(os.path.dirname(_PKG), "rust", "target", "release", BIN_NAME)]


def binary_path() -> str | None:
    """Absolute path of the tracer binary, or None if it is not built."""
    for c in candidates():
        if os.path.isfile(c) and os.access(c, os.X_OK):
            return c
    return None


def problem() -> str | None:
    """None if ptrace tracing can be attempted here, else why not (one line, no process started)."""
    if binary_path() is None:
        return "roar-ptrace binary not found (run `make build`)"
    try:
        with open("/proc/sys/kernel/yama/ptrace_scope") as f:
            scope = f.read().strip()
    except OSError:
        scope = "0"
    if scope == "3":
        return "ptrace is disabled on this host (kernel.yama.ptrace_scope=3)"
    if scope == "2" and os.geteuid() != 0:
        return "ptrace needs CAP_SYS_PTRACE here (kernel.yama.ptrace_scope=2)"
    return None


def probe() -> tuple[bool, str]:
    """Actually try ptrace + a seccomp filter on a throw-away child: (works, what it said).

    On success the text also says how opens reach the tracer (seccomp notifications
    with same-CPU wake-ups on Linux >= 6.6, else ptrace stops)."""
    p = problem()
    if p is not None:
        return False, p
    import subprocess  # only for `roar tracer status`

    try:
        r = subprocess.run([binary_path(), "--probe"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError) as e:
        return False, f"roar-ptrace --probe failed: {e}"
    text = r.stdout.strip() or r.stderr.strip() or "probe failed"
    return r.returncode == 0, text.removeprefix("ok: ")


def preload_command(trace_dir: str, argv: list[str], lib: str) -> list[str]:
    """The argv that runs `argv` under the preload library through roar-ptrace's minimal
    launcher, which hands a static `argv` to `roar-ptrace --attach` before exec'ing it."""
    return [binary_path() or BIN_NAME, "--preload-only", lib, "--trace-dir", trace_dir, "--", *argv]


def command(trace_dir: str, argv: list[str], fallback_preload: str | None = None,
            wait_all: bool = False) -> list[str]:
    """The argv that runs `argv` under the ptrace tracer."""
    cmd = [binary_path() or BIN_NAME, "--trace-dir", trace_dir]
    if wait_all:
        cmd.append("--wait-all")
    if fallback_preload:
        cmd += ["--fallback-preload", fallback_preload]
    return cmd + ["--", *argv]


KILLED = "roar-ptrace was killed before it learned the command's fate: file I/O may be missing"


def read_notes(trace_dir: str) -> tuple[str | None, list[str]]:
    """(backend actually used if the tracer fell back, partial-capture reasons) from the notes file.

    The front writes `started` when the command is forked and `status` when its fate
    arrives; a run with the first and not the second (nor a reason of its own) lost
    its front to a signal (e.g. `pkill -9 roar-ptrace`), and the records the tracer
    still held with it, so it is partial with that reason."""
    backend, partial, started, status = None, [], False, False
    try:
        with open(os.path.join(trace_dir, NOTES_NAME), errors="replace") as f:
            text = f.read()
    except OSError:
        return None, []
    for line in text.splitlines():
        key, _, value = line.partition("\t")
        if key == "backend":
            backend = value
        elif key == "partial" and value not in partial:
            partial.append(value)
        elif key == "started":
            started = True
        elif key == "status":
            status = True
    if started and not status and backend is None and not partial:
        partial.append(KILLED)
    return backend, partial
