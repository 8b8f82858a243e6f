"""Tracer overhead per backend: startup, marginal cost per file, marginal cost per read/write.

    .venv/bin/python tests/benchmarks/bench_tracers.py [--reps N] [--quick]

Measures the tracers alone, through minimal launchers and without the roar CLI's
start-up and hashing: `roar-ptrace --preload-only LIB -- CMD` (sets LD_PRELOAD and
execs) and `roar-ptrace -- CMD` (ptrace + seccomp; opens arrive as seccomp
notifications with same-CPU wake-ups on Linux >= 6.6), and the same with
`ROAR_PTRACE_NOTIFY=0` ("ptrace-stops": every traced call a ptrace stop), and with
`ROAR_PTRACE_SECCOMP=0` ("ptrace-syscall": no seccomp filter, every syscall a PTRACE_SYSCALL
stop, which is how an unprivileged user is traced). The workload is a small C
program (compiled here with gcc) so that the figures are the tracer's, not an
interpreter's:

* startup: `true` (median of many runs, minus the untraced median);
* per file: write then read N distinct 4 KiB files, N in 0..5000; slope of the
  (traced - untraced) medians against N (least squares);
* per read/write syscall: K 64-byte pwrite+pread calls spread over a fixed set
  of 16 files, K in 400..25600; slope against K.

Prints tables in the style of the reference benchmark page. Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import Table, machine_lines, time_cmd  # noqa: E402

REPO = Path(__file__).resolve().parent.parent.parent

WORKLOAD_C = r"""
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
/* files N: write then read N distinct files.  syscalls K: K/2 pwrite + K/2 pread on 16 files. */
int main(int argc, char **argv) {
    long n = argc > 2 ? atol(argv[2]) : 0;
    char buf[4096], name[64];
    memset(buf, 'x', sizeof buf);
    if (argc > 1 && !strcmp(argv[1], "files")) {
        for (long i = 0; i < n; i++) {
            snprintf(name, sizeof name, "f%05ld.dat", i);
            int fd = open(name, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            write(fd, buf, sizeof buf);
            close(fd);
            fd = open(name, O_RDONLY);
            read(fd, buf, sizeof buf);
            close(fd);
        }
    } else if (argc > 1) {
        int fds[16];
        for (int i = 0; i < 16; i++) {
            snprintf(name, sizeof name, "s%02d.dat", i);
            fds[i] = open(name, O_RDWR | O_CREAT, 0644);
        }
        for (long i = 0; i < n / 2; i++) {
            pwrite(fds[i % 16], buf, 64, (i % 64) * 64);
            pread(fds[(i + 7) % 16], buf, 64, (i % 64) * 64);
        }
    }
    return 0;
}
"""


def slope_us(xs: list, ys_ms: list) -> float:
    """Least-squares slope of ys (ms) over xs, in microseconds per unit."""
    mx, my = statistics.fmean(xs), statistics.fmean(ys_ms)
    num = sum((x - mx) * (y - my) for x, y in zip(xs, ys_ms))
    den = sum((x - mx) ** 2 for x in xs)
    return 1000.0 * num / den


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="runs per point (median); startup uses 5x")
    ap.add_argument("--quick", action="store_true", help="fewer points and runs (smoke test)")
    a = ap.parse_args()
    reps = 3 if a.quick else a.reps

    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO / "rust", check=True)
    rel = REPO / "rust" / "target" / "release"
    lib, tracer = str(rel / "libroar_preload.so"), str(rel / "roar-ptrace")

    # tmpfs when there is one: disk writeback noise here is larger than the tracer costs measured.
    shm = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    with tempfile.TemporaryDirectory(prefix="roar-bench-tracers-", dir=shm) as tmp:
        tmp = Path(tmp)
        src = tmp / "workload.c"
        src.write_text(WORKLOAD_C)
        prog = str(tmp / "workload")
        subprocess.run(["gcc", "-O2", "-o", prog, str(src)], check=True)
        trace = tmp / "trace"
        work = tmp / "work"
        work.mkdir()
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ROAR_TRACE_DIR")}

        def wrap(backend: str, argv: list) -> list:
            if backend == "preload":
                return [tracer, "--preload-only", lib, "--trace-dir", str(trace), "--", *argv]
            if backend.startswith("ptrace"):
                return [tracer, "--trace-dir", str(trace), "--", *argv]
            return argv

        envs = {b: env for b in ("baseline", "preload", "ptrace")}
        envs["ptrace-stops"] = dict(env, ROAR_PTRACE_NOTIFY="0")
        envs["ptrace-syscall"] = dict(env, ROAR_PTRACE_SECCOMP="0")
        backends = list(envs)
        opens_via = subprocess.run([tracer, "--probe"], capture_output=True, text=True).stdout.strip()

        def measure(argv: list, n: int) -> dict:
            """Median ms per backend; runs interleaved so drift hits every backend alike."""
            samples: dict = {b: [] for b in backends}
            for _ in range(n):
                for b in backends:
                    for d in (trace, work):
                        subprocess.run(["rm", "-rf", str(d)], check=True)
                        d.mkdir()
                    samples[b].append(time_cmd(wrap(b, argv), work, envs[b]) * 1000)
            return {b: statistics.median(v) for b, v in samples.items()}

        true = "/bin/true"
        startup = measure([true], reps * 5)
        files_n = [0, 500, 2000, 5000] if a.quick else [0, 200, 500, 1000, 2000, 5000]
        rows = [measure([prog, "files", str(n)], reps) for n in files_n]
        per_file = {b: [r[b] for r in rows] for b in backends}
        sys_k = [400, 3200, 25600] if a.quick else [400, 1600, 6400, 25600]
        rows = [measure([prog, "syscalls", str(k)], reps) for k in sys_k]
        per_sys = {b: [r[b] for r in rows] for b in backends}
        where = f"tmpfs ({shm})" if shm else "the temp directory's file system"

    print("roar-nb tracer overhead (tracer alone: minimal launcher, no roar CLI, no hashing)")
    for line in machine_lines():
        print(line)
    print(f"runs      median of {reps} per point ({reps * 5} for startup), backends interleaved; "
          f"workload: C program (gcc -O2) on {where}")
    print(f"ptrace    {opens_via}\n")

    traced = ("ptrace", "ptrace-stops", "ptrace-syscall", "preload")

    def per_backend(title: str, column: str, value) -> None:
        print(title + "\n")
        t = Table(["Backend", column], right={1})
        for b in traced:
            t.add(b, value(b))
        print(t.render() + "\n")

    def scaling(label: str, xs: list, data: dict, fmt: str) -> None:
        base = data["baseline"]
        t = Table([label, "Baseline", *traced], right=set(range(2 + len(traced))))
        for i, x in enumerate(xs):
            t.add(f"{x:,}", f"{base[i]:.1f} ms", *(format(data[b][i] - base[i], fmt) for b in traced))
        print(t.render() + "\n")

    def slope(xs: list, data: dict, b: str) -> float:
        return slope_us(xs, [x - y for x, y in zip(data[b], data["baseline"])])

    per_backend(f"Startup cost (wrapping `{true}`; untraced baseline {startup['baseline']:.2f} ms)",
                "Startup overhead", lambda b: f"{startup[b] - startup['baseline']:.2f} ms")
    per_backend(f"Per-file overhead (one write + one read per file; regression over {files_n[0]}-{files_n[-1]} files)",
                "Per-file overhead", lambda b: f"{slope(files_n, per_file, b):.1f} us")
    per_backend(f"Per-syscall overhead (pwrite+pread on 16 files; regression over {sys_k[0]}-{sys_k[-1]} syscalls)",
                "Per-read/write overhead", lambda b: f"{slope(sys_k, per_sys, b):.3f} us")
    print("Measured scaling data (overhead in ms over the untraced baseline, medians)\n")
    scaling("Files (N)", files_n, per_file, "+.1f")
    scaling("Syscalls (K)", sys_k, per_sys, "+.2f")
    return 0


if __name__ == "__main__":
    sys.exit(main())
