"""Property-based: hypothesis generates shapes, orders, selections, axes and missing descriptors;
every answer of the listener must equal numpy's (tests/activestorage/asutil.reference).

One object per dtype holds 216 elements; each example reads a prefix of it (offset and size, so a
Range GET) viewed as the generated shape.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .asutil import DTYPES, OPS, assert_same, decode, post, reference
from .conftest import CREDS, DATA

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # SeaweedFS: the full tier only (make test)

MAXN = 216


@pytest.fixture(scope="module")
def prop_objects(s3c):
    out = {}
    rng = np.random.default_rng(7)
    for dt in DTYPES:
        if dt.startswith("float"):
            a = rng.integers(-20, 20, MAXN).astype(dt)
            a[rng.integers(0, MAXN, 6)] = np.nan
        else:
            a = rng.integers(0 if dt.startswith("u") else -20, 20, MAXN).astype(dt)
        s3c.put_object(Bucket=DATA, Key=f"prop/{dt}.bin", Body=a.tobytes())
        out[dt] = a.tobytes()
    return out


@st.composite
def requests(draw):
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=3))
    ndim = len(shape)
    fields = {"shape": shape}
    if draw(st.booleans()):
        fields["order"] = draw(st.sampled_from(["C", "F"]))
    if draw(st.booleans()):
        fields["selection"] = [[draw(st.integers(-8, 8)), draw(st.integers(-8, 8)),
                                draw(st.integers(-3, 3).filter(bool))] for _ in range(ndim)]
    kind = draw(st.sampled_from(["none", "int", "list"]))
    if kind == "int":
        fields["axis"] = draw(st.integers(0, ndim - 1))
    elif kind == "list":
        fields["axis"] = sorted(draw(st.sets(st.integers(0, ndim - 1))))
    missing = draw(st.sampled_from([None, "missing_value", "missing_values", "valid_min", "valid_max",
                                    "valid_range"]))
    if missing:
        v = draw(st.integers(0, 10))
        fields["missing"] = {"missing_value": v, "missing_values": [v, v + 3], "valid_min": v,
                             "valid_max": v, "valid_range": [v, v + 8]}[missing]
        fields["missing"] = {missing: fields["missing"]}
    return draw(st.sampled_from(DTYPES)), draw(st.sampled_from(OPS)), fields


@settings(max_examples=150, deadline=None, database=None,  # no .hypothesis/ in the tree
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=requests())
def test_random_requests_match_numpy(active, s3, prop_objects, case):
    dtype, op, fields = case
    n = int(np.prod(fields["shape"]))
    isz = np.dtype(dtype).itemsize
    body = {"source": s3, "bucket": DATA, "object": f"prop/{dtype}.bin", "dtype": dtype, "offset": 0,
            "size": n * isz, **fields}
    status, h, raw = post(active.active_url, f"/v1/{op}", body, auth=CREDS)
    assert status == 200, (body, raw)
    order = fields.get("order", "C")
    got, counts = decode(h, raw, order)
    sel = [tuple(s) for s in fields["selection"]] if "selection" in fields else None
    want, wc = reference(op, prop_objects[dtype][:n * isz], dtype, shape=fields["shape"], order=order,
                         selection=sel, axis=fields.get("axis"), missing=fields.get("missing"))
    assert_same(got, want, op)
    assert counts == wc
