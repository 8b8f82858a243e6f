"""Ray benchmark: N tasks each writing one 1 MiB file on a 2-CPU local Ray, the same
script bare and under `roar run`, interleaved; medians of --runs.

Prints, per mode: the whole script's wall time, the tasks phase (timed inside the
script), and the time from the script's last line to the command's exit (for roar:
reading the spool, storing the task jobs and the driver job). Not a test: nothing
here asserts on timings.

    PYTHONPATH=$PWD python tests/benchmarks/bench_ray.py [--tasks 200] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

SCRIPT = '''
import os, sys, time
import ray
ray.init(address="local", num_cpus=2, object_store_memory=128 * 1024 * 1024, include_dashboard=False,
         _temp_dir=sys.argv[2])

@ray.remote
def write(i):
    with open(f"out/{i}.bin", "wb") as f:
        f.write(os.urandom(1 << 20))

os.makedirs("out", exist_ok=True)
t = time.perf_counter()
ray.get([write.remote(i) for i in range(int(sys.argv[1]))])
print("TASKS", time.perf_counter() - t)
ray.shutdown()
print("END", time.time())
'''

ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=200)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    roar = [sys.executable, "-m", "roar_nb.cli"]
    work = tempfile.mkdtemp(prefix="rb-", dir="/tmp")  # short: Ray's socket paths go under it
    env = {**os.environ, **ENV}
    try:
        with open(os.path.join(work, "s.py"), "w") as f:
            f.write(SCRIPT)
        subprocess.run([*roar, "init", "-n"], cwd=work, env=env, check=True, capture_output=True)
        res = {"bare": [], "roar": []}
        for k in range(a.runs):
            for mode in ("bare", "roar"):
                shutil.rmtree(os.path.join(work, "out"), ignore_errors=True)
                tmp = tempfile.mkdtemp(prefix="rt-", dir="/tmp")
                argv = [sys.executable, "s.py", str(a.tasks), tmp]
                if mode == "roar":
                    argv = [*roar, "run", *argv]
                t0 = time.perf_counter()
                p = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True)
                wall = time.perf_counter() - t0
                end = time.time()
                shutil.rmtree(tmp, ignore_errors=True)
                if p.returncode != 0:
                    print(f"{mode} run {k} failed: {p.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
                    return 1
                lines = dict(line.split(" ", 1) for line in p.stdout.splitlines() if line.startswith(("TASKS", "END")))
                res[mode].append((wall, float(lines["TASKS"]), end - float(lines["END"])))
                print(f"run {k} {mode}: {wall:.2f} s", file=sys.stderr)
        import sqlite3

        db = sqlite3.connect(os.path.join(work, ".roar", "roar.db"))
        n = db.execute("SELECT count(*) FROM jobs WHERE kind = 'ray_task' AND status = 'ok'").fetchone()[0]
        db.close()
        if n != a.tasks * a.runs:  # figures of a run that did not capture would mean nothing
            print(f"roar recorded {n} task jobs, expected {a.tasks * a.runs}", file=sys.stderr)
            return 1
        print(f"{a.tasks} tasks x 1 MiB, local Ray (2 CPUs), medians of {a.runs} interleaved runs; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"{'mode':6} {'whole':>9} {'tasks':>9} {'after script':>13}")
        med = {m: [statistics.median(x[i] for x in v) for i in range(3)] for m, v in res.items()}
        for m, (w, t, after) in med.items():
            print(f"{m:6} {w:8.2f}s {t:8.2f}s {after:12.2f}s")
        b, r = med["bare"], med["roar"]
        print(f"added: whole {r[0] - b[0]:+.2f} s ({(r[0] / b[0] - 1) * 100:+.0f} %), tasks phase "
              f"{r[1] - b[1]:+.2f} s ({(r[1] - b[1]) / a.tasks * 1000:+.2f} ms/task), after the script "
              f"{r[2] - b[2]:+.2f} s (merge and recording)")
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
