"""End-to-end overhead of `roar run` (and `roar status`) against the bare command.

What it measures: the wall-clock time a user feels when prefixing a command with
`roar run` — CLI start-up, the preload tracer, hashing the outputs and recording
the job in .roar/roar.db — as the median time *added* over the same command run
bare, on these workloads:

  * `true` and `python -c pass` (python = the interpreter running this script);
  * a python script that writes N x 4 KiB files into a subdirectory and reads them
    all back, N = 0, 100, 1000, 5000;
  * one 1 GiB output (8 MiB chunks written from one preallocated buffer);
  * `roar status` in a project holding ~50 jobs (absolute time, not added).

Each workload runs in a fresh temporary project (`roar init -n` once), with a few
warm-up runs first; bare and traced runs are interleaved (rotating the order each
round) so drift in disk or CPU state hits them alike. Every run is timed with
time.perf_counter() around subprocess.run(), stdout/stderr to /dev/null; outputs
are removed before every run so each run does the same work and 1 GiB files do
not pile up. ROAR_QUIET=1 and DO_NOT_TRACK=1 are set for every run (the latter
keeps roar-cli's telemetry off the network and out of the timings).

With `--against roar-cli`, the PyPI roar-cli (default 0.4.7) is installed into a
throwaway venv and the same workloads run under `<venv>/bin/roar run --tracer
preload` side by side, in the same rounds. A roar-cli failure is shown in its
table cell instead of stopping the benchmark.

Targets for roar-nb (added median; `roar status` total) are printed next to each
row as PASS/MISS. This script reports figures only: it never asserts on them and
exits 0 on a miss.

Run it (from the repo root, after `make build` so the preload tracer exists):

    .venv/bin/python tests/benchmarks/bench_run.py                 # roar-nb only
    .venv/bin/python tests/benchmarks/bench_run.py --against roar-cli
    .venv/bin/python tests/benchmarks/bench_run.py --quick         # 3 repeats, a minute or two

The header says which tracer roar-nb actually used: if the preload library is
missing, roar-nb falls back to no file capture and the figures are not the
tracer's.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402  (path set just above: benchmarks are scripts, not a package)
    RunFailed, Table, filesystem_of, fmt_ms, machine_lines, make_venv, median_ms, rmtree_quiet, run_quiet, settle_disk,
    time_cmd,
)

ROAR_CLI_DEFAULT = "roar-cli==0.4.7"
STATUS_JOBS = 50
FILE_COUNTS = (0, 100, 1000, 5000)

# Issue targets for roar-nb (ms): added median over bare, except `roar status` (total).
TARGETS_MS = {
    "true": 60.0,
    "1000 files": 150.0,
    "5000 files": 600.0,
    "1 GiB output": 500.0,
    "roar status (50 jobs)": 100.0,
}

# The workload scripts are written to a scripts/ directory shared by all projects, so
# every tool runs byte-identical code; their data goes to the run's working directory.
FILES_SCRIPT = '''\
import os, sys
n, d = int(sys.argv[1]), sys.argv[2]
os.makedirs(d, exist_ok=True)
block = b"x" * 4096
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "wb") as f:
        f.write(block)
for i in range(n):
    with open(os.path.join(d, f"f{i:05d}"), "rb") as f:
        f.read()
'''

BIG_SCRIPT = '''\
import sys
chunk = bytearray(8 << 20)          # preallocated once: the workload is the write, not allocation
with open(sys.argv[1], "wb") as f:
    for _ in range((1 << 30) // len(chunk)):
        f.write(chunk)
'''


@dataclass
class Workload:
    name: str
    argv: list[str]
    repeat: int
    warmup: int
    outputs: list[str] = field(default_factory=list)  # relative paths cleared before every run
    # True: delete outputs before every run (1 GiB would fill the disk); False: move them
    # aside and delete them all after the workload, because on this VM's ext4 (mounted
    # with `discard`) deleting thousands of files slows file creation for a second or two
    # afterwards, which would land in whichever run comes next.
    delete_each: bool = False


@dataclass
class Tool:
    """One way of running a workload: bare, or under a roar binary's `run`."""

    name: str
    roar: Optional[Path]            # None for the bare command
    run_args: list[str] = field(default_factory=list)

    def argv(self, cmd: list[str]) -> list[str]:
        return cmd if self.roar is None else [str(self.roar), "run", *self.run_args, *cmd]

    def init(self, project: Path, env: dict) -> None:
        """A fresh project: `roar init -n` (leave .gitignore alone); stdin fed 'n' in case it asks."""
        project.mkdir(parents=True)
        if self.roar is not None:
            run_quiet([str(self.roar), "init", "-n"], cwd=project, env=env, input_text="n\n")


