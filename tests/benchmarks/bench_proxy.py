"""S3 proxy overhead: boto3 PUT and GET direct to SeaweedFS vs through roar-proxy.

    .venv/bin/python tests/benchmarks/bench_proxy.py [--reps N] [--big]

Starts SeaweedFS (`weed mini`, the test fixture's pinned ports) and one roar-proxy in
front of it, then times boto3 `put_object` and `get_object(...).read()` of 64 KiB,
1 MiB and 8 MiB objects (and 256 MiB with --big), alternating direct and proxied
requests so that drift on a shared machine hits both alike. Prints medians, the
added latency, and the proxy's peak RSS (VmHWM). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "s3"))

from _common import Table, machine_lines  # noqa: E402
from s3util import Proxy, client, ensure_proxy_binary, seaweed_server  # noqa: E402

KIB, MIB = 1024, 1024 * 1024


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return (time.perf_counter() - t0) * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=30, help="alternating runs per size and path (default 30)")
    ap.add_argument("--big", action="store_true", help="also 256 MiB objects (throughput)")
    a = ap.parse_args()
    sizes = [64 * KIB, 1 * MIB, 8 * MIB] + ([256 * MIB] if a.big else [])
    binary = ensure_proxy_binary()
    with tempfile.TemporaryDirectory() as tmp, seaweed_server(Path(tmp)) as upstream:
        (Path(tmp) / "ev").mkdir()
        proxy = Proxy(binary, upstream, Path(tmp) / "ev")
        try:
            paths = {"direct": client(upstream), "proxy": client(proxy.url)}
            for c in paths.values():  # connections warmed, bucket made
                c.list_buckets()
            paths["direct"].create_bucket(Bucket="bench")
            t = Table(["size", "op", "direct (ms)", "proxy (ms)", "added (ms)", "proxy MB/s"], right={2, 3, 4, 5})
            for size in sizes:
                data = os.urandom(size)
                reps = a.reps if size <= 8 * MIB else max(5, a.reps // 6)
                samples = {(p, op): [] for p in paths for op in ("PUT", "GET")}
                for i in range(reps + 1):  # the first round is a warm-up
                    order = ["direct", "proxy"] if i % 2 == 0 else ["proxy", "direct"]
                    for p in order:
                        c, key = paths[p], f"{p}-{size}"
                        put = timed(lambda: c.put_object(Bucket="bench", Key=key, Body=data))
                        get = timed(lambda: c.get_object(Bucket="bench", Key=key)["Body"].read())
                        if i:
                            samples[(p, "PUT")].append(put)
                            samples[(p, "GET")].append(get)
                for op in ("PUT", "GET"):
                    d = statistics.median(samples[("direct", op)])
                    px = statistics.median(samples[("proxy", op)])
                    label = f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB"
                    t.add(label, op, f"{d:.2f}", f"{px:.2f}", f"{px - d:+.2f}", f"{size / MIB / (px / 1000):.0f}")
            rss = peak_rss_mib(proxy.proc.pid)
        finally:
            proxy.stop()
    print("\n".join(machine_lines()))
    print(f"reps      {a.reps} alternating runs per size (256 MiB: {max(5, a.reps // 6)}), medians; "
          "boto3 over plain http (hex x-amz-content-sha256, checked by the proxy)")
    print()
    print(t.render())
    print()
    print(f"roar-proxy peak RSS: {rss:.1f} MiB")


if __name__ == "__main__":
    main()
