"""roar-proxy against a real SeaweedFS: pass-through, signature checks, events with blake3."""

from __future__ import annotations

import os
import socket

import blake3
import pytest
from botocore.exceptions import ClientError

from .s3util import AK, SK, Proxy, client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # slow: the full tier only (make test)

KEYS = ["a b+c=d.bin", "données/été ☃.bin"]


def b3(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


@pytest.mark.parametrize("key", KEYS)
def test_put_get_through_proxy_records_blake3(proxy, seaweed, bucket, key):
    data = os.urandom(300_000)
    c = client(proxy.url)
    put = c.put_object(Bucket=bucket, Key=key, Body=data)
    got = c.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert got == data
    # The object really is upstream, under the exact key.
    assert client(seaweed).get_object(Bucket=bucket, Key=key)["Body"].read() == data
    evs = proxy.events()
    assert [(e["op"], e["dir"], e["bucket"], e["key"]) for e in evs] == [
        ("put", "out", bucket, key), ("get", "in", bucket, key)]
    for e in evs:
        assert e["blake3"] == b3(data) and e["size"] == len(data)
        assert e["etag"] == put["ETag"].strip('"')


def test_range_get_records_range_without_claiming_a_hash(proxy, bucket):
    data = os.urandom(10_000)
    c = client(proxy.url)
    c.put_object(Bucket=bucket, Key="r.bin", Body=data)
    part = c.get_object(Bucket=bucket, Key="r.bin", Range="bytes=100-199")["Body"].read()
    assert part == data[100:200]
    ev = proxy.events()[-1]
    assert (ev["op"], ev["range"], ev["size"], ev["blake3"]) == ("get", "bytes=100-199", 100, None)


def test_wrong_secret_is_refused_and_nothing_stored(proxy, seaweed, bucket):
    bad = client(proxy.url, secret=SK + "x")
    with pytest.raises(ClientError) as ei:
        bad.put_object(Bucket=bucket, Key="nope.bin", Body=b"x" * 1000)
    assert ei.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    assert ei.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="nope.bin")
    assert proxy.events() == []


def test_unknown_access_key_is_refused(proxy, bucket):
    import boto3

    c = boto3.client("s3", endpoint_url=proxy.url, aws_access_key_id="NOTOURS", aws_secret_access_key=SK,
                     region_name="us-east-1")
    with pytest.raises(ClientError) as ei:
        c.get_object(Bucket=bucket, Key="x")
    assert ei.value.response["Error"]["Code"] == "InvalidAccessKeyId"


def _send_put(url: str, path: str, headers, wire: bytes) -> bytes:
    """Sends a PUT byte for byte (no client library in between) and returns the raw answer."""
    host, port = url.removeprefix("http://").split(":")
    head = f"PUT {path} HTTP/1.1\r\nHost: {host}:{port}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    head += f"Content-Length: {len(wire)}\r\nConnection: close\r\n\r\n"
    with socket.create_connection((host, int(port)), timeout=60) as s:
        s.sendall(head.encode() + wire)
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


def _raw_put(url: str, path: str, body: bytes, wire: bytes | None = None, headers: dict | None = None,
             trailer: bool = False) -> bytes:
    """A PUT signed by botocore for `body`, whose bytes on the wire are `wire` (default: `body`).

    `trailer`: signed as STREAMING-UNSIGNED-PAYLOAD-TRAILER (what boto3 does over https)."""
    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    wire = body if wire is None else wire
    req = AWSRequest(method="PUT", url=url + path, data=body, headers=headers or {})
    if trailer:
        req.context["checksum"] = {"request_algorithm": {"in": "trailer", "algorithm": "crc32"}}
    S3SigV4Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(req)
    return _send_put(url, path, req.headers, wire)


def _aws_chunked(data: bytes, chunk: int = 65536) -> bytes:
    import base64
    import zlib

    out = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (data[i:i + chunk] for i in range(0, len(data), chunk)))
    crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
    return out + f"0\r\nx-amz-checksum-crc32:{crc}\r\n\r\n".encode()