@dataclass
class Result:
    samples: list[float] = field(default_factory=list)  # seconds
    error: Optional[str] = None

    @property
    def median(self) -> Optional[float]:
        return median_ms(self.samples) if self.samples and not self.error else None


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="bench_run.py",
        description="Median wall-clock time `roar run` adds over the bare command (true, python -c pass, "
                    "N x 4 KiB files, 1 GiB output) and `roar status` time with ~50 jobs; optionally side by "
                    "side with the PyPI roar-cli. Prints a table; never fails on a missed target.",
        epilog="Example: .venv/bin/python tests/benchmarks/bench_run.py --against roar-cli")
    p.add_argument("--against", choices=["roar-cli"], help="also run the workloads under the PyPI roar-cli "
                   "(installed into a throwaway venv) with --tracer preload")
    p.add_argument("--roar-cli-spec", default=ROAR_CLI_DEFAULT,
                   help=f"pip requirement for --against roar-cli (default: {ROAR_CLI_DEFAULT})")
    p.add_argument("--roar-cli-venv", type=Path,
                   help="reuse an existing venv with roar-cli installed instead of creating one")
    p.add_argument("--repeat", type=int, metavar="N",
                   help="timed runs per cheap workload (default 9; 5000 files and 1 GiB use fewer)")
    p.add_argument("--quick", action="store_true", help="3 timed runs and 1 warm-up everywhere (smoke run)")
    p.add_argument("--roar", type=Path, default=Path(sys.executable).parent / "roar",
                   help="roar-nb's roar executable (default: next to this python)")
    p.add_argument("--tmpdir", type=Path, help="where the throwaway projects go (default: the system temp "
                   "dir; e.g. /dev/shm to take the disk out of the figures)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory (for inspection)")
    a = p.parse_args(argv)
    if a.repeat is not None and a.repeat < 1:
        p.error("--repeat must be >= 1")
    return a


def workloads(args: argparse.Namespace, scripts: Path) -> list[Workload]:
    py = sys.executable
    if args.quick:
        cheap, warm = args.repeat or 3, 1
        heavy = gib = args.repeat or 3
    else:
        cheap, warm = args.repeat or 9, 2
        # The expensive workloads get fewer runs: their spread is small relative to their
        # size, and 9 x 1 GiB per tool would mostly measure the disk's writeback.
        heavy = max(3, math.ceil(cheap * 5 / 9))
        gib = max(3, math.ceil(cheap / 3))
    out = [
        Workload("true", ["true"], cheap, warm),
        Workload("python -c pass", [py, "-c", "pass"], cheap, warm),
    ]
    for n in FILE_COUNTS:
        out.append(Workload(f"{n} files", [py, str(scripts / "files.py"), str(n), "data"],
                            heavy if n >= 5000 else cheap, 1 if n >= 5000 else warm, ["data"]))
    out.append(Workload("1 GiB output", [py, str(scripts / "big.py"), "big.bin"], gib, 1, ["big.bin"],
                        delete_each=True))
    return out


def clear_outputs(cwd: Path, w: Workload, trash: Path) -> None:
    """Untimed, before every run: each run starts without its outputs, so every run does the same work."""
    for rel in w.outputs:
        p = cwd / rel
        if not p.exists():
            continue
        if w.delete_each:
            rmtree_quiet(p) if p.is_dir() else p.unlink()
            settle_disk()
        else:
            trash.mkdir(exist_ok=True)
            p.rename(trash / f"{rel}-{time.monotonic_ns()}")  # a rename frees no blocks: no after-effects


