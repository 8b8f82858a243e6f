"""Per-cell cost of roar in a real kernel: trivial cells, and cells writing 100 small files.

Run: .venv/bin/python tests/benchmarks/bench_cells.py [--cells 200]

For each kernel ("roar": native capture; "python3": audit hook + env injection)
it times execute_request round trips from a client, with roar loaded but off
(the baseline) and with `%roar on`, in alternating blocks, and prints the median
added milliseconds per cell; "in-kernel" is the median time spent in roar's own
pre/post-cell hooks (capture begin/end, reading events, hashing, the store
write, the summary line). Targets: <= 3 ms per empty cell, <= 10 ms for a cell touching 100 files.
Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def install_kernels(prefix: Path) -> None:
    from roar_nb import kernelspec

    kernelspec.install(name="roar", prefix=str(prefix))
    plain = prefix / "share" / "jupyter" / "kernels" / "python3"
    plain.mkdir(parents=True, exist_ok=True)
    (plain / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (plain)", "language": "python"}))
    os.environ["JUPYTER_PATH"] = str(prefix / "share" / "jupyter")


def timed(kc, code: str) -> float:
    t = time.perf_counter()
    reply = kc.execute_interactive(code, store_history=True, output_hook=lambda msg: None, timeout=60)
    dt = time.perf_counter() - t
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed: {reply['content']}")
    return dt * 1000


def _fetch(kc, expr: str) -> list:
    got = []

    def hook(msg):
        if msg["msg_type"] == "execute_result":
            got.append(msg["content"]["data"]["text/plain"])

    kc.execute_interactive(expr, store_history=False, output_hook=hook, timeout=60)
    return [float(x) for x in json.loads(got[0])] if got else []


def bench_kernel(kernel: str, cells: int, workdir: Path) -> dict:
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name=kernel, cwd=str(workdir))
    try:
        timed(kc, "%load_ext roar")
        timed(kc, "import os\ndef touch(n, tag):\n"
                  "    for i in range(n):\n"
                  "        with open(f'files/f{i}.txt', 'w') as f: f.write(f'{tag} {i}')\n"
                  "os.makedirs('files', exist_ok=True)\nk = 0")
        # Time roar's own work inside the kernel too (pre_run_cell + post_run_cell hooks):
        # the client round trip also carries the summary line's IOPub message and noise.
        timed(kc, "import time as _t\n_nb = get_ipython()._roar_nb_state\n_roar_ms = []\n"
                  "_pre, _post = _nb.pre_run_cell, _nb.post_run_cell\n"
                  "def _tpre(info):\n    global _s\n    _s = _t.perf_counter(); _pre(info); _s = _t.perf_counter() - _s\n"
                  "def _tpost(result):\n    s = _t.perf_counter(); _post(result)\n"
                  "    _roar_ms.append((_t.perf_counter() - s + _s) * 1000)\n"
                  "ev = get_ipython().events\nev.unregister('pre_run_cell', _pre); ev.register('pre_run_cell', _tpre)\n"
                  "ev.unregister('post_run_cell', _post); ev.register('post_run_cell', _tpost)")
        files_cell = "k += 1\ntouch(100, k)"
        res = {}
        samples = {k: [] for k in ("empty_off", "empty_on", "files_off", "files_on")}
        inkernel = {"empty": [], "files": []}
        rounds = 5
        for _ in range(rounds):  # alternate blocks so drift hits both modes alike
            for mode in ("off", "on"):
                timed(kc, f"%roar {mode}")
                for _ in range(3):
                    timed(kc, "x = 1")  # warm up
                timed(kc, "_roar_ms.clear()")
                samples[f"empty_{mode}"] += [timed(kc, "x = 1") for _ in range(cells // rounds)]
                if mode == "on":
                    inkernel["empty"] += _fetch(kc, "_roar_ms[:-1]")
                timed(kc, "_roar_ms.clear()")
                samples[f"files_{mode}"] += [timed(kc, files_cell) for _ in range(max(4, cells // 50))]
                if mode == "on":
                    inkernel["files"] += _fetch(kc, "_roar_ms[:-1]")
        res = {k: statistics.median(v) for k, v in samples.items()}
        res.update({f"{k}_inkernel": statistics.median(v) for k, v in inkernel.items() if v})
        timed(kc, "%roar off")
        return res
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cells", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        install_kernels(tmp / "prefix")
        print(f"{'kernel':8} {'empty off':>10} {'empty on':>9} {'added':>7} {'in-kernel':>9} | "
              f"{'100 files off':>13} {'on':>7} {'added':>7} {'in-kernel':>9}   (median ms per cell)")
        for kernel in ("roar", "python3"):
            work = tmp / kernel
            work.mkdir()
            r = bench_kernel(kernel, args.cells, work)
            print(f"{kernel:8} {r['empty_off']:10.2f} {r['empty_on']:9.2f} {r['empty_on'] - r['empty_off']:7.2f}"
                  f" {r.get('empty_inkernel', float('nan')):9.2f} | "
                  f"{r['files_off']:13.2f} {r['files_on']:7.2f} {r['files_on'] - r['files_off']:7.2f}"
                  f" {r.get('files_inkernel', float('nan')):9.2f}")
        print("targets: <= 3 ms added per empty cell, <= 10 ms added per cell touching 100 files")


if __name__ == "__main__":
    main()
