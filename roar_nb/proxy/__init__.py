"""The Python side of the S3 proxy: finding `roar-proxy`, starting and stopping it, its events.

Owns the proxy's process (job-scoped for `roar run`, or a standalone daemon recorded in
`.roar/proxy.json`), the environment that routes a child's S3 clients through it
(`AWS_ENDPOINT_URL`, `AWS_ENDPOINT_URL_S3`), and turning the proxy's event lines
(`*.s3.jsonl`, documented in rust/EVENTS.md) into job edges `s3://bucket/key` with the
blake3 the proxy computed while streaming. Must not hash or store anything itself, and
never handles credentials: the proxy reads them from the environment it inherits.
Imported only when the proxy is used, so `roar run` without it pays nothing.
"""

from __future__ import annotations

import os

from roar_nb.errors import ProxyError

ENV_BINARY = "ROAR_PROXY_BIN"  # path of the roar-proxy binary (default: roar_nb/_native/roar-proxy)
ENV_UPSTREAM = "ROAR_UPSTREAM_S3_ENDPOINT"  # read by roar-proxy itself; [proxy] upstream overrides it
EVENTS_SUFFIX = ".s3.jsonl"
READY_PREFIX = "roar-proxy listening on "
ACTIVE_PREFIX = "roar-proxy active storage on "  # printed before READY_PREFIX when that listener is on
START_TIMEOUT = 30.0  # seconds; start-up takes milliseconds, but the machine may be loaded


def binary_path() -> str:
    """The roar-proxy executable, or ProxyError saying how to build it."""
    p = os.environ.get(ENV_BINARY) or os.path.join(os.path.dirname(os.path.dirname(__file__)), "_native", "roar-proxy")
    if not os.access(p, os.X_OK):
        raise ProxyError(f"roar-proxy binary not found at {p} (build it: make build)")
    return p


class Running:
    """A started proxy: its process, the URL S3 clients must use, and its active-storage URL (or None)."""

    def __init__(self, proc, port: int, active_url: str | None = None):
        self.proc = proc
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.active_url = active_url

    def stop(self) -> str | None:
        """Stops the proxy (SIGTERM, then waits). Returns a problem worth a note, or None."""
        return stop_process(self.proc)


def stop_process(proc) -> str | None:
    import subprocess

    if proc.poll() is None:
        proc.terminate()
    try:
        rc = proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    if rc == 3:
        return "the S3 proxy could not write some events; S3 capture incomplete"
    if rc not in (0, -15):
        return f"the S3 proxy exited with status {rc}; S3 capture may be incomplete"
    return None


def active_args(cfg) -> list[str]:
    """roar-proxy options of the active-storage budgets set in the project config (0: unset,
    so the proxy's environment variables or defaults apply)."""
    out = []
    if cfg.get("proxy.active_storage_memory_mib"):
        out += ["--active-storage-memory-mib", str(int(cfg.get("proxy.active_storage_memory_mib")))]
    if cfg.get("proxy.active_storage_threads"):
        out += ["--active-storage-threads", str(int(cfg.get("proxy.active_storage_threads")))]
    return out


def start(events_dir: str | None, log_path: str, upstream: str = "", region: str = "", port: int = 0,
          env: dict | None = None, detach: bool = False, active_port: int | None = None,
          extra: list[str] | None = None) -> Running:
    """Starts roar-proxy on 127.0.0.1 (`port` 0: a free one) and waits until it listens.

    `active_port`: also open the active-storage listener (0: a free port; None: off).
    `env` is the environment it inherits (its credentials come from there); its stderr goes
    to `log_path` (a pipe nobody reads could fill up). Raises ProxyError with the proxy's
    own one-line reason when it cannot start.
    """
    import select
    import subprocess

    argv = [binary_path(), "--port", str(int(port))]
    if active_port is not None:
        argv += ["--active-storage-port", str(int(active_port)), *(extra or [])]
    if upstream:
        argv += ["--upstream", upstream]
    if region:
        argv += ["--region", region]
    if events_dir:
        argv += ["--events-dir", events_dir]
    try:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log,
                                    env=env, start_new_session=detach)
    except OSError as e:
        raise ProxyError(f"cannot start roar-proxy: {e.strerror}") from None
    ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT)
    line = proc.stdout.readline().decode(errors="replace") if ready else ""
    active_url = None
    if line.startswith(ACTIVE_PREFIX):
        active_url = "http://" + line[len(ACTIVE_PREFIX):].strip()
        line = proc.stdout.readline().decode(errors="replace")
    if not line.startswith(READY_PREFIX):
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        try:
            with open(log_path, "rb") as f:
                err = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            err = []
        raise ProxyError(err[-1] if err else "roar-proxy did not start")
    proc.stdout.close()  # it prints nothing after the ready line (and ignores EPIPE)
    return Running(proc, int(line.rsplit(":", 1)[1]), active_url)


