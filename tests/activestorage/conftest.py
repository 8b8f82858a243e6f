"""Real S3 for the active-storage tests: a SeaweedFS of their own on pinned ports 23400-23460.

The tests/s3 suite pins 23333-23389 and may run at the same time (several engineers share the
machine), so this one never touches those ports. One bucket is readable anonymously (SeaweedFS's
`anonymous` identity): the public-bucket case of the contract. The roar-proxy under test has its
active-storage listener on a free port.
"""

from __future__ import annotations

import pytest

from tests.s3.s3util import AK, SK, Proxy, client, ensure_proxy_binary, seaweed_server

from .asutil import PORTS

PUBLIC = "as-public"
DATA = "as-data"
CREDS = (AK, SK)


@pytest.fixture(scope="session")
def as_proxy_bin():
    return ensure_proxy_binary()


@pytest.fixture(scope="session")
def s3(tmp_path_factory):
    """The SeaweedFS URL, with the buckets `as-data` (private) and `as-public` (anonymous read)."""
    d = tmp_path_factory.mktemp("seaweed-as")
    with seaweed_server(d, ports=PORTS, public_buckets=(PUBLIC,)) as url:
        c = client(url)
        for b in (DATA, PUBLIC):
            c.create_bucket(Bucket=b)
        yield url


@pytest.fixture(scope="session")
def s3c(s3):
    return client(s3)


@pytest.fixture(scope="session")
def active(as_proxy_bin, s3, tmp_path_factory):
    """A roar-proxy with its active-storage listener on; `.active_url`, `.events()`."""
    ev = tmp_path_factory.mktemp("as-events")
    p = Proxy(as_proxy_bin, s3, ev, args=("--active-storage-port", "0"))
    assert p.active_url
    yield p
    p.stop()


@pytest.fixture
def put(s3c):
    """put(key, bytes, bucket=DATA): stores an object directly on SeaweedFS."""
    def _put(key: str, data: bytes, bucket: str = DATA):
        s3c.put_object(Bucket=bucket, Key=key, Body=data)
        return key
    return _put
