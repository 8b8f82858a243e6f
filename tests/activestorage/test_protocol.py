"""The wire contract around the arithmetic: headers, errors and their statuses, auth, keys,
readiness, metrics, OpenAPI, budgets, compression and filters, v2, and the lineage event."""

from __future__ import annotations

import gzip
import json
import zlib

import numpy as np
import pytest

from tests.s3.s3util import AK, Proxy

from .asutil import assert_same, decode, get, post, reference
from .conftest import CREDS, DATA, PUBLIC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # SeaweedFS: the full tier only (make test)

ARR = np.arange(80, dtype="float32").reshape(8, 10)


@pytest.fixture(scope="module")
def obj(s3c):
    s3c.put_object(Bucket=DATA, Key="proto/a.bin", Body=ARR.tobytes())
    return "proto/a.bin"


def req(s3, key="proto/a.bin", **kw):
    return {"source": s3, "bucket": DATA, "object": key, "dtype": "float32", **kw}


def test_v1_answer_headers_are_exact(active, s3, obj):
    status, h, body = post(active.active_url, "/v1/sum", req(s3))
    # Anonymous on a private bucket: refused (below); with credentials:
    status, h, body = post(active.active_url, "/v1/sum/", req(s3), auth=CREDS)  # trailing slash accepted
    assert status == 200
    assert h["content-type"] == "application/octet-stream"
    assert h["x-activestorage-dtype"] == "float32"
    assert h["x-activestorage-shape"] == "[]"
    assert h["x-activestorage-count"] == "[80]"
    assert h["x-activestorage-byte-order"] == "little"
    assert h["content-length"] == "4" and np.frombuffer(body, "float32")[0] == ARR.sum()
    status, h, body = post(active.active_url, "/v1/max", req(s3, shape=[8, 10], axis=1), auth=CREDS)
    assert h["x-activestorage-shape"] == "[8]" and h["x-activestorage-count"] == "[10,10,10,10,10,10,10,10]"
    # Every optional key may be null.
    nulls = {k: None for k in ("byte_order", "offset", "size", "shape", "axis", "order", "selection",
                               "compression", "filters", "missing")}
    status, h, body = post(active.active_url, "/v1/count", req(s3, **nulls), auth=CREDS)
    assert status == 200 and np.frombuffer(body, "int64")[0] == 80


ERRORS = [
    # (request fields changed, op, status, text the message must carry)
    ({"dtype": "float16"}, "sum", 400, "dtype"),
    ({"colour": "red"}, "sum", 400, "colour"),
    ({"bucket": ""}, "sum", 400, "bucket"),
    ({"object": ""}, "sum", 400, "object"),
    ({"source": "ftp://x"}, "sum", 400, "source"),
    ({"offset": -1}, "sum", 400, "offset"),
    ({"size": 0}, "sum", 400, "size"),
    ({"size": 6}, "sum", 400, "size"),
    ({"size": 16, "shape": [2, 3]}, "sum", 400, "size"),
    ({"shape": []}, "sum", 400, "shape"),
    ({"shape": [0, 4]}, "sum", 400, "shape"),
    ({"shape": [80], "order": "X"}, "sum", 400, "order"),
    ({"byte_order": "middle"}, "sum", 400, "byte_order"),
    ({"selection": [[0, 1, 1]]}, "sum", 400, "selection requires shape"),
    ({"shape": [8, 10], "selection": [[0, 1, 1]]}, "sum", 400, "selection"),
    ({"shape": [8, 10], "selection": [[0, 1, 0], [0, 1, 1]]}, "sum", 400, "stride"),
    ({"shape": [8, 10], "selection": [[0, 1], [0, 1, 1]]}, "sum", 400, "selection"),
    ({"shape": [8, 10], "axis": 2}, "sum", 400, "axis"),
    ({"shape": [8, 10], "axis": [1, 0]}, "sum", 400, "axis"),
    ({"shape": [8, 10], "axis": [0, 0]}, "sum", 400, "axis"),
    ({"shape": [8, 10], "axis": -1}, "sum", 400, "axis"),
    ({"missing": {"missing_value": 1, "valid_min": 0}}, "sum", 400, "missing"),
    ({"missing": {}}, "sum", 400, "missing"),
    ({"missing": {"nodata": 1}}, "sum", 400, "nodata"),
    ({"missing": {"valid_range": [5, 1]}}, "sum", 400, "valid_range"),
    ({"missing": {"valid_max": 1e300}}, "sum", 400, "missing"),
    ({"dtype": "uint32", "missing": {"missing_value": -1}}, "sum", 400, "missing"),
    ({"dtype": "int32", "missing": {"missing_value": 1.5}}, "sum", 400, "missing"),
    ({"missing": {"missing_values": []}}, "sum", 400, "missing_values"),
    ({"compression": {"id": "lz4"}}, "sum", 400, "compression"),
    ({"compression": {"id": "gzip"}}, "sum", 400, "compression"),  # the data is not gzip
    ({"filters": [{"id": "shuffle"}]}, "sum", 400, "filters"),
    ({"filters": [{"id": "shuffle", "element_size": 0}]}, "sum", 400, "element_size"),
    ({"shape": [9, 10]}, "sum", 400, "shape"),
    ({"offset": 10_000}, "sum", 400, "InvalidRange"),
    ({"object": "proto/none.bin"}, "sum", 400, "NoSuchKey"),
    ({"bucket": "as-no-such-bucket"}, "sum", 400, "NoSuchBucket"),
    ({}, "median", 404, "median"),
]


