"""The active-storage client: numeric reductions of S3 objects, computed next to the data.

`reduce("s3://bucket/key", "sum", dtype="float32", shape=[1000, 1000], axis=0)` sends one
request (the Reductionist v1 wire contract) to an active-storage server, by default roar's own
(`roar proxy start --active-storage-port N`, the kernel's `%roar proxy on`, or the job proxy of
`roar run`), and returns the result as a numpy array with the non-missing counts. Through roar's
proxy the reduction is recorded as an input of the job or cell that made it (the proxy writes
the lineage event; this module records nothing). Owns request building, server/endpoint/credential
discovery and mapping the contract's errors to one exception type each (roar_nb.errors). Must not
import numpy or the network stack at import time, nor log credentials.
"""

from __future__ import annotations

import os
from typing import NamedTuple

from roar_nb.config import ENV_ACTIVE_STORAGE_URL
from roar_nb.errors import (AccessDenied, ActiveStorageError, InvalidReduction, ObjectNotFound, OverBudget,
                            ServerBusy, ServerUnavailable, UnknownOperation, UpstreamError)

OPERATIONS = ("count", "max", "min", "select", "sum", "mean")
DTYPES = ("int32", "int64", "uint32", "uint64", "float32", "float64")
TIMEOUT = 600.0  # seconds: a reduction of a large object takes as long as reading it


class Reduction(NamedTuple):
    """A reduction's result: `array` (numpy; 0-d for a full reduction) and `counts` (numpy int64:
    non-missing elements per output element, or one count for a full reduction and `select`)."""

    array: object
    counts: object


def server_url(server: str | None = None) -> str:
    """The active-storage server: `server`, else $ROAR_ACTIVE_STORAGE_URL (set by roar's proxies),
    else the project's `roar proxy start --active-storage-port` daemon."""
    if server:
        return server.rstrip("/")
    if os.environ.get(ENV_ACTIVE_STORAGE_URL):
        return os.environ[ENV_ACTIVE_STORAGE_URL].rstrip("/")
    try:
        from roar_nb import proxy
        from roar_nb.session import Project

        info = proxy.daemon_info(Project.find().roar_dir)
    except Exception:  # noqa: BLE001 - no project, unreadable record: same answer as no daemon
        info = None
    if info and info.get("active_url"):
        return info["active_url"]
    raise ServerUnavailable("no active-storage server: run `roar proxy start --active-storage-port N`, "
                            "`%roar proxy on` in a notebook, or pass server=URL")


def s3_source(source: str | None = None) -> str:
    """The S3 endpoint the server reads from: `source`, else the endpoint this process's AWS SDKs
    use (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL: under roar that is the proxy, which the server
    maps to its upstream), else $ROAR_UPSTREAM_S3_ENDPOINT, else AWS in $AWS_REGION."""
    for v in (source, os.environ.get("AWS_ENDPOINT_URL_S3"), os.environ.get("AWS_ENDPOINT_URL"),
              os.environ.get("ROAR_UPSTREAM_S3_ENDPOINT")):
        if v:
            return v.rstrip("/")
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
    return f"https://s3.{region}.amazonaws.com"


def credentials(auth=None) -> tuple[str, str] | None:
    """(access key id, secret) sent as HTTP Basic auth: `auth`, else the environment's, else
    botocore's credential chain when botocore is installed; None (anonymous) when there are none
    or `auth` is False."""
    if auth is False:
        return None
    if auth:
        return tuple(auth)
    ak, sk = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
    if ak and sk:
        return ak, sk
    try:
        import botocore.session
    except ImportError:
        return None
    c = botocore.session.get_session().get_credentials()
    return (c.access_key, c.secret_key) if c is not None else None


def split_url(url: str) -> tuple[str, str]:
    """`s3://bucket/key` -> (bucket, key); InvalidReduction otherwise."""
    if not url.startswith("s3://") or "/" not in url[5:] or not url[5:].split("/", 1)[1]:
        raise InvalidReduction(f"not an s3://bucket/key URL: {url!r}")  # repr: escaped
    bucket, key = url[5:].split("/", 1)
    return bucket, key


def _selection(selection, shape) -> list | None:
    """[start, end, stride] triples; Python slices are accepted (their defaults resolved
    against `shape`, so `slice(None, None, -1)` stays "everything reversed")."""
    if selection is None:
        return None
    out = []
    for i, s in enumerate(selection):
        if isinstance(s, slice):
            if shape is None:
                raise InvalidReduction("selection requires shape")
            n = int(shape[i])
            start, stop, step = s.indices(n)
            if step < 0 and stop < 0:
                stop = -n - 1  # "before the first element"; -1 would mean the last one
            out.append([start, stop, step])
        else:
            out.append([int(v) for v in s])
    return out