def measure(w: Workload, tools: list[Tool], root: Path, env: dict) -> dict[str, Result]:
    """Warm up, then time `w` under every tool, rotating which tool goes first each round."""
    results = {t.name: Result() for t in tools}
    dirs: dict[str, Path] = {}
    base = Path(tempfile.mkdtemp(prefix="w-", dir=root))
    for t in tools:
        dirs[t.name] = base / t.name
        try:
            t.init(dirs[t.name], env)
        except Exception as e:  # a failing init is that tool's error cell, not a crash
            results[t.name].error = f"init: {str(e).splitlines()[0][:100]}"

    def once(t: Tool) -> Optional[float]:
        r = results[t.name]
        if r.error:
            return None
        clear_outputs(dirs[t.name], w, base / "trash")
        try:
            return time_cmd(t.argv(w.argv), dirs[t.name], env)
        except RunFailed as e:
            r.error = e.message
            return None

    for _ in range(w.warmup):
        for t in tools:
            once(t)
    for i in range(w.repeat):
        order = tools[i % len(tools):] + tools[:i % len(tools)]
        for t in order:
            s = once(t)
            if s is not None:
                results[t.name].samples.append(s)
    rmtree_quiet(base)  # projects and moved-aside outputs are throwaway; free the disk now
    settle_disk()
    return results


def measure_status(tools: list[Tool], root: Path, env: dict, repeat: int, warmup: int,
                   log) -> dict[str, Result]:
    """`roar status` wall time in a project holding STATUS_JOBS jobs (a chain of small file steps)."""
    results: dict[str, Result] = {}
    for t in tools:
        r = results[t.name] = Result()
        if t.roar is None:
            continue
        proj = Path(tempfile.mkdtemp(prefix="status-", dir=root)) / t.name
        try:
            t.init(proj, env)
            (proj / "data").mkdir()
            # Each job reads the previous step's file and writes its own, so the project
            # holds a 50-step lineage DAG with artifacts, not 50 copies of one job.
            for i in range(STATUS_JOBS):
                step = (f"echo {i} > data/s{i}.txt" if i == 0 else
                        f"cat data/s{i - 1}.txt > data/s{i}.txt && echo {i} >> data/s{i}.txt")
                time_cmd(t.argv(["sh", "-c", step]), proj, env)
            log(f"  {t.name}: {STATUS_JOBS} jobs recorded")
            argv = [str(t.roar), "status"]
            for _ in range(warmup):
                time_cmd(argv, proj, env)
            for _ in range(repeat):
                r.samples.append(time_cmd(argv, proj, env))
        except RunFailed as e:
            r.error = e.message
        except Exception as e:
            r.error = str(e).splitlines()[0][:100]
        rmtree_quiet(proj.parent)
        settle_disk()
    return results


def version_of(roar: Path, env: dict) -> str:
    try:
        p = subprocess.run([str(roar), "--version"], env=env, capture_output=True, text=True, timeout=60)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except Exception as e:
        return f"unknown ({e})"


def nb_tracer_line(roar: Path, env: dict) -> str:
    """roar-nb's own word on the preload tracer, so a missing library is visible in the header."""
    try:
        p = subprocess.run([str(roar), "tracer", "status"], env=env, capture_output=True, text=True, timeout=60)
        for ln in p.stdout.splitlines():
            if ln.startswith("preload"):
                return " ".join(ln.split())
    except Exception as e:
        return f"unknown ({e})"
    return "unknown"