@pytest.mark.parametrize("change,op,status,text", ERRORS, ids=[f"{e[3]}-{i}" for i, e in enumerate(ERRORS)])
def test_errors_have_the_contract_status_and_json_body(active, s3, obj, change, op, status, text):
    got, h, body = post(active.active_url, f"/v1/{op}", req(s3, **change), auth=CREDS)
    assert got == status, body
    assert h["content-type"] == "application/json"
    err = json.loads(body)["error"]
    assert text in err["message"], err
    assert isinstance(err.get("caused_by", []), list)


def test_malformed_json_and_missing_fields(active, s3, obj):
    got, _, body = post(active.active_url, "/v1/sum", None, auth=CREDS, raw=b'{"source": ')
    assert got == 400 and "error" in json.loads(body)
    r = req(s3)
    del r["bucket"]
    got, _, body = post(active.active_url, "/v1/sum", r, auth=CREDS)
    assert got == 400 and "bucket" in json.loads(body)["error"]["message"]
    got, _, body = post(active.active_url, "/v1/sum", r | {"bucket": DATA, "shape": "8x10"}, auth=CREDS)
    assert got == 400 and "shape" in json.loads(body)["error"]["message"]


def test_s3_refusal_is_401_access_denied(active, s3, obj):
    got, _, body = post(active.active_url, "/v1/sum", req(s3), auth=(AK, "wrong-secret"))
    assert got == 401 and "Access Denied" in json.loads(body)["error"]["message"]
    got, _, body = post(active.active_url, "/v1/sum", req(s3))  # anonymous, private bucket
    assert got == 401 and "Access Denied" in json.loads(body)["error"]["message"]


def test_public_bucket_is_read_anonymously(active, s3, s3c):
    s3c.put_object(Bucket=PUBLIC, Key="open.bin", Body=ARR.tobytes())
    got, h, body = post(active.active_url, "/v1/min", {"source": s3, "bucket": PUBLIC, "object": "open.bin",
                                                       "dtype": "float32", "shape": [8, 10], "axis": 0})
    assert got == 200, body
    res, counts = decode(h, body)
    np.testing.assert_array_equal(res, ARR.min(axis=0))


def test_unreachable_source_is_a_server_error(active):
    got, _, body = post(active.active_url, "/v1/sum", {"source": "http://127.0.0.1:9", "bucket": "b",
                                                       "object": "k", "dtype": "int32"}, auth=CREDS)
    assert got in (500, 502, 504) and "error" in json.loads(body)


@pytest.mark.parametrize("key", ["a b/c [1],x=2.bin", "sp ace.bin", "br[ack]ets.bin", "co,mma.bin", "k=v&x.bin",
                                 "uni/é ü.bin"])