def test_unsigned_trailer_upload_is_forwarded_verbatim_and_hashed(proxy, seaweed, bucket):
    data = os.urandom(200_001)
    hdrs = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32"}
    resp = _raw_put(proxy.url, f"/{bucket}/chunked.bin", b"", _aws_chunked(data), hdrs, trailer=True)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:400]
    assert client(seaweed).get_object(Bucket=bucket, Key="chunked.bin")["Body"].read() == data
    [ev] = proxy.events()
    assert (ev["op"], ev["blake3"], ev["size"]) == ("put", b3(data), len(data))


def test_wrong_trailer_checksum_is_refused_by_the_proxy_and_not_stored(proxy, seaweed, bucket):
    data = os.urandom(150_000)
    wire = _aws_chunked(data)
    good = wire[wire.rindex(b"crc32:") + 6:-4]
    wire = wire.replace(good, b"AAAAAA==")
    hdrs = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32"}
    resp = _raw_put(proxy.url, f"/{bucket}/badcrc.bin", b"", wire, hdrs, trailer=True)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:400]
    assert b"<Code>BadDigest</Code>" in resp  # ours: SeaweedFS would say InvalidDigest
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="badcrc.bin")
    assert proxy.events() == []


def _signed_chunked_put(url: str, path: str, data: bytes, trailer: bool = False, chunk: int = 65536,
                        tamper=None) -> bytes:
    """A PUT with signed aws-chunks (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]), as minio-go sends.

    `tamper(wire) -> wire` alters the framed body after signing."""
    import base64
    import hashlib
    import hmac
    import zlib

    from botocore.auth import S3SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    mode = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" + ("-TRAILER" if trailer else "")

    class Auth(S3SigV4Auth):
        def payload(self, request):
            return mode

    hdrs = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data))}
    if trailer:
        hdrs["X-Amz-Trailer"] = "x-amz-checksum-crc32"
    req = AWSRequest(method="PUT", url=url + path, data=b"", headers=hdrs)
    Auth(Credentials(AK, SK), "s3", "us-east-1").add_auth(req)
    amz_date = req.headers["X-Amz-Date"]
    seed = req.headers["Authorization"].rsplit("Signature=", 1)[1]
    scope = f"{amz_date[:8]}/us-east-1/s3/aws4_request"
    key = ("AWS4" + SK).encode()
    for part in (amz_date[:8], "us-east-1", "s3", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()

    def sign(sts: str) -> str:
        return hmac.new(key, sts.encode(), hashlib.sha256).hexdigest()

    empty = hashlib.sha256(b"").hexdigest()
    prev, wire = seed, b""
    for piece in [data[i:i + chunk] for i in range(0, len(data), chunk)] + [b""]:
        prev = sign(f"AWS4-HMAC-SHA256-PAYLOAD\n{amz_date}\n{scope}\n{prev}\n{empty}\n"
                    f"{hashlib.sha256(piece).hexdigest()}")
        wire += b"%x;chunk-signature=%s\r\n" % (len(piece), prev.encode()) + piece + (b"\r\n" if piece else b"")
    if trailer:
        crc = base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()
        canon = f"x-amz-checksum-crc32:{crc}\n"
        tsig = sign(f"AWS4-HMAC-SHA256-TRAILER\n{amz_date}\n{scope}\n{prev}\n{hashlib.sha256(canon.encode()).hexdigest()}")
        wire += f"x-amz-checksum-crc32:{crc}\r\nx-amz-trailer-signature:{tsig}\r\n\r\n".encode()
    else:
        wire += b"\r\n"
    if tamper:
        wire = tamper(wire)
    return _send_put(url, path, req.headers, wire)


@pytest.mark.parametrize("trailer", [False, True])
def test_signed_aws_chunks_are_verified_decoded_and_stored(proxy, seaweed, bucket, trailer):
    data = os.urandom(200_003)
    resp = _signed_chunked_put(proxy.url, f"/{bucket}/signed.bin", data, trailer=trailer)
    assert resp.startswith(b"HTTP/1.1 200"), resp[:500]
    assert client(seaweed).get_object(Bucket=bucket, Key="signed.bin")["Body"].read() == data  # no signatures inside
    [ev] = proxy.events()
    assert (ev["op"], ev["blake3"], ev["size"]) == ("put", b3(data), len(data))


@pytest.mark.parametrize("trailer", [False, True])
@pytest.mark.parametrize("where", ["middle chunk", "last byte", "final signature"])
def test_tampered_signed_chunk_is_refused_and_not_stored(proxy, seaweed, bucket, trailer, where):
    data = os.urandom(200_003)
    # The last data byte sits just before the final chunk's header (and, with trailers, before "0;").
    at = 70_000 if where == "middle chunk" else None

    def tamper(wire: bytes) -> bytes:
        if where == "final signature":  # every data byte intact: only the chain's last link is forged
            i = wire.rindex(b"\r\n0;chunk-signature=") + len(b"\r\n0;chunk-signature=")
            return wire[:i] + (b"0" if wire[i:i + 1] != b"0" else b"1") + wire[i + 1:]
        i = wire.index(data[at:at + 32]) if at is not None else wire.rindex(b"\r\n0;chunk-signature=") - 1
        return wire[:i] + bytes([wire[i] ^ 1]) + wire[i + 1:]

    resp = _signed_chunked_put(proxy.url, f"/{bucket}/forged.bin", data, trailer=trailer, tamper=tamper)
    assert resp.startswith(b"HTTP/1.1 403"), resp[:500]
    assert b"<Code>SignatureDoesNotMatch</Code>" in resp
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="forged.bin")
    assert proxy.events() == []