def upstream_for(configured: str, env: dict) -> str:
    """Where the proxy forwards: `[proxy] upstream`, else $ROAR_UPSTREAM_S3_ENDPOINT, else the
    endpoint the user's own environment already names (AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL,
    so routing through roar never sends a MinIO user's requests to AWS), else "" (AWS)."""
    for v in (configured, env.get(ENV_UPSTREAM), env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL")):
        if v:
            return v
    return ""


def child_env(url: str, active_url: str | None = None) -> dict:
    """Variables that route AWS SDKs (boto3, awscli, pyarrow) of a child through the proxy, and
    `roar_nb.activestorage` to the proxy's active-storage listener (so reductions are lineage)."""
    from roar_nb.config import ENV_ACTIVE_STORAGE_URL

    env = {"AWS_ENDPOINT_URL": url, "AWS_ENDPOINT_URL_S3": url}
    if active_url:
        env[ENV_ACTIVE_STORAGE_URL] = active_url
    return env


def route_existing_clients(url: str):
    """Routes the boto3/botocore S3 clients that already exist in this process through the
    proxy at `url` (those created later follow AWS_ENDPOINT_URL); returns the undo function.

    A `before-sign.s3` handler (the hook botocore's own S3 Accelerate switch uses) rewrites each
    request's URL to the proxy before it is signed, turning virtual-host style
    (`bucket.s3....amazonaws.com/key`) into the path style the proxy takes. Clients are found
    with the garbage collector: the kernel's own objects, nothing is imported that was not."""
    import sys

    if "botocore.client" not in sys.modules:
        return lambda: None
    import gc
    import re
    from urllib.parse import urlsplit

    from botocore.client import BaseClient

    proxy = urlsplit(url)
    virtual = re.compile(r"^(.+?)\.s3[.-]")

    def reroute(request, **kwargs):
        parts = urlsplit(request.url)
        if parts.netloc == proxy.netloc:
            return
        path = parts.path or "/"
        m = virtual.match(parts.hostname or "")
        if m:
            path = f"/{m.group(1)}{path}"
        request.url = f"{proxy.scheme}://{proxy.netloc}{path}" + (f"?{parts.query}" if parts.query else "")

    clients = [o for o in gc.get_objects() if isinstance(o, BaseClient)
               and getattr(o.meta.service_model, "service_name", None) == "s3"]
    for c in clients:
        c.meta.events.register("before-sign.s3", reroute, unique_id="roar-proxy-reroute")

    def undo() -> None:
        for c in clients:
            c.meta.events.unregister("before-sign.s3", unique_id="roar-proxy-reroute")

    return undo


def read_events(trace_dir: str) -> tuple[list[dict], list[str]]:
    """The proxy's events in a trace directory, in time order, and problems worth a note."""
    import json

    events, problems = [], []
    try:
        names = [n for n in os.listdir(trace_dir) if n.endswith(EVENTS_SUFFIX)]
    except OSError:
        return [], []
    for n in names:
        try:
            with open(os.path.join(trace_dir, n), encoding="utf-8") as f:
                for line in f:
                    if line.endswith("\n"):
                        events.append(json.loads(line))
                    else:
                        problems.append("the S3 proxy stopped while writing an event")
        except (OSError, ValueError) as e:
            problems.append(f"S3 events unreadable: {e}")
    events.sort(key=lambda e: e.get("t_ns", 0))
    return events, problems


def s3_path(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def to_edges(events: list[dict], etag_lookup=None) -> tuple[list, list, dict]:
    """Fold S3 events into (input edges, output edges, digests {blake3: {algo: value}}).

    Like file reduction: an object first read before this job wrote it is an input; the last
    version written is an output; a deleted output is not an output. A Range GET proves only
    that bytes of an object were read: its edge gets the object's blake3 when an earlier job
    recorded that ETag (`etag_lookup(etag) -> blake3 | None`), else no hash and a note.
    """
    from roar_nb.model import Edge

    ins: dict = {}
    outs: dict = {}
    digests: dict = {}
    for e in events:
        path = s3_path(e["bucket"], e["key"])
        h = e.get("blake3")
        if h and (e.get("etag") or e.get("version_id")):
            d = digests.setdefault(h, {})
            if e.get("etag"):
                d["s3.etag"] = e["etag"]
            if e.get("version_id"):
                d["s3.version_id"] = e["version_id"]
        if e["dir"] == "in":
            if path in outs or path in ins:
                continue
            note = None
            if e.get("range"):
                note = f"partial read ({e['range']})"
                if not h and e.get("etag") and etag_lookup is not None:
                    h = etag_lookup(e["etag"])
                if not h:
                    note += "; object blake3 unknown"
            ins[path] = Edge("in", path, h, e.get("size") or 0, False, note)
        elif e["dir"] == "out":
            note = None if h else "S3 object written but its blake3 could not be computed"
            outs[path] = Edge("out", path, h, e.get("size") or 0, False, note)
        elif e["dir"] == "del":
            outs.pop(path, None)
    used = {e.hash for e in (*ins.values(), *outs.values())}
    return list(ins.values()), list(outs.values()), {h: d for h, d in digests.items() if h in used}


def object_hashes(project, urls: list[str]) -> dict[str, str | None]:
    """The blake3 of each S3 object now upstream (None: it does not exist), for `roar reproduce`:
    an S3 source is present when its bytes are, an S3 output is verified by its bytes after the
    re-run. Read from the proxy's upstream (`[proxy] upstream`, else the environment's).
    Raises ProxyError (one line) when S3 cannot be asked."""
    from roar_nb.proxy import transfer

    endpoint = upstream_for(project.config.get("proxy.upstream"), os.environ) or None
    try:
        return {u: transfer.object_blake3(u, endpoint) for u in urls}
    except transfer.TransferError as e:
        raise ProxyError(str(e)) from None


# --- the standalone daemon (`roar proxy start|stop|status`) -------------------------

DAEMON_FILE = "proxy.json"  # in .roar/: {"pid", "port", "url", "active_url"}


def daemon_info(roar_dir: str) -> dict | None:
    """The running daemon's record, or None (a stale record of a dead process is removed)."""
    import json

    path = os.path.join(roar_dir, DAEMON_FILE)
    try:
        with open(path) as f:
            info = json.load(f)
    except (OSError, ValueError):
        return None
    if not _is_proxy(int(info.get("pid", 0))):
        try:
            os.unlink(path)
        except OSError:
            pass
        return None
    return info


def _is_proxy(pid: int) -> bool:
    """Whether `pid` is alive and is a roar-proxy (never signal a recycled pid)."""
    if pid <= 0:
        return False
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            argv0 = f.read().split(b"\0", 1)[0]
    except OSError:
        return False
    return os.path.basename(argv0) == b"roar-proxy"


def start_daemon(roar_dir: str, port: int, upstream: str, region: str, active_port: int | None = None,
                 extra: list[str] | None = None) -> dict:
    """Starts a detached proxy for ad-hoc use; its events go to .roar/proxy-events/.
    `active_port` (None: off) opens its active-storage listener too."""
    import json

    if daemon_info(roar_dir) is not None:
        raise ProxyError("the proxy daemon is already running (roar proxy stop first)")
    events = os.path.join(roar_dir, "proxy-events")
    os.makedirs(events, mode=0o700, exist_ok=True)
    running = start(events, os.path.join(roar_dir, "proxy.log"), upstream=upstream_for(upstream, os.environ),
                    region=region, port=port, detach=True, active_port=active_port, extra=extra)
    info = {"pid": running.proc.pid, "port": running.port, "url": running.url, "active_url": running.active_url}
    with open(os.path.join(roar_dir, DAEMON_FILE), "w") as f:
        json.dump(info, f)
    return info


def stop_daemon(roar_dir: str) -> dict | None:
    """Stops the daemon (SIGTERM, waits up to 30 s). Returns its record, None if none ran."""
    import signal
    import time

    info = daemon_info(roar_dir)
    if info is None:
        return None
    os.kill(info["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _is_proxy(info["pid"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        os.unlink(os.path.join(roar_dir, DAEMON_FILE))
    except OSError:
        pass
    return info