def test_object_keys_with_special_characters(active, s3, s3c, key):
    s3c.put_object(Bucket=DATA, Key=key, Body=ARR.tobytes())
    got, h, body = post(active.active_url, "/v1/sum", req(s3, key=key), auth=CREDS)
    assert got == 200, body
    assert decode(h, body)[0] == ARR.sum()


def test_readiness_metrics_openapi(active, s3, obj):
    assert get(active.active_url, "/.well-known/reductionist-schema")[0] == 200
    post(active.active_url, "/v1/sum", req(s3), auth=CREDS)
    status, h, body = get(active.active_url, "/metrics")
    text = body.decode()
    assert status == 200 and h["content-type"].startswith("text/plain")
    assert 'roar_activestorage_requests_total{api="v1",operation="sum",status="200"}' in text
    assert "roar_activestorage_request_duration_seconds_bucket" in text
    values = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
    fetched = int(values["roar_activestorage_bytes_fetched_total"])
    returned = int(values["roar_activestorage_bytes_returned_total"])
    assert fetched >= 320 and 4 <= returned < fetched
    status, _, body = get(active.active_url, "/openapi.json")
    doc = json.loads(body)
    assert status == 200 and {"/v1/{op}", "/v2/{op}"} <= set(doc["paths"])
    assert doc["components"]["schemas"]["V1Request"]["additionalProperties"] is False
    assert set(doc["paths"]["/v2/{op}"]["post"]["requestBody"]["content"]) == {"application/json", "application/cbor"}
    assert get(active.active_url, "/v3/sum")[0] == 404


def _shuffle(b: bytes, es: int) -> bytes:
    a = np.frombuffer(b, np.uint8)
    n = len(a) // es
    return a[:n * es].reshape(n, es).T.tobytes() + a[n * es:].tobytes()


@pytest.mark.parametrize("comp", [None, "gzip", "zlib"])
@pytest.mark.parametrize("shuffle", [False, True])
@pytest.mark.parametrize("dtype", ["int64", "float32"])
def test_compression_and_shuffle(active, s3, s3c, comp, shuffle, dtype):
    arr = (np.arange(600) % 37 - 11).astype(dtype)
    raw = arr.tobytes()
    if shuffle:
        raw = _shuffle(raw, arr.itemsize)
    data = {None: raw, "gzip": gzip.compress(raw) if comp == "gzip" else None,
            "zlib": zlib.compress(raw) if comp == "zlib" else None}[comp]
    key = f"codec/{dtype}-{comp}-{shuffle}.bin"
    s3c.put_object(Bucket=DATA, Key=key, Body=b"HEAD" + data + b"TAIL")
    fields = {"offset": 4, "size": len(data), "shape": [20, 30], "selection": [[1, 20, 2], [-1, 0, -3]],
              "axis": [1], "missing": {"valid_min": -5}}
    if comp:
        fields["compression"] = {"id": comp}
    if shuffle:
        fields["filters"] = [{"id": "shuffle", "element_size": arr.itemsize}]
    for op in ("sum", "max", "min", "count", "select"):
        got, h, body = post(active.active_url, f"/v1/{op}", req(s3, key=key, dtype=dtype, **fields), auth=CREDS)
        assert got == 200, body
        res, counts = decode(h, body)
        want, wc = reference(op, arr.tobytes(), dtype, shape=[20, 30], selection=[(1, 20, 2), (-1, 0, -3)],
                             axis=[1], missing={"valid_min": -5})
        assert_same(res, want, op)
        assert counts == wc


@pytest.mark.parametrize("comp", [None, "gzip", "zlib"])
def test_streaming_folds_with_unaligned_range_and_missing(active, s3, s3c, comp):
    """Full sum/min/max/count fold as the object streams (compressed or not) from a range that
    starts and ends inside other bytes; the answer equals numpy's over the whole array."""
    arr = np.random.default_rng(3).standard_normal(250_003).astype("float32")
    arr[::1001] = np.nan
    raw = arr.tobytes()
    data = {None: raw, "gzip": gzip.compress(raw) if comp == "gzip" else b"",
            "zlib": zlib.compress(raw) if comp == "zlib" else b""}[comp]
    key = f"stream/{comp}.bin"
    s3c.put_object(Bucket=DATA, Key=key, Body=b"abc" + data + b"defgh")
    fields = {"offset": 3, "size": len(data), "missing": {"valid_range": [-1.5, 2.0]}}
    if comp:
        fields["compression"] = {"id": comp}
    for op in ("sum", "min", "max", "count"):
        got, h, body = post(active.active_url, f"/v1/{op}", req(s3, key=key, **fields), auth=CREDS)
        assert got == 200, body
        res, counts = decode(h, body)
        want, wc = reference(op, raw, "float32", missing={"valid_range": [-1.5, 2.0]})
        if op == "sum":
            np.testing.assert_allclose(res, want, rtol=1e-5)
        else:
            np.testing.assert_array_equal(res, want)
        assert counts == wc


