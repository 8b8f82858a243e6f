"""Other real S3 clients through roar-proxy: pyarrow's S3FileSystem (aws-chunked uploads with
STREAMING-UNSIGNED-PAYLOAD-TRAILER and crc64nvme trailers, always multipart) and the AWS CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import blake3
import pytest

from .s3util import AK, SK, client, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # slow: the full tier only (make test)


def test_pyarrow_s3filesystem_write_and_read(proxy, seaweed, bucket):
    from pyarrow import fs

    s3 = fs.S3FileSystem(access_key=AK, secret_key=SK, region="us-east-1", scheme="http",
                         endpoint_override=proxy.url.removeprefix("http://"))
    data = os.urandom(3 * 1024 * 1024 + 5)
    with s3.open_output_stream(f"{bucket}/arrow/part.bin") as f:
        f.write(data)
    with s3.open_input_stream(f"{bucket}/arrow/part.bin") as f:
        assert f.read() == data
    assert client(seaweed).get_object(Bucket=bucket, Key="arrow/part.bin")["Body"].read() == data
    outs = [e for e in proxy.events() if e["dir"] == "out"]
    assert [(e["op"], e["key"], e["blake3"], e["size"]) for e in outs] == [
        ("complete", "arrow/part.bin", blake3.blake3(data).hexdigest(), len(data))]
    ins = [e for e in proxy.events() if e["dir"] == "in"]
    assert ins and all(e["key"] == "arrow/part.bin" for e in ins)


def test_awscli_cp_up_and_down(proxy, bucket, tmp_path):
    aws = [sys.executable, "-m", "awscli"]
    src = tmp_path / "up.bin"
    data = os.urandom(9 * 1024 * 1024)  # above awscli's 8 MiB multipart threshold
    src.write_bytes(data)
    env = s3_env(proxy.url)
    subprocess.run([*aws, "s3", "cp", str(src), f"s3://{bucket}/cli/up.bin"], env=env, check=True,
                   capture_output=True)
    subprocess.run([*aws, "s3", "cp", f"s3://{bucket}/cli/up.bin", str(tmp_path / "down.bin")], env=env,
                   check=True, capture_output=True)
    assert (tmp_path / "down.bin").read_bytes() == data
    b3 = blake3.blake3(data).hexdigest()
    evs = [(e["dir"], e["key"], e["blake3"]) for e in proxy.events()]
    assert ("out", "cli/up.bin", b3) in evs
    # awscli may download in ranged parts; then each is a partial read without a hash.
    assert any(d == "in" and k == "cli/up.bin" for d, k, _ in evs)


def test_existing_virtual_host_client_is_rerouted_path_style():
    """route_existing_clients turns an AWS virtual-host request into a path-style one to the proxy."""
    import boto3
    from botocore.awsrequest import AWSResponse

    from roar_nb import proxy as proxy_mod

    c = boto3.client("s3", region_name="eu-west-1", aws_access_key_id=AK, aws_secret_access_key=SK)
    sent = []

    class Empty:
        def stream(self, **kwargs):
            yield b""

    def capture(request, **kwargs):  # answers instead of the network
        sent.append(request.url)
        return AWSResponse(request.url, 200, {}, Empty())

    c.meta.events.register("before-send.s3", capture)
    undo = proxy_mod.route_existing_clients("http://127.0.0.1:9")
    try:
        c.put_object(Bucket="my-bucket", Key="a b.bin", Body=b"x")
    finally:
        undo()
    c.put_object(Bucket="my-bucket", Key="after.bin", Body=b"x")
    assert sent[0] == "http://127.0.0.1:9/my-bucket/a%20b.bin"
    assert sent[1].startswith("https://my-bucket.s3.")  # undone: the client is as it was
