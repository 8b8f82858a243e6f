"""S3 proxy overhead: boto3 PUT and GET direct to SeaweedFS vs through roar-proxy.

    .venv/bin/python tests/benchmarks/bench_proxy.py [--reps N] [--big] [--against roar-cli]

Starts SeaweedFS (`weed mini`, the test fixture's pinned ports) and one roar-proxy in
front of it, then times boto3 `put_object` and `get_object(...).read()` of 64 KiB,
1 MiB and 8 MiB objects (and 256 MiB with --big), alternating direct and proxied
requests so that drift on a shared machine hits both alike. Prints medians, the
added latency, and the proxy's peak RSS (VmHWM). Asserts nothing.

With `--against roar-cli`, roar-cli 0.4.7's own `roar-proxy` (shipped in its PyPI wheel,
installed with --no-deps into a throwaway venv, default /tmp/roar-cli-0.4.7-venv) runs in
front of the same SeaweedFS and takes its turn in the same alternation.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "s3"))

from _common import Table, machine_lines, make_venv  # noqa: E402
from s3util import Proxy, client, ensure_proxy_binary, s3_env, seaweed_server  # noqa: E402

KIB, MIB = 1024, 1024 * 1024
ROAR_CLI = "roar-cli==0.4.7"


def roar_cli_proxy_binary(venv: Path) -> Path:
    """roar-cli's `roar-proxy` binary from its wheel (a throwaway venv, reused when present)."""
    found = list(venv.glob("lib/python*/site-packages/roar/bin/roar-proxy"))
    if not found:
        make_venv(venv, ["--no-deps", ROAR_CLI])  # only the shipped binary is needed
        found = list(venv.glob("lib/python*/site-packages/roar/bin/roar-proxy"))
    if not found:
        sys.exit(f"{ROAR_CLI}'s wheel has no roar/bin/roar-proxy")
    return found[0]


class RoarCliProxy:
    """roar-cli's proxy on a free port in front of `upstream` (it re-signs with the same test keys)."""

    def __init__(self, binary: Path, upstream: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.proc = subprocess.Popen([str(binary), "--port", str(port), "--upstream", upstream],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=s3_env())
        self.url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                sys.exit(f"roar-cli's roar-proxy exited {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    sys.exit("roar-cli's roar-proxy did not start listening")
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


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
    ap.add_argument("--against", choices=["roar-cli"], help="also through roar-cli 0.4.7's roar-proxy")
    ap.add_argument("--roar-cli-venv", type=Path, default=Path("/tmp/roar-cli-0.4.7-venv"),
                    help="throwaway venv for --against roar-cli (created if missing)")
    a = ap.parse_args()
    sizes = [64 * KIB, 1 * MIB, 8 * MIB] + ([256 * MIB] if a.big else [])
    binary = ensure_proxy_binary()
    other_bin = roar_cli_proxy_binary(a.roar_cli_venv) if a.against else None
    with tempfile.TemporaryDirectory() as tmp, seaweed_server(Path(tmp)) as upstream:
        (Path(tmp) / "ev").mkdir()
        proxy = Proxy(binary, upstream, Path(tmp) / "ev")
        other = RoarCliProxy(other_bin, upstream) if other_bin else None
        try:
            paths = {"direct": client(upstream), "proxy": client(proxy.url)}
            if other:
                paths["roar-cli"] = client(other.url)
            for c in paths.values():  # connections warmed, bucket made
                c.list_buckets()
            paths["direct"].create_bucket(Bucket="bench")
            cols = ["size", "op", "direct (ms)", "proxy (ms)", "added (ms)", "proxy MB/s", "% of direct"]
            if other:
                cols += ["roar-cli (ms)", "roar-cli added", "roar-cli % of direct"]
            t = Table(cols, right=set(range(2, len(cols))))
            for size in sizes:
                data = os.urandom(size)
                reps = a.reps if size <= 8 * MIB else max(5, a.reps // 6)
                samples = {(p, op): [] for p in paths for op in ("PUT", "GET")}
                for i in range(reps + 1):  # the first round is a warm-up
                    order = list(paths) if i % 2 == 0 else list(paths)[::-1]
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
                    row = [label, op, f"{d:.2f}", f"{px:.2f}", f"{px - d:+.2f}", f"{size / MIB / (px / 1000):.0f}",
                           f"{100 * d / px:.0f}%"]
                    if other:
                        o = statistics.median(samples[("roar-cli", op)])
                        row += [f"{o:.2f}", f"{o - d:+.2f}", f"{100 * d / o:.0f}%"]
                    t.add(*row)
            rss = peak_rss_mib(proxy.proc.pid)
            other_rss = peak_rss_mib(other.proc.pid) if other else None
        finally:
            proxy.stop()
            if other:
                other.stop()
    print("\n".join(machine_lines()))
    print(f"reps      {a.reps} alternating runs per size (256 MiB: {max(5, a.reps // 6)}), medians; "
          "boto3 over plain http (hex x-amz-content-sha256, checked by the proxy)")
    print()
    print(t.render())
    print()
    print(f"roar-proxy peak RSS: {rss:.1f} MiB")
    if other_rss is not None:
        print(f"{ROAR_CLI} roar-proxy peak RSS: {other_rss:.1f} MiB")


if __name__ == "__main__":
    main()