def test_thread_budget_answers_503_at_once_when_the_queue_is_full(as_proxy_bin, s3, tmp_path):
    """One reduction thread (so a queue of 4): five reductions of a stalled HTTP object occupy the
    thread and the queue; the sixth is refused with 503 at once; released, the five answer 200."""
    import threading
    import time
    from concurrent.futures import ThreadPoolExecutor
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    release = threading.Event()
    payload = np.ones(1000, "int64").tobytes()

    class Slow(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload[:8])
            self.wfile.flush()
            release.wait(120)
            self.wfile.write(payload[8:])

        def log_message(self, *a):
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Slow)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    ev = tmp_path / "ev"
    ev.mkdir()
    p = Proxy(as_proxy_bin, s3, ev, args=("--active-storage-port", "0", "--active-storage-threads", "1"))
    body = {"interface_type": "http", "url": f"http://127.0.0.1:{srv.server_port}/x.bin", "dtype": "int64"}
    try:
        def gauges():
            text = get(p.active_url, "/metrics")[2].decode()
            v = dict(ln.rsplit(" ", 1) for ln in text.splitlines() if ln and not ln.startswith("#"))
            return int(v["roar_activestorage_threads_busy"]), int(v["roar_activestorage_queued"])

        with ThreadPoolExecutor(5) as pool:
            futs = [pool.submit(post, p.active_url, "/v2/sum", body) for _ in range(5)]
            deadline = time.monotonic() + 120
            while gauges() != (1, 4):
                assert time.monotonic() < deadline, gauges()
                time.sleep(0.05)
            got, _, raw = post(p.active_url, "/v2/sum", body)
            assert got == 503 and "busy" in json.loads(raw)["error"]["message"]
            release.set()
            assert [f.result()[0] for f in futs] == [200] * 5
    finally:
        release.set()
        srv.shutdown()
        p.stop()


def test_decompressed_size_must_match_shape(active, s3, s3c):
    s3c.put_object(Bucket=DATA, Key="codec/short.gz", Body=gzip.compress(ARR.tobytes()))
    got, _, body = post(active.active_url, "/v1/sum", req(s3, key="codec/short.gz", compression={"id": "gzip"},
                                                          shape=[9, 10]), auth=CREDS)
    assert got == 400 and "decompressed" in json.loads(body)["error"]["message"]


