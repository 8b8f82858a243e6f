"""Shared helpers for the roar-nb benchmark scripts (tests/benchmarks/bench_*.py).

Timing of whole subprocesses, medians, the machine/versions header, plain-text
tables in the style of the reference benchmark pages, and throwaway venvs for
comparing against another tool. Stdlib only, so a benchmark runs from any env
that can run roar itself.

Not a test module: pytest does not collect it (no test_ prefix), and nothing here
asserts on timings.
"""

from __future__ import annotations

import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Optional, Sequence

# A single hung run must not hang the whole benchmark; 10 minutes is far above
# any workload here (the slowest, 1 GiB under a foreign tracer, takes seconds).
RUN_TIMEOUT_S = 600.0


class RunFailed(Exception):
    """A timed command exited non-zero; `message` is its last stderr line, for a table cell."""

    def __init__(self, argv: Sequence[str], rc: int, message: str):
        super().__init__(f"{' '.join(map(str, argv))} -> exit {rc}: {message}")
        self.rc = rc
        self.message = message


def time_cmd(argv: Sequence[str], cwd: Path, env: dict, timeout: float = RUN_TIMEOUT_S) -> float:
    """Wall-clock seconds of one `argv` run, stdout/stderr to DEVNULL.

    Output goes to DEVNULL (not a pipe) so the timing includes no reader on our
    side and no pipe-buffer back-pressure; roar prints its summary on stderr.
    On a non-zero exit the command is run once more with stderr captured, only
    to get an error message for the table; that run is not timed.
    """
    # Not subprocess.run(timeout=...): with a timeout, Popen.wait() polls with doubling
    # sleeps (0.5, 1, 2, ... 50 ms), so a child that exits at 44 ms is noticed at 63.5 ms
    # and every figure snaps to those steps. A blocking wait plus a kill timer measures
    # the real exit time.
    import threading

    t0 = time.perf_counter()
    p = subprocess.Popen(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fired = threading.Event()

    def kill() -> None:
        fired.set()
        p.kill()

    timer = threading.Timer(timeout, kill)
    timer.start()
    try:
        rc = p.wait()
    finally:
        timer.cancel()
    elapsed = time.perf_counter() - t0
    if fired.is_set():
        raise RunFailed(argv, -1, f"timed out after {timeout:.0f} s")
    if rc != 0:
        raise RunFailed(argv, rc, error_message(argv, cwd, env, timeout))
    return elapsed


def error_message(argv: Sequence[str], cwd: Path, env: dict, timeout: float = RUN_TIMEOUT_S) -> str:
    """Re-run a failing command with stderr captured; return its last meaningful line."""
    try:
        p = subprocess.run(list(argv), cwd=cwd, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True, errors="replace", timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"timed out after {timeout:.0f} s"
    lines = [ln.strip() for ln in p.stderr.splitlines() if ln.strip()]
    # Tools often end with a hint; prefer the last line that looks like the error.
    for ln in reversed(lines):
        if any(w in ln.lower() for w in ("error", "failed", "traceback", "exception", "not ")):
            return ln[:120]
    return (lines[-1][:120] if lines else f"exit {p.returncode}, no stderr")


def median_ms(samples: Iterable[float]) -> float:
    """Median of seconds samples, in milliseconds."""
    return statistics.median(samples) * 1000.0


def fmt_ms(ms: Optional[float], signed: bool = False) -> str:
    """`12.3 ms` / `+12.3 ms` / `1,234 ms`: one decimal below 100 ms, none above (noise dominates)."""
    if ms is None:
        return "-"
    sign = "+" if signed and ms >= 0 else ""
    if abs(ms) >= 100:
        return f"{sign}{ms:,.0f} ms"
    return f"{sign}{ms:.1f} ms"


def run_quiet(argv: Sequence[str], cwd: Optional[Path] = None, env: Optional[dict] = None,
              input_text: Optional[str] = None, timeout: float = RUN_TIMEOUT_S) -> subprocess.CompletedProcess:
    """Run an untimed set-up command; raise with its output if it fails (set-up errors are fatal)."""
    p = subprocess.run(list(argv), cwd=cwd, env=env, input=input_text if input_text is not None else "",
                       capture_output=True, text=True, errors="replace", timeout=timeout)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(map(str, argv))} failed (exit {p.returncode}):\n{p.stdout}{p.stderr}")
    return p


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (first `model name`), or platform's guess."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def nproc() -> int:
    """CPUs this process may run on (what `nproc` prints), not the host's total."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def machine_lines() -> list[str]:
    """Header lines describing the machine, so figures are never read without their context."""
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = f", {int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
                break
    except OSError:
        pass
    return [
        f"machine   {nproc()} CPUs (nproc), {cpu_model()}{mem}",
        f"os        {platform.system()} {platform.release()} ({platform.machine()})",
        f"python    {platform.python_version()} ({sys.executable})",
    ]


@dataclass
class Table:
    """A plain-text table: `a | b | c` rows under a header and a rule, columns padded to fit."""

    headers: list[str]
    rows: list[list[str]] = field(default_factory=list)
    right: set[int] = field(default_factory=set)  # columns aligned right (numbers)

    def add(self, *cells: object) -> None:
        self.rows.append([str(c) for c in cells])

    def render(self) -> str:
        widths = [max(len(r[i]) for r in [self.headers] + self.rows) for i in range(len(self.headers))]

        def line(cells: list[str]) -> str:
            return " | ".join(c.rjust(w) if i in self.right else c.ljust(w)
                              for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

        rule = "-+-".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule] + [line(r) for r in self.rows])


def make_venv(path: Path, packages: Sequence[str], python: str = "python3") -> Path:
    """Create a throwaway venv at `path` and pip-install `packages`; return its bin/ directory.

    `python3 -m venv` (not the benchmark's own interpreter) so the venv is not
    nested in roar-nb's; pip's output is kept only for the error message.
    """
    run_quiet([python, "-m", "venv", str(path)], timeout=300)
    bin_dir = path / "bin"
    run_quiet([str(bin_dir / "python"), "-m", "pip", "install", "-q",
               "--disable-pip-version-check", *packages], timeout=900)
    return bin_dir


def rmtree_quiet(path: Path) -> None:
    """Remove a directory tree if present (between runs, so every run starts from the same state)."""
    shutil.rmtree(path, ignore_errors=True)


def settle_disk(pause_s: float = 1.0) -> None:
    """Flush and wait after deleting outputs, before the next timed run.

    Deleting files frees blocks that ext4 (with `discard`, as on this VM) trims at
    the next journal commit; file creation right after is several times slower for
    a second or so. Syncing commits now, and the pause lets the trims drain, so the
    cost stays outside every timed run instead of landing on whichever runs next.
    """
    os.sync()
    time.sleep(pause_s)


def filesystem_of(path: Path) -> str:
    """`ext4 /dev/vda (rw,relatime,discard)` for the mount holding `path` (file timings depend on it)."""
    try:
        best = ("", "?", "?", "")
        target = str(Path(path).resolve())
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype, opts = line.split()[:4]
            inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
            if inside and len(mnt) >= len(best[0]):
                best = (mnt, dev, fstype, opts)
        mnt, dev, fstype, opts = best
        keep = [o for o in opts.split(",") if o in ("rw", "ro", "discard", "relatime", "noatime", "sync")]
        return f"{fstype} {dev} on {mnt} ({','.join(keep)})"
    except OSError:
        return "unknown"
