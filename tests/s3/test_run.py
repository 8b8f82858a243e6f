"""`roar run` with the S3 proxy enabled: boto3 calls of the command become edges s3://bucket/key."""

from __future__ import annotations

import json
import os
import textwrap

import blake3
import pytest

from .s3util import client, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # slow: the full tier only (make test)

SCRIPT = textwrap.dedent("""
    import io, sys
    import boto3
    from boto3.s3.transfer import TransferConfig
    bucket = sys.argv[1]
    s3 = boto3.client("s3")  # no endpoint given: AWS_ENDPOINT_URL routes it
    data = s3.get_object(Bucket=bucket, Key="in/raw data.bin")["Body"].read()
    s3.put_object(Bucket=bucket, Key="out/doubled.bin", Body=data + data)
    mib = 1024 * 1024
    s3.upload_fileobj(io.BytesIO(data * 12), bucket, "out/big.bin",
                      Config=TransferConfig(multipart_threshold=5 * mib, multipart_chunksize=5 * mib))
    s3.put_object(Bucket=bucket, Key="out/tmp.bin", Body=b"scratch")
    s3.delete_object(Bucket=bucket, Key="out/tmp.bin")
    print("done", len(data))
""")


def _env(seaweed, **extra):
    e = s3_env()
    e["ROAR_UPSTREAM_S3_ENDPOINT"] = seaweed
    e.update(extra)
    return e


def test_roar_run_records_s3_edges_with_blake3(proj, proxy_bin, seaweed, bucket):
    raw = os.urandom(1024 * 1024 + 17)
    client(seaweed).put_object(Bucket=bucket, Key="in/raw data.bin", Body=raw)
    (proj.root / "script.py").write_text(SCRIPT)
    proj.roar("proxy", "enable")
    r = proj.roar("run", "python", "script.py", bucket, env=_env(seaweed))
    assert r.stdout.decode().strip() == f"done {len(raw)}", r.stderr
    dag = proj.dag()
    assert dag["jobs"], (r.stderr, dag)
    job = dag["jobs"][-1]
    ins = {e["path"]: e for e in job["inputs"]}
    outs = {e["path"]: e for e in job["outputs"]}
    b3 = lambda d: blake3.blake3(d).hexdigest()  # noqa: E731
    assert ins[f"s3://{bucket}/in/raw data.bin"]["hash"] == b3(raw)
    assert set(outs) == {f"s3://{bucket}/out/doubled.bin", f"s3://{bucket}/out/big.bin"}, outs
    assert outs[f"s3://{bucket}/out/doubled.bin"]["hash"] == b3(raw + raw)
    assert outs[f"s3://{bucket}/out/big.bin"]["hash"] == b3(raw * 12)
    assert outs[f"s3://{bucket}/out/big.bin"]["size"] == len(raw) * 12
    assert job["capture_level"] == "complete", job["capture_notes"]
    # `roar show s3://...` finds the object; its ETag is kept beside the blake3.
    art = json.loads(proj.roar("show", f"s3://{bucket}/out/doubled.bin", "--json").stdout)
    assert art["hash"] == b3(raw + raw)
    assert art["digests"]["s3.etag"] == client(seaweed).head_object(Bucket=bucket, Key="out/doubled.bin")["ETag"].strip('"')
    assert [(p["job"], p["path"]) for p in art["producers"]] == [(job["id"], f"s3://{bucket}/out/doubled.bin")]
    # And the command's data really went to S3.
    assert client(seaweed).get_object(Bucket=bucket, Key="out/doubled.bin")["Body"].read() == raw + raw


def test_the_users_own_endpoint_becomes_the_upstream(proj, proxy_bin, seaweed, bucket):
    """A user already pointing AWS_ENDPOINT_URL at their S3 (MinIO, here SeaweedFS) keeps it: the
    proxy forwards there, instead of the command's requests silently going to AWS."""
    (proj.root / "up.py").write_text(
        "import os, sys, boto3\n"
        "assert os.environ['AWS_ENDPOINT_URL'].startswith('http://127.0.0.1:')\n"
        "boto3.client('s3').put_object(Bucket=sys.argv[1], Key='mine.bin', Body=b'mine')\n")
    proj.roar("proxy", "enable")
    env = s3_env(seaweed)  # AWS_ENDPOINT_URL = SeaweedFS; no ROAR_UPSTREAM_S3_ENDPOINT
    env.pop("ROAR_UPSTREAM_S3_ENDPOINT", None)
    proj.roar("run", "python", "up.py", bucket, env=env)
    assert client(seaweed).get_object(Bucket=bucket, Key="mine.bin")["Body"].read() == b"mine"
    outs = [e["path"] for e in proj.dag()["jobs"][-1]["outputs"]]
    assert outs == [f"s3://{bucket}/mine.bin"]