def test_memory_budget_refuses_at_once(as_proxy_bin, s3, s3c, tmp_path):
    """A request whose buffered data alone exceeds the budget: 413 with the budget named, at once;
    decompressed bytes count. The same object folded as it streams (a full sum) fits."""
    ev = tmp_path / "ev"
    ev.mkdir()
    p = Proxy(as_proxy_bin, s3, ev, args=("--active-storage-port", "0", "--active-storage-memory-mib", "2"))
    try:
        big = (np.arange(600_000) % 1000).astype("float64")  # 4.8 MB
        s3c.put_object(Bucket=DATA, Key="budget/big.bin", Body=big.tobytes())
        s3c.put_object(Bucket=DATA, Key="budget/big.gz", Body=gzip.compress(big.tobytes()))  # ~100 KB
        s3c.put_object(Bucket=DATA, Key="budget/big.sh", Body=_shuffle(big.tobytes(), 8))
        shuffle = {"filters": [{"id": "shuffle", "element_size": 8}]}
        for key, extra in (("budget/big.bin", {"shape": [600, 1000], "axis": 0}),
                           ("budget/big.gz", {"compression": {"id": "gzip"}, "shape": [600, 1000], "axis": 0}),
                           ("budget/big.sh", shuffle),
                           ("budget/big.bin", {"shape": [600_000], "selection": [[0, 600_000, 2]]})):
            got, _, body = post(p.active_url, "/v1/sum", req(s3, key=key, dtype="float64", **extra), auth=CREDS)
            assert got == 413, (key, extra, body)
            assert "memory budget" in json.loads(body)["error"]["message"]
        # The reduction's own memory counts: element-wise over 250k elements (1 MB of data)
        # needs ~50 bytes per output element; the whole reduction of the same data fits.
        small = np.arange(250_000, dtype="int32")
        s3c.put_object(Bucket=DATA, Key="budget/small.bin", Body=small.tobytes())
        got, _, body = post(p.active_url, "/v1/sum", req(s3, key="budget/small.bin", dtype="int32", shape=[250_000],
                                                         axis=[]), auth=CREDS)
        assert got == 413 and "memory budget" in json.loads(body)["error"]["message"], body
        got, _, body = post(p.active_url, "/v1/sum", req(s3, key="budget/small.bin", dtype="int32", shape=[500, 500],
                                                         axis=[1]), auth=CREDS)
        assert got == 200, body
        for key, extra in (("budget/big.bin", {}), ("budget/big.gz", {"compression": {"id": "gzip"}})):
            for op in ("sum", "max", "count"):
                got, h, body = post(p.active_url, f"/v1/{op}", req(s3, key=key, dtype="float64", **extra),
                                    auth=CREDS)
                assert got == 200, body
                want = {"sum": big.sum(), "max": big.max(), "count": big.size}[op]
                assert decode(h, body)[0] == want
    finally:
        p.stop()


def _cbor(b: bytes, i: int = 0):
    """A small CBOR decoder (the subset v2 answers use): returns (value, next index)."""
    ib = b[i]
    major, info = ib >> 5, ib & 31
    i += 1
    if major == 7:
        return {20: False, 21: True, 22: None}[info], i
    if info < 24:
        n = info
    else:
        w = {24: 1, 25: 2, 26: 4, 27: 8}[info]
        n = int.from_bytes(b[i:i + w], "big")
        i += w
    if major == 0:
        return n, i
    if major == 2:
        return b[i:i + n], i + n
    if major == 3:
        return b[i:i + n].decode(), i + n
    if major == 4:
        out = []
        for _ in range(n):
            v, i = _cbor(b, i)
            out.append(v)
        return out, i
    if major == 5:
        out = {}
        for _ in range(n):
            k, i = _cbor(b, i)
            out[k], i = _cbor(b, i)
        return out, i
    raise AssertionError(f"unexpected CBOR major type {major}")


def _cbor_enc(v) -> bytes:
    """A small CBOR encoder (maps, lists, text, integers, booleans, null) for v2 request bodies."""
    def head(major, n):
        for info, w in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 24:
                return bytes([major << 5 | n])
            if n < 1 << (8 * w):
                return bytes([major << 5 | info]) + n.to_bytes(w, "big")
        raise ValueError(n)
    if v is None or isinstance(v, bool):
        return bytes([0xf6 if v is None else 0xf5 if v else 0xf4])
    if isinstance(v, int):
        return head(0, v) if v >= 0 else head(1, -1 - v)
    if isinstance(v, str):
        b = v.encode()
        return head(3, len(b)) + b
    if isinstance(v, list):
        return head(4, len(v)) + b"".join(_cbor_enc(x) for x in v)
    return head(5, len(v)) + b"".join(_cbor_enc(k) + _cbor_enc(x) for k, x in v.items())


