"""Active storage: `sum` of float32 objects reduced next to the data vs fetched and summed by the client.

    .venv/bin/python tests/benchmarks/bench_activestorage.py [--reps N] [--sizes 1,64,512]

Starts SeaweedFS (the active-storage tests' pinned ports, 23400-23460) and one roar-proxy with
its active-storage listener, stores float32 objects of 1, 64 and 512 MiB, then times, alternating
so drift on a shared machine hits all alike:
  (a) the reduction: POST /v1/sum to the listener (a kept-alive connection; the server streams the
      object from SeaweedFS and folds it as it arrives);
  (b) a plain S3 GET of the same bytes (boto3, straight to SeaweedFS, body read);
  (c) the same GET + numpy sum on the client.
Prints medians, (a)/(b), the bytes that did not cross the network to the client, and the
server's own fold throughput without any transfer (`cargo test ... fold_throughput`) and the
proxy's peak RSS. Asserts nothing.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from _common import Table, machine_lines  # noqa: E402
from tests.activestorage.asutil import PORTS  # noqa: E402
from tests.s3.s3util import AK, SK, Proxy, client, ensure_proxy_binary, seaweed_server  # noqa: E402

MIB = 1024 * 1024


def fold_throughput() -> list[str]:
    out = subprocess.run(["cargo", "test", "--release", "--quiet", "-p", "roar-proxy", "fold_throughput", "--",
                          "--ignored", "--nocapture"], cwd=REPO / "rust", capture_output=True, text=True)
    return [ln for ln in out.stdout.splitlines() if ln.startswith("fold ") and " count " not in ln]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=20, help="alternating runs at 1 MiB (fewer for bigger objects)")
    ap.add_argument("--sizes", default="1,64,512", help="object sizes in MiB (default 1,64,512)")
    a = ap.parse_args()
    sizes = [int(s) * MIB for s in a.sizes.split(",")]
    binary = ensure_proxy_binary()
    auth = "Basic " + base64.b64encode(f"{AK}:{SK}".encode()).decode()
    with tempfile.TemporaryDirectory() as tmp, seaweed_server(Path(tmp), ports=PORTS) as upstream:
        (Path(tmp) / "ev").mkdir()
        proxy = Proxy(binary, upstream, Path(tmp) / "ev", args=("--active-storage-port", "0"))
        try:
            s3 = client(upstream)
            s3.create_bucket(Bucket="bench")
            host, port = proxy.active_url.split("//")[1].split(":")
            conn = http.client.HTTPConnection(host, int(port), timeout=600)

            def reduce(key: str) -> float:
                body = json.dumps({"source": upstream, "bucket": "bench", "object": key, "dtype": "float32"})
                conn.request("POST", "/v1/sum", body=body, headers={"Content-Type": "application/json",
                                                                     "Authorization": auth})
                r = conn.getresponse()
                raw = r.read()
                assert r.status == 200, raw
                return float(np.frombuffer(raw, "float32")[0]), len(raw)

            t = Table(["size", "(a) reduce ms", "(b) GET ms", "(c) GET+numpy ms", "(a)/(b)", "(a) MB/s",
                       "bytes not sent"], right=set(range(1, 7)))
            for size in sizes:
                arr = np.random.default_rng(size).standard_normal(size // 4).astype("float32")
                key = f"f32-{size // MIB}MiB.bin"
                s3.put_object(Bucket="bench", Key=key, Body=arr.tobytes())
                reps = max(3, a.reps * MIB // size) if size > MIB else a.reps
                samples = {"a": [], "b": [], "c": []}
                returned = 0
                for i in range(reps + 1):  # the first round warms connections and caches
                    steps = ["a", "b", "c"] if i % 2 == 0 else ["c", "b", "a"]
                    for s in steps:
                        t0 = time.perf_counter()
                        if s == "a":
                            val, returned = reduce(key)
                        elif s == "b":
                            s3.get_object(Bucket="bench", Key=key)["Body"].read()
                        else:
                            np.frombuffer(s3.get_object(Bucket="bench", Key=key)["Body"].read(), "float32").sum()
                        if i:
                            samples[s].append((time.perf_counter() - t0) * 1000)
                    if i == 0:
                        want = arr.astype(np.float64).sum()
                        assert abs(val - want) <= 1e-3 * max(1.0, abs(want)), (val, want)
                med = {k: statistics.median(v) for k, v in samples.items()}
                t.add(f"{size // MIB} MiB", f"{med['a']:.1f}", f"{med['b']:.1f}", f"{med['c']:.1f}",
                      f"{med['a'] / med['b']:.2f}x", f"{size / 1e6 / (med['a'] / 1000):.0f}",
                      f"{size - returned:,} of {size:,}")
                s3.delete_object(Bucket="bench", Key=key)
            rss = next((int(ln.split()[1]) / 1024 for ln in Path(f"/proc/{proxy.proc.pid}/status").read_text()
                        .splitlines() if ln.startswith("VmHWM:")), float("nan"))
        finally:
            proxy.stop()
    print("\n".join(machine_lines()))
    print(f"reps      {a.reps} alternating runs at 1 MiB, fewer above (min 3), medians; loopback, plain http")
    print()
    print(t.render())
    print()
    print(f"roar-proxy peak RSS over the run: {rss:.1f} MiB (the folds stream: no object is buffered)")
    print("server fold throughput (no transfer, one core, best of 5 over 256 MiB in memory):")
    for ln in fold_throughput():
        print("  " + re.sub(r"^fold ", "", ln))


if __name__ == "__main__":
    main()