def test_broken_aws_chunked_framing_is_refused_and_not_stored(proxy, seaweed, bucket):
    data = os.urandom(100_000)
    wire = _aws_chunked(data).replace(b"\r\n", b"\r\r", 1)  # the first size line loses its LF
    hdrs = {"Content-Encoding": "aws-chunked", "X-Amz-Decoded-Content-Length": str(len(data)),
            "X-Amz-Trailer": "x-amz-checksum-crc32"}
    resp = _raw_put(proxy.url, f"/{bucket}/broken.bin", b"", wire, hdrs, trailer=True)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:400]
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="broken.bin")
    assert proxy.events() == []


@pytest.mark.parametrize("size", [200_000, 3 * 1024 * 1024 + 1])  # hashed inline / on the helper thread
def test_tampered_body_is_refused_and_not_stored(proxy, seaweed, bucket, size):
    body = os.urandom(size)
    tampered = body[:-1] + bytes([body[-1] ^ 1])
    resp = _raw_put(proxy.url, f"/{bucket}/tampered.bin", body, tampered)
    assert resp.startswith(b"HTTP/1.1 400"), resp[:300]
    assert b"<Code>XAmzContentSHA256Mismatch</Code>" in resp
    with pytest.raises(ClientError):
        client(seaweed).head_object(Bucket=bucket, Key="tampered.bin")
    assert proxy.events() == []
    # The same request untampered goes through (the test's request itself is well-formed).
    assert _raw_put(proxy.url, f"/{bucket}/tampered.bin", body).startswith(b"HTTP/1.1 200")
    assert client(seaweed).get_object(Bucket=bucket, Key="tampered.bin")["Body"].read() == body


def test_upstream_down_gives_502_xml(proxy_bin, tmp_path):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    p = Proxy(proxy_bin, f"http://127.0.0.1:{dead}", tmp_path)
    try:
        with pytest.raises(ClientError) as ei:
            client(p.url).get_object(Bucket="b", Key="k")
        r = ei.value.response
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert r["Error"]["Code"] == "BadGateway"
    finally:
        p.stop()


def test_presigned_v4_get_and_put(proxy, seaweed, bucket):
    import urllib.request

    c = client(proxy.url, signature_version="s3v4")
    data = os.urandom(5000)
    url = c.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "pre.bin"}, ExpiresIn=300)
    req = urllib.request.Request(url, data=data, method="PUT")
    assert urllib.request.urlopen(req, timeout=60).status == 200
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": "pre.bin"}, ExpiresIn=300)
    assert urllib.request.urlopen(url, timeout=60).read() == data
    # A tampered presigned URL is refused.
    with pytest.raises(urllib.error.HTTPError) as ei:
        urllib.request.urlopen(url.replace("pre.bin", "pre2.bin"), timeout=60)
    assert ei.value.code == 403
    assert [(e["op"], e["blake3"]) for e in proxy.events()] == [("put", b3(data)), ("get", b3(data))]