def test_v2_takes_a_cbor_request_body(active, s3, obj):
    body = {"interface_type": "s3", "url": f"{s3}/{DATA}/proto/a.bin", "dtype": "float32", "shape": [8, 10],
            "selection": [[-1, -9, -2], [0, 10, 3]], "missing": {"valid_min": 5}, "axis": [1]}
    got, h, raw = post(active.active_url, "/v2/sum", None, auth=CREDS, raw=_cbor_enc(body),
                       content_type="application/cbor")
    assert got == 200, raw
    m, _ = _cbor(raw)
    want, wc = reference("sum", ARR.tobytes(), "float32", shape=[8, 10], selection=[(-1, -9, -2), (0, 10, 3)],
                         missing={"valid_min": 5}, axis=[1])
    np.testing.assert_array_equal(np.frombuffer(m["bytes"], m["dtype"]), want)
    assert m["count"] == wc
    got, _, raw = post(active.active_url, "/v2/sum", None, auth=CREDS, raw=_cbor_enc(body | {"colour": 1}),
                       content_type="application/cbor")
    assert got == 400 and "colour" in json.loads(raw)["error"]["message"]
    got, _, raw = post(active.active_url, "/v2/sum", None, auth=CREDS, raw=b"\xff\x00",
                       content_type="application/cbor")
    assert got == 400 and "CBOR" in json.loads(raw)["error"]["message"]


def test_v2_answers_cbor(active, s3, obj):
    from urllib.parse import quote
    body = {"interface_type": "s3", "url": f"{s3}/{DATA}/{quote('proto/a.bin')}", "dtype": "float32",
            "shape": [8, 10], "axis": 0}
    got, h, raw = post(active.active_url, "/v2/max", body, auth=CREDS)
    assert got == 200 and h["content-type"] == "application/cbor"
    assert not any(k.startswith("x-activestorage") for k in h)
    m, end = _cbor(raw)
    assert end == len(raw)
    np.testing.assert_array_equal(np.frombuffer(m["bytes"], m["dtype"]), ARR.max(axis=0))
    assert m["shape"] == [10] and m["count"] == [8] * 10 and m["byte_order"] == "little"
    got, _, raw = post(active.active_url, "/v2/count", body | {"option_shape_as_bytes": True,
                                                               "option_count_as_bytes": True}, auth=CREDS)
    m, _ = _cbor(raw)
    assert np.frombuffer(m["shape_as_bytes"], np.uint64).tolist() == [10]
    assert np.frombuffer(m["count_as_bytes"], np.int64).tolist() == [8] * 10
    # v2 has no mean; v1 fields are unknown there.
    assert post(active.active_url, "/v2/mean", body, auth=CREDS)[0] == 404
    got, _, raw = post(active.active_url, "/v2/sum", body | {"source": s3}, auth=CREDS)
    assert got == 400 and "source" in json.loads(raw)["error"]["message"]
    got, _, raw = post(active.active_url, "/v2/sum", body | {"interface_type": "http"}, auth=CREDS)
    assert got in (400, 401)  # plain http to S3 without a signature: S3 refuses


def test_v2_http_interface_reads_a_url(active, s3, s3c):
    s3c.put_object(Bucket=PUBLIC, Key="http.bin", Body=ARR.tobytes())
    body = {"interface_type": "http", "url": f"{s3}/{PUBLIC}/http.bin", "dtype": "float32"}
    got, _, raw = post(active.active_url, "/v2/sum", body)
    assert got == 200, raw
    m, _ = _cbor(raw)
    assert np.frombuffer(m["bytes"], "float32")[0] == ARR.sum()


def test_reduction_is_recorded_as_an_input_with_its_range(active, s3, s3c):
    import blake3

    s3c.put_object(Bucket=DATA, Key="lineage/w.bin", Body=ARR.tobytes())
    assert post(active.active_url, "/v1/sum", req(s3, key="lineage/w.bin"), auth=CREDS)[0] == 200
    assert post(active.active_url, "/v1/sum", req(s3, key="lineage/w.bin", offset=40, size=40), auth=CREDS)[0] == 200
    assert post(active.active_url, "/v1/sum", req(s3, key="lineage/w.bin", shape=[3]), auth=CREDS)[0] == 400
    evs = [e for e in active.events() if e["key"] == "lineage/w.bin"]
    assert [(e["op"], e["dir"], e["range"], e["size"]) for e in evs] == [
        ("reduce", "in", None, 320), ("reduce", "in", "bytes=40-79", 40)]
    assert evs[0]["blake3"] == blake3.blake3(ARR.tobytes()).hexdigest() and evs[1]["blake3"] is None
    assert evs[0]["etag"] and evs[0]["bucket"] == DATA