def test_proxy_start_failure_runs_the_command_and_marks_the_job_partial(proj, seaweed, bucket, tmp_path):
    (proj.root / "hello.py").write_text("print('hello')\n")
    proj.roar("proxy", "enable")
    r = proj.roar("run", "python", "hello.py", env=_env(seaweed, ROAR_PROXY_BIN=str(tmp_path / "missing")))
    assert r.stdout == b"hello\n"
    err = r.stderr.decode()
    assert "S3 proxy not started" in err and "S3 I/O not captured" in err
    job = proj.dag()["jobs"][-1]
    assert job["capture_level"] == "partial"
    assert job["exit_code"] == 0


def test_proxy_disabled_by_default_leaves_the_environment_alone(proj, seaweed):
    (proj.root / "env.py").write_text("import os; print(os.environ.get('AWS_ENDPOINT_URL', 'unset'))\n")
    r = proj.roar("run", "python", "env.py", env=_env(seaweed))
    assert r.stdout == b"unset\n"


def test_proxy_daemon_start_status_stop(proj, proxy_bin, seaweed, bucket):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = _env(seaweed)
    out = proj.roar("proxy", "start", "--port", port, env=env).stdout.decode()
    try:
        assert f"port {port}" in out
        assert f"running on http://127.0.0.1:{port}" in proj.roar("proxy", "status", env=env).stdout.decode()
        c = client(f"http://127.0.0.1:{port}")
        c.put_object(Bucket=bucket, Key="daemon.bin", Body=b"via the daemon")
        assert c.get_object(Bucket=bucket, Key="daemon.bin")["Body"].read() == b"via the daemon"
        again = proj.roar("proxy", "start", env=env, check=False)
        assert again.returncode != 0 and b"already running" in again.stderr
    finally:
        stopped = proj.roar("proxy", "stop", env=env).stdout.decode()
    assert "stopped" in stopped
    assert "not running" in proj.roar("proxy", "status", env=env).stdout.decode()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()


STEP = textwrap.dedent("""
    import sys
    import boto3
    bucket = sys.argv[1]
    s3 = boto3.client("s3")
    data = s3.get_object(Bucket=bucket, Key="in/src.bin")["Body"].read()
    s3.put_object(Bucket=bucket, Key="out/rev.bin", Body=data[::-1])
""")


def test_reproduce_through_s3_checks_the_source_and_verifies_the_output(proj, proxy_bin, seaweed, bucket):
    src = os.urandom(300_000)
    direct = client(seaweed)
    direct.put_object(Bucket=bucket, Key="in/src.bin", Body=src)
    (proj.root / "step.py").write_text(STEP)
    proj.roar("proxy", "enable")
    env = _env(seaweed)
    proj.roar("run", "python", "step.py", bucket, env=env)
    target = f"s3://{bucket}/out/rev.bin"
    # The output is gone upstream; its S3 source is present: the plan runs and the re-run's
    # object is verified by its blake3.
    direct.delete_object(Bucket=bucket, Key="out/rev.bin")
    plan = proj.roar("reproduce", target, env=env).stdout.decode()
    assert f"s3://{bucket}/in/src.bin" in plan and "missing" not in plan, plan
    r = proj.roar("reproduce", target, "--run", env=env, check=False)
    out = r.stdout.decode()
    assert r.returncode == 0, (out, r.stderr.decode())
    assert "identical" in out and target in out, out
    assert direct.get_object(Bucket=bucket, Key="out/rev.bin")["Body"].read() == src[::-1]
    # The source object changed upstream: the re-run's output differs, and says so.
    direct.put_object(Bucket=bucket, Key="in/src.bin", Body=b"other bytes")
    r = proj.roar("reproduce", target, "--run", env=env, check=False)
    assert r.returncode != 0 and "differs" in r.stdout.decode() + r.stderr.decode(), r
    # The source is gone: refused before running anything.
    direct.delete_object(Bucket=bucket, Key="in/src.bin")
    r = proj.roar("reproduce", target, "--run", env=env, check=False)
    assert r.returncode != 0 and f"source artifact s3://{bucket}/in/src.bin" in r.stderr.decode(), r.stderr