def request_body(url: str, op: str, *, dtype: str, shape=None, axis=None, selection=None, missing=None,
                 order=None, byte_order=None, offset=None, size=None, compression=None, filters=None,
                 source: str | None = None) -> dict:
    """The v1 JSON body of a reduction (only the fields given)."""
    if op not in OPERATIONS:
        raise UnknownOperation(f"unknown operation {op!r} (one of {', '.join(OPERATIONS)})")
    if dtype not in DTYPES:
        raise InvalidReduction(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    bucket, key = split_url(url)
    body = {"source": s3_source(source), "bucket": bucket, "object": key, "dtype": dtype}
    shape = [int(d) for d in shape] if shape is not None else None
    if isinstance(compression, str):
        compression = {"id": compression}
    for name, v in (("shape", shape), ("axis", list(axis) if isinstance(axis, (list, tuple)) else axis),
                    ("selection", _selection(selection, shape)), ("missing", missing), ("order", order),
                    ("byte_order", byte_order), ("offset", offset), ("size", size),
                    ("compression", compression), ("filters", filters)):
        if v is not None:
            body[name] = v
    return body


_BY_STATUS = {401: AccessDenied, 404: UnknownOperation, 413: OverBudget, 503: ServerBusy}


def _error(status: int, raw: bytes) -> ActiveStorageError:
    import json

    try:
        msg = json.loads(raw)["error"]["message"]
    except (ValueError, KeyError, TypeError):
        msg = raw[:200].decode(errors="replace")
    from roar_nb import present

    # One line, and nothing in it can act on a terminal (the message quotes the request's names).
    msg = present.text(" ".join(str(msg).split()))
    if status == 400:
        cls = ObjectNotFound if ("NoSuchKey" in msg or "NoSuchBucket" in msg) else InvalidReduction
    else:
        cls = _BY_STATUS.get(status, UpstreamError if status >= 500 else ActiveStorageError)
    e = cls(f"active storage ({status}): {msg}")
    e.status = status
    return e


def post(server: str, op: str, body: dict, auth: tuple[str, str] | None) -> tuple[dict, bytes]:
    """POST /v1/{op}; (headers, body) of a 200, else the contract's exception."""
    import base64
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(f"{server}/v1/{op}", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    if auth:
        token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as r:
            return {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        raise _error(e.code, e.read()) from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise ServerUnavailable(f"active storage at {server} cannot be reached: {reason}") from None


def decode(headers: dict, raw: bytes, order: str | None = None) -> Reduction:
    """The numpy result of a v1 answer (its x-activestorage-* headers)."""
    import json

    import numpy as np

    dtype = np.dtype(headers["x-activestorage-dtype"])
    if headers.get("x-activestorage-byte-order", "little") == "big":
        dtype = dtype.newbyteorder(">")
    shape = json.loads(headers["x-activestorage-shape"])
    counts = np.asarray(json.loads(headers["x-activestorage-count"]), dtype=np.int64)
    arr = np.frombuffer(raw, dtype=dtype).reshape(shape, order=order or "C")
    if len(shape) and counts.size == arr.size:
        counts = counts.reshape(shape, order=order or "C")
    return Reduction(arr, counts)


def reduce(url: str, op: str, *, dtype: str, shape=None, axis=None, selection=None, missing=None, order=None,
           byte_order=None, offset=None, size=None, compression=None, filters=None, server: str | None = None,
           source: str | None = None, auth=None) -> Reduction:
    """Reduces the S3 object `url` (`s3://bucket/key`) with `op` (count, max, min, select, sum,
    mean) on an active-storage server and returns `Reduction(array, counts)`.

    `dtype` (int32 int64 uint32 uint64 float32 float64), `shape`, `axis` (int, list, [] for none),
    `selection` (`[start, end, stride]` per dimension, or slices), `missing` (one of
    `{"missing_value": v}`, `{"missing_values": [..]}`, `{"valid_min": v}`, `{"valid_max": v}`,
    `{"valid_range": [lo, hi]}`), `order` ("C"/"F"), `byte_order` ("big"/"little"), `offset` and
    `size` (bytes; a ranged read), `compression` ("gzip"/"zlib"), `filters`
    (`[{"id": "shuffle", "element_size": 4}]`) follow the wire contract; min/max ignore NaN like
    numpy.nanmin/nanmax. `server`, `source` (the S3 endpoint) and `auth` ((key, secret), or False
    for anonymous) default as `server_url`, `s3_source` and `credentials` say. Raises one
    ActiveStorageError subclass per contract error.
    """
    body = request_body(url, op, dtype=dtype, shape=shape, axis=axis, selection=selection, missing=missing,
                        order=order, byte_order=byte_order, offset=offset, size=size, compression=compression,
                        filters=filters, source=source)
    target = server_url(server)
    headers, raw = post(target, op, body, credentials(auth))
    _say_if_unrecorded(target, url)
    return decode(headers, raw, order)


def _say_if_unrecorded(target: str, url: str) -> None:
    """Inside a traced job or cell, a reduction is an input only when it went through the
    job's (or kernel's) own proxy, $ROAR_ACTIVE_STORAGE_URL: that proxy writes the event.
    Through another server (the `roar proxy start` daemon, an explicit `server=`) nothing
    records it, so the job says so: a line in its trace directory's notes file, read with
    the tracer's notes when the job or cell ends (`ptrace.read_notes`), makes it partial."""
    from roar_nb.config import ENV_TRACE_DIR

    trace_dir = os.environ.get(ENV_TRACE_DIR)
    own = (os.environ.get(ENV_ACTIVE_STORAGE_URL) or "").rstrip("/")
    if not trace_dir or (own and target.rstrip("/") == own):
        return
    from roar_nb import present
    from roar_nb.capture.ptrace import NOTES_NAME

    why = ("the `roar proxy start` daemon, which records nothing for this job" if not own else
           f"{present.text(target)}, not this job's proxy")
    line = (f"partial\tan active-storage reduction of {present.text(url)} went through {why}: that input is not "
            "in the lineage (use `%roar proxy on` in a notebook, `roar proxy enable` for roar run)\n")
    try:  # one write with O_APPEND: lines from several processes never interleave
        fd = os.open(os.path.join(trace_dir, NOTES_NAME), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode("utf-8", "replace"))
        finally:
            os.close(fd)
    except OSError:
        pass  # the trace directory is gone (the job ended): nothing left to make partial
