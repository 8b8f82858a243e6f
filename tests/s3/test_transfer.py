"""`roar get` / `roar put`: transfers recorded as jobs through the proxy, end to end against SeaweedFS."""

from __future__ import annotations

import json
import os

import blake3
import pytest
from botocore.exceptions import ClientError

from .s3util import client, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # slow: the full tier only (make test)


def _env(seaweed, **extra):
    e = s3_env()
    e["ROAR_UPSTREAM_S3_ENDPOINT"] = seaweed
    e.update(extra)
    return e


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def test_put_of_a_tracked_output_links_the_object_to_its_producer(proj, proxy_bin, seaweed, bucket):
    env = _env(seaweed)
    (proj.root / "train.py").write_text("open('model.pt', 'wb').write(bytes(range(256)) * 4000)\n")
    proj.roar("run", "python", "train.py", env=env)
    data = (proj.root / "model.pt").read_bytes()
    r = proj.roar("put", "model.pt", f"s3://{bucket}/models/", "-m", "baseline", env=env)
    assert f"model.pt -> s3://{bucket}/models/model.pt" in r.stdout.decode()
    assert client(seaweed).get_object(Bucket=bucket, Key="models/model.pt")["Body"].read() == data
    art = json.loads(proj.roar("show", f"s3://{bucket}/models/model.pt", "--json", env=env).stdout)
    assert art["hash"] == b3(data)
    assert sorted(art["paths"]) == sorted([str(proj.root / "model.pt"), f"s3://{bucket}/models/model.pt"])
    # Produced twice over: by train.py at the local path, by the put job at the S3 URL.
    assert sorted((p["ref"], p["path"]) for p in art["producers"]) == [
        ("@1", str(proj.root / "model.pt")), ("@2", f"s3://{bucket}/models/model.pt")]
    put_job = proj.dag()["jobs"][-1]
    # Only the file: roar's own modules, read by the transfer program, are not data.
    assert [e["path"] for e in put_job["inputs"]] == [str(proj.root / "model.pt")]
    shown = proj.roar("dag", "--show-artifacts", env=env).stdout.decode()
    assert f"s3://{bucket}/models/model.pt" in shown  # not relativised like a local path
    label = json.loads(proj.roar("label", "show", "job", put_job["id"], env=env).stdout)
    assert label == {"message": "baseline"}
    # Again without --force: refused in one line, nothing changed.
    again = proj.roar("put", "model.pt", f"s3://{bucket}/models/", env=env, check=False)
    assert again.returncode != 0 and "exists (use --force to overwrite)" in again.stderr.decode()


def test_put_job_outputs_by_reference(proj, proxy_bin, seaweed, bucket):
    env = _env(seaweed)
    (proj.root / "step.py").write_text("open('a.txt','w').write('A'); open('b.txt','w').write('BB')\n")
    proj.roar("run", "python", "step.py", env=env)
    r = proj.roar("put", "@1", f"s3://{bucket}/run-7/", env=env)
    assert r.returncode == 0
    keys = sorted(o["Key"] for o in client(seaweed).list_objects_v2(Bucket=bucket)["Contents"])
    assert keys == ["run-7/a.txt", "run-7/b.txt"]
    outs = {e["path"]: e["hash"] for e in proj.dag()["jobs"][-1]["outputs"]}
    assert outs == {f"s3://{bucket}/run-7/a.txt": b3(b"A"), f"s3://{bucket}/run-7/b.txt": b3(b"BB")}


def test_get_makes_a_source_job_and_verifies_the_hash(proj, proxy_bin, seaweed, bucket):
    env = _env(seaweed)
    data = os.urandom(2 * 1024 * 1024 + 3)
    client(seaweed).put_object(Bucket=bucket, Key="data/train.csv", Body=data)
    (proj.root / "data").mkdir()
    bad = proj.roar("get", f"s3://{bucket}/data/train.csv", "data/", "--hash", "0" * 16, env=env, check=False)
    assert bad.returncode != 0 and "does not match --hash" in bad.stderr.decode()
    assert os.listdir(proj.root / "data") == []  # no partial file, no temporary left behind
    proj.roar("get", f"s3://{bucket}/data/train.csv", "data/", "--hash", b3(data)[:12], env=env)
    assert (proj.root / "data" / "train.csv").read_bytes() == data
    job = proj.dag()["jobs"][-1]
    assert [(e["path"], e["hash"]) for e in job["inputs"] if e["path"].startswith("s3://")] == [
        (f"s3://{bucket}/data/train.csv", b3(data))]
    assert [(e["path"], e["hash"]) for e in job["outputs"]] == [(str(proj.root / "data" / "train.csv"), b3(data))]


