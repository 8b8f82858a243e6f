"""Every operation x dtype x order x (shape, selection, axis, missing, byte order, range) against numpy.

Real requests to roar-proxy's active-storage listener, reading real objects from SeaweedFS.
"""

from __future__ import annotations

import numpy as np
import pytest

from .asutil import DTYPES, OPS, assert_same, decode, post, reference
from .conftest import CREDS, DATA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # SeaweedFS: the full tier only (make test)

SHAPE = [4, 5, 6]
N = 120


def _values(dtype: str) -> np.ndarray:
    rng = np.random.default_rng(DTYPES.index(dtype))  # stable across runs
    if dtype.startswith("float"):
        a = (rng.standard_normal(N) * 10).astype(dtype)
        a[[7, 50, 51]] = np.nan  # NaN never breaks a reduction; min/max skip it
        a[[3, 9]] = 3.0
        return a
    lo = 0 if dtype.startswith("u") else -25
    return rng.integers(lo, lo + 50, N).astype(dtype)


# (name, request fields): each runs for every op, dtype and order.
CASES = [
    ("1-D, no shape", {}),
    ("shape", {"shape": SHAPE}),
    ("selection", {"shape": SHAPE, "selection": [[1, 4, 1], [-1, -6, -2], [0, 100, 3]]}),
    ("clamped, negative stride", {"shape": SHAPE, "selection": [[10, -10, -1], [-100, 100, 2], [5, 0, -2]]}),
    ("empty selection", {"shape": SHAPE, "selection": [[3, 1, 1], [0, 5, 1], [0, 6, 1]]}),
    ("axis 0", {"shape": SHAPE, "axis": 0}),
    ("axis [0, 2]", {"shape": SHAPE, "axis": [0, 2]}),
    ("axis []", {"shape": SHAPE, "axis": []}),
    ("axis [0,1,2]", {"shape": SHAPE, "axis": [0, 1, 2]}),
    ("axis with selection", {"shape": SHAPE, "axis": [1], "selection": [[0, 4, 2], [4, -100, -1], [1, 6, 1]]}),
    ("missing_value", {"shape": SHAPE, "axis": 1, "missing": {"missing_value": 3}}),
    ("missing_values", {"shape": SHAPE, "missing": {"missing_values": [3, 7, 1]}}),
    ("valid_min", {"shape": SHAPE, "axis": [2], "missing": {"valid_min": 5}}),
    ("valid_max", {"shape": SHAPE, "missing": {"valid_max": 4}}),
    ("valid_range", {"shape": SHAPE, "axis": [0, 1], "missing": {"valid_range": [2, 12]}}),
    ("all missing", {"shape": SHAPE, "axis": 0, "missing": {"valid_min": 10_000}}),
]


@pytest.fixture(scope="module")
def objects(s3c):
    """Per dtype: (key, little-endian bytes)."""
    out = {}
    for dt in DTYPES:
        data = _values(dt).astype("<" + np.dtype(dt).str[1:]).tobytes()
        key = f"grid/{dt}.bin"
        s3c.put_object(Bucket=DATA, Key=key, Body=data)
        out[dt] = (key, data)
    return out


def _check(url, op, dtype, key, data, fields, order="C", **ref_extra):
    body = {"source": ref_extra.pop("source"), "bucket": DATA, "object": key, "dtype": dtype, **fields}
    if order != "C":
        body["order"] = order
    status, h, raw = post(url, f"/v1/{op}", body, auth=CREDS)
    assert status == 200, (op, dtype, fields, raw)
    got, counts = decode(h, raw, order)
    ref_fields = {k: v for k, v in fields.items() if k in ("shape", "selection", "axis", "missing", "byte_order")}
    if "selection" in ref_fields:
        ref_fields["selection"] = [tuple(s) for s in ref_fields["selection"]]
    want, want_counts = reference(op, data, dtype, order=order, **ref_fields, **ref_extra)
    assert_same(got, want, op)
    assert counts == want_counts, (op, dtype, fields)


@pytest.mark.parametrize("order", ["C", "F"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_every_op_and_case_matches_numpy(active, s3, objects, dtype, order):
    key, data = objects[dtype]
    for name, fields in CASES:
        if name == "1-D, no shape" and order == "F":
            continue
        for op in OPS + ["mean"]:
            if op == "mean" and (dtype.startswith("u") or "missing" in fields and name == "all missing"):
                continue
            _check(active.active_url, op, dtype, key, data, fields, order, source=s3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_big_endian_data(active, s3, s3c, dtype):
    vals = _values(dtype)
    data = vals.astype(">" + np.dtype(dtype).str[1:]).tobytes()
    s3c.put_object(Bucket=DATA, Key=f"be/{dtype}.bin", Body=data)
    for op in OPS:
        _check(active.active_url, op, dtype, f"be/{dtype}.bin", data,
               {"byte_order": "big", "shape": SHAPE, "axis": [1]}, source=s3)
    # Little-endian data named as such reads the same as the default.
    le = vals.astype("<" + np.dtype(dtype).str[1:]).tobytes()
    s3c.put_object(Bucket=DATA, Key=f"le/{dtype}.bin", Body=le)
    _check(active.active_url, "sum", dtype, f"le/{dtype}.bin", le, {"byte_order": "little"}, source=s3)


@pytest.mark.parametrize("dtype", ["int32", "float64"])
def test_unaligned_offset_and_size_read_a_range(active, s3, s3c, dtype):
    """Leading and trailing bytes outside the array: offset/size become a Range GET."""
    arr = _values(dtype)
    body = b"\x01\x02\x03" + arr.tobytes() + b"\xff" * 5
    s3c.put_object(Bucket=DATA, Key=f"unaligned/{dtype}.bin", Body=body)
    size = arr.nbytes
    for op in OPS:
        req = {"source": s3, "bucket": DATA, "object": f"unaligned/{dtype}.bin", "dtype": dtype,
               "offset": 3, "size": size, "shape": SHAPE, "selection": [[0, 4, 3], [1, 5, 1], [-1, -7, -1]]}
        status, h, raw = post(active.active_url, f"/v1/{op}", req, auth=CREDS)
        assert status == 200, raw
        got, counts = decode(h, raw)
        want, wc = reference(op, arr.tobytes(), dtype, shape=SHAPE, selection=[(0, 4, 3), (1, 5, 1), (-1, -7, -1)])
        assert_same(got, want, op)
        assert counts == wc
    # Only an offset: the rest of the object (trailing 5 bytes make it not whole elements).
    status, _, raw = post(active.active_url, "/v1/sum", {"source": s3, "bucket": DATA, "dtype": dtype,
                                                         "object": f"unaligned/{dtype}.bin", "offset": 3},
                          auth=CREDS)
    assert status == 400 and b"multiple" in raw


def test_integer_sum_wraps_and_count_is_int64(active, s3, s3c):
    data = np.array([2**31 - 1, 1, 5], dtype="int32").tobytes()
    s3c.put_object(Bucket=DATA, Key="wrap.bin", Body=data)
    status, h, raw = post(active.active_url, "/v1/sum", {"source": s3, "bucket": DATA, "object": "wrap.bin",
                                                         "dtype": "int32"}, auth=CREDS)
    got, _ = decode(h, raw)
    assert status == 200 and got.dtype == np.int32 and int(got) == -2**31 + 5
    status, h, raw = post(active.active_url, "/v1/count", {"source": s3, "bucket": DATA, "object": "wrap.bin",
                                                           "dtype": "int32"}, auth=CREDS)
    assert h["x-activestorage-dtype"] == "int64" and np.frombuffer(raw, np.int64)[0] == 3
