"""Helpers of the active-storage tests: raw HTTP requests to the listener and the numpy reference.

The reference is written from the wire contract (../shared/reference/active-storage-api.md), in
numpy terms: view as `shape` in `order`, apply the selection, mask the missing values (a masked
array), reduce; min/max ignore NaN like numpy's nanmin/nanmax; over no valid value they give the
dtype's max/min with count 0.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request

import numpy as np

# SeaweedFS ports of this suite and its benchmark (tests/s3 pins 23333-23389; both may run at once).
PORTS = {"master.port": 23400, "master.port.grpc": 23401, "volume.port": 23410, "volume.port.grpc": 23411,
         "filer.port": 23420, "filer.port.grpc": 23421, "s3.port": 23430, "s3.port.grpc": 23431,
         "admin.port": 23440, "admin.port.grpc": 23441, "s3.port.https": 23450}
DTYPES = ["int32", "int64", "uint32", "uint64", "float32", "float64"]
OPS = ["count", "max", "min", "select", "sum"]


def post(url: str, path: str, body, auth: tuple | None = None, content_type="application/json",
         raw: bytes | None = None):
    """POSTs `body` (JSON) to the listener; returns (status, headers dict, body bytes)."""
    data = raw if raw is not None else json.dumps(body).encode()
    req = urllib.request.Request(url + path, data=data, method="POST", headers={"Content-Type": content_type})
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def get(url: str, path: str):
    try:
        with urllib.request.urlopen(url + path, timeout=60) as r:
            return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def decode(headers: dict, body: bytes, order: str = "C"):
    """The numpy result of a v1 answer (and its counts)."""
    assert headers["content-type"] == "application/octet-stream"
    assert headers["x-activestorage-byte-order"] == sys.byteorder
    shape = json.loads(headers["x-activestorage-shape"])
    counts = json.loads(headers["x-activestorage-count"])
    assert int(headers["content-length"]) == len(body)
    a = np.frombuffer(body, dtype=headers["x-activestorage-dtype"])
    return a.reshape(shape, order=order), counts


def _mask(a: np.ndarray, missing: dict | None) -> np.ndarray:
    if not missing:
        return np.zeros(a.shape, bool)
    (k, v), = missing.items()
    if k == "missing_value":
        return a == np.array(v, a.dtype)
    if k == "missing_values":
        return np.isin(a, np.array(v, a.dtype))
    if k == "valid_min":
        return a < np.array(v, a.dtype)
    if k == "valid_max":
        return a > np.array(v, a.dtype)
    lo, hi = (np.array(x, a.dtype) for x in v)
    return (a < lo) | (a > hi)


def reference(op: str, data: bytes, dtype: str, shape=None, order="C", selection=None, axis=None,
              missing=None, byte_order=None):
    """(result array laid out as the answer, counts list) the contract prescribes."""
    dt = np.dtype(dtype)
    if byte_order:
        dt = dt.newbyteorder(">" if byte_order == "big" else "<")
    a = np.frombuffer(data, dtype=dt).astype(np.dtype(dtype))
    a = a.reshape(shape if shape else (a.size,), order=order)
    if selection:
        a = a[tuple(slice(*s) for s in selection)]
    m = _mask(a, missing)
    if op == "select":
        return a, [int((~m).sum())]
    ax = tuple(range(a.ndim)) if axis is None else ((axis,) if isinstance(axis, int) else tuple(axis))
    valid = ~m
    count = valid.sum(axis=ax).astype(np.int64)
    if op == "count":
        res = count
    elif op in ("sum", "mean"):
        if a.dtype.kind == "f":
            s = np.where(valid, a, 0).astype(np.float64).sum(axis=ax)
            with np.errstate(invalid="ignore", divide="ignore"):
                res = (s / count if op == "mean" else s).astype(a.dtype)
        else:
            res = np.where(valid, a, 0).sum(axis=ax, dtype=a.dtype)
            if op == "mean":
                res = (res.astype(np.float64) / np.maximum(count, 1)).astype(a.dtype)
    else:
        info = np.finfo(a.dtype) if a.dtype.kind == "f" else np.iinfo(a.dtype)
        ident = info.max if op == "min" else info.min
        nan = np.isnan(a) if a.dtype.kind == "f" else np.zeros(a.shape, bool)
        use = valid & ~nan
        filled = np.where(use, a, np.array(ident, a.dtype))
        res = (filled.min if op == "min" else filled.max)(axis=ax, initial=ident)
        if a.dtype.kind == "f":
            res = np.where((count > 0) & (use.sum(axis=ax) == 0), np.nan, res).astype(a.dtype)
    res = np.asarray(res, dtype=np.int64 if op == "count" else a.dtype)
    return res, [int(c) for c in np.asarray(count).flatten(order=order)]


def assert_same(got: np.ndarray, want: np.ndarray, op: str):
    assert got.shape == want.shape, (got.shape, want.shape)
    assert got.dtype == want.dtype, (got.dtype, want.dtype)
    if got.dtype.kind == "f" and op in ("sum", "mean"):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(got, want)