def test_get_a_prefix_downloads_every_object(proj, proxy_bin, seaweed, bucket):
    c = client(seaweed)
    for k in ("p/x.bin", "p/sub/y.bin", "other.bin"):
        c.put_object(Bucket=bucket, Key=k, Body=k.encode())
    proj.roar("get", f"s3://{bucket}/p/", "out/", env=_env(seaweed))
    assert (proj.root / "out" / "x.bin").read_bytes() == b"p/x.bin"
    assert (proj.root / "out" / "sub" / "y.bin").read_bytes() == b"p/sub/y.bin"
    assert not (proj.root / "out" / "other.bin").exists()


def test_unknown_bucket_dry_run_and_missing_proxy_are_one_line(proj, seaweed, bucket, tmp_path):
    env = _env(seaweed)
    (proj.root / "f.txt").write_text("x")
    r = proj.roar("put", "f.txt", "s3://no-such-bucket-roar/", env=env, check=False)
    assert r.returncode != 0 and "s3://no-such-bucket-roar: bucket does not exist" in r.stderr.decode()
    r = proj.roar("put", "f.txt", f"s3://{bucket}/dry/", "--dry-run", env=env)
    assert r.stdout.decode() == f"would copy f.txt -> s3://{bucket}/dry/f.txt\n"
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="dry/f.txt")
    r = proj.roar("put", "f.txt", f"s3://{bucket}/np/", env=_env(seaweed, ROAR_PROXY_BIN=str(tmp_path / "none")),
                  check=False)
    err = r.stderr.decode().strip()
    assert r.returncode != 0 and err.startswith("roar: error: roar-proxy binary not found") and "\n" not in err
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="np/f.txt")


def _transfer_on_a_tty(args, env, cwd):
    """Runs the transfer program with stderr on a pseudo-terminal; returns (rc, stderr text)."""
    import subprocess
    import sys

    master, slave = os.openpty()
    p = subprocess.Popen([sys.executable, "-m", "roar_nb.proxy.transfer", *args], stderr=slave,
                         stdout=subprocess.DEVNULL, env=env, cwd=cwd)
    os.close(slave)
    out = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return p.wait(timeout=300), out.decode(errors="replace")


def test_get_and_put_show_a_progress_bar_on_a_tty_only(seaweed, bucket, tmp_path):
    import subprocess
    import sys

    data = os.urandom(12 * 1024 * 1024)
    (tmp_path / "big.bin").write_bytes(data)
    env = {**s3_env(seaweed), "PYTHONPATH": str(__import__("pathlib").Path(__file__).resolve().parents[2]), "ROAR_PROGRESS_AFTER": "0"}
    rc, err = _transfer_on_a_tty(["put", "big.bin", f"s3://{bucket}/big.bin"], env, tmp_path)
    assert rc == 0, err
    assert "roar: uploading [" in err and "1/1 files" in err and "/12 MiB" in err
    rc, err = _transfer_on_a_tty(["get", f"s3://{bucket}/big.bin", "copy.bin"], env, tmp_path)
    assert rc == 0, err
    assert "roar: downloading [" in err and "/12 MiB" in err
    assert (tmp_path / "copy.bin").read_bytes() == data
    # Not a terminal: no bar at all.
    r = subprocess.run([sys.executable, "-m", "roar_nb.proxy.transfer", "get", f"s3://{bucket}/big.bin", "c2.bin"],
                       env=env, cwd=tmp_path, capture_output=True, timeout=300)
    assert r.returncode == 0 and r.stderr == b"", r.stderr
