"""A real local Ray for the Ray integration tests: every listener on 127.0.0.1, a short
temp dir (AF_UNIX socket paths are limited to 107 bytes), 2 CPUs, a small object store,
usage stats and token auth off. Scripts call `ray.init(**RAY_INIT)` themselves, under
`roar run`, so each test starts and stops its own cluster."""

import shutil
import tempfile

import pytest

RAY_ENV = {
    "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",  # then Ray's node ip is 127.0.0.1 (its servers bind it)
    "RAY_AUTH_MODE": "disabled",  # else ray.init writes ~/.ray/auth_token
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DEDUP_LOGS": "0",
}


@pytest.fixture
def ray_tmp():
    d = tempfile.mkdtemp(prefix="rr-", dir="/tmp")  # short: socket paths go under it
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def ray_init_line():
    """The `ray.init(...)` line of a test script (a local cluster of its own)."""
    return _init_line


def _init_line(temp_dir: str, extra: str = "") -> str:
    return (f"ray.init(address='local', num_cpus=2, object_store_memory=128 * 1024 * 1024, "
            f"include_dashboard=False, _temp_dir={temp_dir!r}{extra})")


@pytest.fixture
def ray_env(ray_tmp):
    env = dict(RAY_ENV)
    env["TMPDIR"] = ray_tmp
    return env