def test_presigned_v2_get_and_put_boto3_default(proxy, seaweed, bucket):
    """boto3's default presigned URLs in us-east-1 are SigV2 query auth (AWSAccessKeyId, Expires, Signature)."""
    import urllib.request

    c = client(proxy.url)
    key = "v2 pre+sign=d.bin"
    data = os.urandom(3000)
    url = c.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert "AWSAccessKeyId=" in url and "X-Amz-Signature" not in url  # really V2
    # V2 signs Content-Type (empty here); urllib would otherwise add a form content type.
    req = urllib.request.Request(url, data=data, method="PUT", headers={"Content-Type": ""})
    assert urllib.request.urlopen(req, timeout=60).status == 200
    url = c.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)
    assert urllib.request.urlopen(url, timeout=60).read() == data
    assert client(seaweed).get_object(Bucket=bucket, Key=key)["Body"].read() == data
    for bad in (url.replace("Expires=", "Expires=1"), client(proxy.url, secret=SK + "x").generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=300)):
        with pytest.raises(urllib.error.HTTPError) as ei:
            urllib.request.urlopen(bad, timeout=60)
        assert ei.value.code == 403
    assert [(e["op"], e["key"], e["blake3"]) for e in proxy.events()] == [("put", key, b3(data)), ("get", key, b3(data))]


@pytest.mark.parametrize("part_mib", [5, 8])
def test_multipart_blake3_equals_single_put(proxy, bucket, part_mib):
    from boto3.s3.transfer import TransferConfig

    data = os.urandom(21 * 1024 * 1024)
    c = client(proxy.url)
    import io

    cfg = TransferConfig(multipart_threshold=part_mib * 1024 * 1024, multipart_chunksize=part_mib * 1024 * 1024)
    c.upload_fileobj(io.BytesIO(data), bucket, "big.bin", Config=cfg)
    c.put_object(Bucket=bucket, Key="single.bin", Body=data)
    evs = proxy.events()
    complete = [e for e in evs if e["op"] == "complete"]
    single = [e for e in evs if e["op"] == "put"]
    assert len(complete) == 1 and len(single) == 1, evs
    assert complete[0]["blake3"] == single[0]["blake3"] == b3(data)
    assert complete[0]["size"] == len(data)
    n_parts = -(-21 // part_mib)
    assert complete[0]["etag"].endswith(f"-{n_parts}")
    # From the parts' subtrees, without reading the object back.
    assert "reading the object back" not in proxy.stop()


def test_multipart_with_odd_part_sizes_falls_back_to_reading_back(proxy, bucket):
    from boto3.s3.transfer import TransferConfig
    import io

    data = os.urandom(11 * 1024 * 1024 + 5)
    part = 5 * 1024 * 1024 + 1  # not a whole number of 1 KiB chunks: no subtrees to merge
    c = client(proxy.url)
    c.upload_fileobj(io.BytesIO(data), bucket, "odd.bin",
                     Config=TransferConfig(multipart_threshold=part, multipart_chunksize=part))
    complete = [e for e in proxy.events() if e["op"] == "complete"]
    assert [(e["blake3"], e["size"]) for e in complete] == [(b3(data), len(data))]
    assert complete[0]["etag"].endswith("-3")
    assert "parts do not merge" in proxy.stop()


def test_copy_and_delete(proxy, seaweed, bucket):
    data = os.urandom(4096)
    c = client(proxy.url)
    c.put_object(Bucket=bucket, Key="src.bin", Body=data)
    c.copy_object(Bucket=bucket, Key="dst.bin", CopySource={"Bucket": bucket, "Key": "src.bin"})
    c.delete_object(Bucket=bucket, Key="src.bin")
    evs = [(e["op"], e["dir"], e["key"], e["blake3"]) for e in proxy.events()]
    assert evs == [("put", "out", "src.bin", b3(data)), ("copy", "in", "src.bin", b3(data)),
                   ("copy", "out", "dst.bin", b3(data)), ("delete", "del", "src.bin", None)]
    assert client(seaweed).get_object(Bucket=bucket, Key="dst.bin")["Body"].read() == data


def test_upload_part_copy_records_its_source_as_an_input(proxy, seaweed, bucket):
    c = client(proxy.url)
    whole, ranged = os.urandom(4096), os.urandom(8192)
    c.put_object(Bucket=bucket, Key="whole src.bin", Body=whole)
    src_etag = c.put_object(Bucket=bucket, Key="ranged.bin", Body=ranged)["ETag"]
    for dst, src, rng in [("dst1.bin", "whole src.bin", None), ("dst2.bin", "ranged.bin", "bytes=100-1123")]:
        up = c.create_multipart_upload(Bucket=bucket, Key=dst)["UploadId"]
        kw = {"CopySourceRange": rng} if rng else {}
        part = c.upload_part_copy(Bucket=bucket, Key=dst, UploadId=up, PartNumber=1,
                                  CopySource={"Bucket": bucket, "Key": src}, **kw)
        c.complete_multipart_upload(Bucket=bucket, Key=dst, UploadId=up, MultipartUpload={
            "Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]})
    assert client(seaweed).get_object(Bucket=bucket, Key="dst2.bin")["Body"].read() == ranged[100:1124]
    evs = [(e["op"], e["dir"], e["key"], e["blake3"], e.get("range")) for e in proxy.events() if e["op"] != "put"]
    assert evs == [("copy", "in", "whole src.bin", b3(whole), None),
                   ("complete", "out", "dst1.bin", b3(whole), None),
                   ("copy", "in", "ranged.bin", None, "bytes=100-1123"),
                   ("complete", "out", "dst2.bin", b3(ranged[100:1124]), None)]
    ranged_in = [e for e in proxy.events() if e["op"] == "copy" and e["key"] == "ranged.bin"][0]
    # The source's own ETag and size: the intake maps a known ETag to the object's blake3.
    assert (ranged_in["etag"], ranged_in["size"]) == (src_etag.strip('"'), len(ranged))


def test_delete_objects_records_each_deleted_key(proxy, seaweed, bucket):
    c = client(proxy.url)
    for k in ("keep.bin", "x & y.bin", "z.bin"):
        c.put_object(Bucket=bucket, Key=k, Body=k.encode())
    r = c.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "x & y.bin"}, {"Key": "z.bin"}]})
    assert sorted(d["Key"] for d in r["Deleted"]) == ["x & y.bin", "z.bin"]
    dels = [(e["op"], e["dir"], e["key"]) for e in proxy.events() if e["dir"] == "del"]
    assert sorted(dels) == [("delete", "del", "x & y.bin"), ("delete", "del", "z.bin")]
    assert [o["Key"] for o in client(seaweed).list_objects_v2(Bucket=bucket)["Contents"]] == ["keep.bin"]


