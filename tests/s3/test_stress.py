"""roar-proxy under load: many concurrent clients, and a large object streamed with bounded memory."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import blake3
import pytest

from .s3util import client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # slow: the full tier only (make test)


def test_64_concurrent_clients(proxy, bucket):
    def one(i: int) -> tuple[str, str]:
        c = client(proxy.url)  # a client (and connection pool) per worker, as separate programs would have
        data = os.urandom(20_000 + i * 997)
        c.put_object(Bucket=bucket, Key=f"c/{i}", Body=data)
        assert c.get_object(Bucket=bucket, Key=f"c/{i}")["Body"].read() == data
        return f"c/{i}", blake3.blake3(data).hexdigest()

    with ThreadPoolExecutor(64) as ex:
        expected = dict(ex.map(one, range(64)))
    evs = proxy.events()
    assert len(evs) == 128
    for op in ("put", "get"):
        got = {e["key"]: e["blake3"] for e in evs if e["op"] == op}
        assert got == expected, op


def _peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_large_object_streams_with_bounded_memory(proxy, bucket, tmp_path):
    size = 1024 * 1024 * 1024 + 5  # 1 GiB and a bit: far above any buffer the proxy could hold
    src = tmp_path / "big.bin"
    h = blake3.blake3()
    with open(src, "wb") as f:
        block = os.urandom(1024 * 1024)
        for i in range(1024):
            chunk = bytes([i % 256]) + block[1:]
            f.write(chunk)
            h.update(chunk)
        f.write(b"tail!")
        h.update(b"tail!")
    want = h.hexdigest()
    c = client(proxy.url)
    with open(src, "rb") as f:
        c.put_object(Bucket=bucket, Key="big.bin", Body=f)
    body = c.get_object(Bucket=bucket, Key="big.bin")["Body"]
    got = blake3.blake3()
    n = 0
    while chunk := body.read(1 << 20):
        got.update(chunk)
        n += len(chunk)
    assert (n, got.hexdigest()) == (size, want)
    assert [(e["op"], e["size"], e["blake3"]) for e in proxy.events()] == [("put", size, want), ("get", size, want)]
    rss = _peak_rss_mib(proxy.proc.pid)
    assert rss < 100, f"roar-proxy peak RSS {rss:.0f} MiB"