def cell(added: Optional[float], total: Optional[float], bare: Optional[float], err: Optional[str]) -> str:
    """`+12.3 ms (1.5x)`: added median and traced/bare ratio; or the tool's error."""
    if err:
        return f"ERROR: {err}"
    if added is None:
        return "-"
    ratio = f" ({total / bare:.1f}x)" if bare and total else ""
    return fmt_ms(added, signed=True) + ratio


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)

    def log(msg: str) -> None:  # progress on stderr; the table goes to stdout
        print(msg, file=sys.stderr, flush=True)

    if not args.roar.exists():
        log(f"roar-nb executable not found: {args.roar} (pass --roar)")
        return 2
    env = dict(os.environ, ROAR_QUIET="1", DO_NOT_TRACK="1")
    root = Path(tempfile.mkdtemp(prefix="roar-bench-", dir=args.tmpdir))
    try:
        scripts = root / "scripts"
        scripts.mkdir()
        (scripts / "files.py").write_text(FILES_SCRIPT)
        (scripts / "big.py").write_text(BIG_SCRIPT)

        tools = [Tool("bare", None), Tool("roar-nb", args.roar.resolve())]
        if args.against == "roar-cli":
            if args.roar_cli_venv:
                cli_bin = args.roar_cli_venv / "bin"
            else:
                log(f"installing {args.roar_cli_spec} into a throwaway venv ...")
                cli_bin = make_venv(root / "roar-cli-venv", [args.roar_cli_spec],
                                    python=shutil.which("python3") or sys.executable)
            tools.append(Tool("roar-cli", cli_bin / "roar", ["--tracer", "preload"]))

        header = ["== roar run overhead (tests/benchmarks/bench_run.py) =="] + machine_lines() + [
            f"projects  {root} on {filesystem_of(root)}",
            f"roar-nb   {version_of(args.roar, env)} ({args.roar}); tracer: default; {nb_tracer_line(args.roar, env)}",
        ]
        if os.environ.get("PYTHONDONTWRITEBYTECODE"):
            # Then no __pycache__ is written for an editable install: every `roar` call
            # compiles roar_nb from source, which shows up as start-up cost.
            header.append("note      PYTHONDONTWRITEBYTECODE is set: python CLIs may recompile their modules "
                          "on every run")
        if len(tools) > 2:
            header.append(f"roar-cli  {version_of(tools[2].roar, env)} ({tools[2].roar}); run --tracer preload")
        wl = workloads(args, scripts)
        header.append(f"method    median of {wl[0].repeat} runs ({wl[-2].repeat} for 5000 files, "
                      f"{wl[-1].repeat} for 1 GiB) after {wl[0].warmup} warm-up(s); bare and traced runs "
                      f"interleaved; ROAR_QUIET=1")

        rows = []
        t_start = time.perf_counter()
        for w in wl:
            log(f"{w.name}: {w.repeat} runs x {len(tools)} ...")
            rows.append((w.name, measure(w, tools, root, env)))
        log(f"roar status: recording {STATUS_JOBS} jobs per tool ...")
        st_repeat, st_warm = wl[0].repeat, wl[0].warmup
        status = measure_status(tools, root, env, st_repeat, st_warm, log)
        elapsed = time.perf_counter() - t_start

        # --- the table -------------------------------------------------------------------
        against = len(tools) > 2
        cols = ["workload", "bare", "roar-nb added"]
        if against:
            cols += ["roar-cli added", "roar-nb/roar-cli"]
        cols += ["target (roar-nb)", "verdict"]
        table = Table(cols, right={1, 2, 3, 4} if against else {1, 2})

        def verdict(name: str, value: Optional[float]) -> tuple[str, str]:
            target = TARGETS_MS.get(name)
            if target is None:
                return "-", ""
            if value is None:
                return f"<= {target:.0f} ms", "n/a"
            if value < 0:  # traced faster than bare: the bare runs' noise exceeds roar's cost
                return f"<= {target:.0f} ms", "noise"
            return f"<= {target:.0f} ms", "PASS" if value <= target else "MISS"

        for name, res in rows:
            bare = res["bare"].median
            nb_total = res["roar-nb"].median
            nb_added = nb_total - bare if nb_total is not None and bare is not None else None
            line = [name, fmt_ms(bare) if not res["bare"].error else f"ERROR: {res['bare'].error}",
                    cell(nb_added, nb_total, bare, res["roar-nb"].error)]
            if against:
                cli_total = res["roar-cli"].median
                cli_added = cli_total - bare if cli_total is not None and bare is not None else None
                line.append(cell(cli_added, cli_total, bare, res["roar-cli"].error))
                # A ratio of added times means nothing when either is within noise of zero or below.
                line.append(f"{nb_added / cli_added:.2f}x" if nb_added is not None and cli_added is not None
                            and nb_added > 0 and cli_added > 0 else "-")
            line += list(verdict(name, nb_added))
            table.add(*line)

        name = f"roar status ({STATUS_JOBS} jobs)"
        nb_st = status["roar-nb"]
        line = [name, "-", f"ERROR: {nb_st.error}" if nb_st.error else f"{fmt_ms(nb_st.median)} total"]
        if against:
            cli_st = status["roar-cli"]
            line.append(f"ERROR: {cli_st.error}" if cli_st.error else f"{fmt_ms(cli_st.median)} total")
            line.append(f"{nb_st.median / cli_st.median:.2f}x" if nb_st.median and cli_st.median else "-")
        line += list(verdict(name, nb_st.median))
        table.add(*line)

        print("\n".join(header))
        print()
        print(table.render())
        print()
        print("added = median(traced) - median(bare); (Nx) = median(traced) / median(bare);")
        print("roar-nb/roar-cli = ratio of added medians (status: of totals). Targets are for roar-nb.")
        print(f"total benchmark time {elapsed:.0f} s")
        return 0  # figures only: a MISS is information, not a failure
    finally:
        if args.keep:
            log(f"kept {root}")
        else:
            rmtree_quiet(root)


if __name__ == "__main__":
    sys.exit(main())