def test_listing_and_head_make_no_events(proxy, bucket):
    c = client(proxy.url)
    c.put_object(Bucket=bucket, Key="x/1", Body=b"1")
    c.head_object(Bucket=bucket, Key="x/1")
    assert [o["Key"] for o in c.list_objects_v2(Bucket=bucket)["Contents"]] == ["x/1"]
    assert [e["op"] for e in proxy.events()] == ["put"]


def test_https_upstream_with_a_private_ca(proxy_bin, seaweed, seaweed_https, bucket, tmp_path):
    url, cert = seaweed_https
    p = Proxy(proxy_bin, url, tmp_path, env={"AWS_CA_BUNDLE": str(cert)})
    try:
        c = client(p.url)
        data = os.urandom(1_500_000)
        c.put_object(Bucket=bucket, Key="tls/obj.bin", Body=data)
        assert c.get_object(Bucket=bucket, Key="tls/obj.bin")["Body"].read() == data
        assert client(seaweed).get_object(Bucket=bucket, Key="tls/obj.bin")["Body"].read() == data
        assert [(e["op"], e["blake3"]) for e in p.events()] == [("put", b3(data)), ("get", b3(data))]
    finally:
        p.stop()


def test_https_upstream_with_an_untrusted_certificate_is_502(proxy_bin, seaweed_https, bucket, tmp_path):
    url, _cert = seaweed_https
    p = Proxy(proxy_bin, url, tmp_path)  # the test CA is not trusted without AWS_CA_BUNDLE
    try:
        with pytest.raises(ClientError) as ei:
            client(p.url).get_object(Bucket=bucket, Key="x")
        r = ei.value.response
        assert r["ResponseMetadata"]["HTTPStatusCode"] == 502
        assert "certificate" in r["Error"]["Message"].lower()
    finally:
        p.stop()
