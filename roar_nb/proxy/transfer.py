"""The transfer program behind `roar get` and `roar put`.

`roar get` / `roar put` run this module as an ordinary traced job
(`python -m roar_nb.proxy.transfer get|put ...` under `session.run_command` with the
job's S3 proxy), so their lineage comes from the one capture path every script
uses: the preload tracer sees the local files, the proxy sees the S3 objects (with
their blake3). Re-running the job (`roar reproduce`) repeats the transfer.

Owns key/path mapping, `--hash` verification and `--force` checks. Downloads go to
a temporary file beside the destination, renamed into place only when complete and
verified, so a failed or refused download leaves no partial file. Errors are one
line on stderr (`roar: error: ...`) and exit status 1; boto3 is imported here only.
"""

from __future__ import annotations

import os
import sys


class TransferError(Exception):
    """One line for the user."""


def split_s3(url: str) -> tuple[str, str]:
    """('bucket', 'key or prefix') of `s3://bucket/key`."""
    if not url.startswith("s3://"):
        raise TransferError(f"not an S3 URL: {url!r} (expected s3://bucket/key)")
    bucket, _, key = url[5:].partition("/")
    if not bucket:
        raise TransferError(f"no bucket in {url!r}")
    return bucket, key


def put_plan(sources: list[str], dest: str) -> list[tuple[str, str, str]]:
    """(local file, bucket, key) for each file to upload.

    A destination ending in `/` is a prefix: a file lands at prefix + its name, a
    directory's files at prefix + their path inside it. Otherwise the destination is
    the key of the one file being uploaded."""
    bucket, key = split_s3(dest)
    plan = []
    for src in sources:
        if os.path.isdir(src):
            base = os.path.basename(os.path.normpath(src))
            for root, _dirs, files in os.walk(src):
                for name in sorted(files):
                    path = os.path.join(root, name)
                    rel = os.path.relpath(path, src).replace(os.sep, "/")
                    prefix = key if key.endswith("/") or not key else key + "/"
                    plan.append((path, bucket, f"{prefix}{base}/{rel}" if len(sources) > 1 else prefix + rel))
        elif os.path.isfile(src):
            if key.endswith("/") or not key:
                plan.append((src, bucket, key + os.path.basename(src)))
            else:
                plan.append((src, bucket, key))
        else:
            raise TransferError(f"{src}: no such file or directory")
    if not (key.endswith("/") or not key) and len(plan) > 1:
        raise TransferError(f"{dest} names one object but {len(plan)} files were given (end it with / for a prefix)")
    return plan


def _client(endpoint: str | None = None):
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        raise TransferError("roar get/put need boto3 (pip install boto3)") from None
    return boto3.client("s3", endpoint_url=endpoint or None,
                        config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))


def object_blake3(url: str, endpoint: str | None = None) -> str | None:
    """blake3 of the object `url` (s3://bucket/key) as it is now, read straight from `endpoint`
    (the proxy's upstream; not through a proxy: roar checking an object is not lineage);
    None when the object does not exist. Other failures raise TransferError."""
    import blake3

    bucket, key = split_s3(url)
    s3 = _client(endpoint)
    try:
        body = s3.get_object(Bucket=bucket, Key=key)["Body"]
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
            return None
        raise _explain(e, url) from None
    h = blake3.blake3()
    try:
        while chunk := body.read(1 << 20):
            h.update(chunk)
    except Exception as e:
        raise _explain(e, url) from None
    return h.hexdigest()


def _explain(e: Exception, what: str) -> TransferError:
    """A botocore exception as one line."""
    code = getattr(e, "response", {}).get("Error", {}).get("Code") if hasattr(e, "response") else None
    if code in ("NoSuchBucket",):
        return TransferError(f"{what}: bucket does not exist")
    if code in ("NoSuchKey", "404", "NotFound"):
        return TransferError(f"{what}: no such object")
    if code:
        return TransferError(f"{what}: {code}: {e.response['Error'].get('Message') or ''}".rstrip(": "))
    name = type(e).__name__
    if name in ("NoCredentialsError", "PartialCredentialsError"):
        return TransferError("no AWS credentials (set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or ~/.aws/credentials)")
    return TransferError(f"{what}: {e}")


def _exists(s3, bucket: str, key: str) -> bool:
    try:
        s3.head_object(Bucket=bucket, Key=key)
        return True
    except Exception as e:  # botocore.exceptions.ClientError, imported lazily
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return False
        raise _explain(e, f"s3://{bucket}/{key}") from None


def _check_bucket(s3, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception as e:
        if getattr(e, "response", {}).get("Error", {}).get("Code") in ("404", "NoSuchBucket", "NotFound"):
            raise TransferError(f"s3://{bucket}: bucket does not exist") from None
        raise _explain(e, f"s3://{bucket}") from None


def _progress(label: str, total_files: int, total_bytes: int):
    """hashing.py's stderr bar (tty only, shown once a transfer has taken ROAR_PROGRESS_AFTER
    seconds: `roar get`/`put` pass `hash.progress_after`; default 1); boto3 calls `add_bytes`
    from its transfer threads."""
    from roar_nb.hashing import _Progress

    try:
        after = float(os.environ.get("ROAR_PROGRESS_AFTER", "1"))
    except ValueError:
        after = 1.0
    return _Progress(total_files, total_bytes, after, label=label)


def put(sources: list[str], dest: str, force: bool) -> int:
    plan = put_plan(sources, dest)
    s3 = _client()
    for bucket in sorted({b for _, b, _ in plan}):
        _check_bucket(s3, bucket)
    for path, bucket, key in plan:
        if not force and _exists(s3, bucket, key):
            raise TransferError(f"s3://{bucket}/{key} exists (use --force to overwrite)")
    progress = _progress("uploading", len(plan), sum(os.path.getsize(p) for p, _, _ in plan))
    try:
        for path, bucket, key in plan:
            try:
                s3.upload_file(path, bucket, key, Callback=progress.add_bytes)
            except Exception as e:
                raise _explain(e, f"s3://{bucket}/{key}") from None
            progress.file_done()
            progress.close()  # the line below replaces the bar; it comes back on the next redraw
            print(f"{path} -> s3://{bucket}/{key}")
    finally:
        progress.close()
    return 0


def get_plan(s3, src: str, dest: str) -> list[tuple[str, str, str]]:
    """(bucket, key, local path) for each object to download (a prefix: every object under it)."""
    bucket, key = split_s3(src)
    if key and not key.endswith("/"):
        to_dir = dest.endswith("/") or os.path.isdir(dest)
        return [(bucket, key, os.path.join(dest, os.path.basename(key)) if to_dir else dest)]
    plan = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=key):
            for obj in page.get("Contents", []):
                if not obj["Key"].endswith("/"):
                    plan.append((bucket, obj["Key"], os.path.join(dest, obj["Key"][len(key):])))
    except Exception as e:
        raise _explain(e, src) from None
    if not plan:
        raise TransferError(f"{src}: no objects under this prefix")
    return plan


def get(src: str, dest: str, force: bool, want_hash: str | None) -> int:
    s3 = _client()
    _check_bucket(s3, split_s3(src)[0])
    plan = get_plan(s3, src, dest)
    if want_hash and len(plan) != 1:
        raise TransferError("--hash checks one object; the source is a prefix")
    for _bucket, _key, path in plan:
        if os.path.exists(path) and not force:
            raise TransferError(f"{path} exists (use --force to overwrite)")
    progress = _progress("downloading", len(plan), _sizes(s3, plan) if sys.stderr.isatty() else 0)
    try:
        for bucket, key, path in plan:
            _get_one(s3, bucket, key, path, want_hash, progress)
            progress.close()  # the line below replaces the bar; it comes back on the next redraw
            print(f"s3://{bucket}/{key} -> {path}")
    finally:
        progress.close()
    return 0


def _sizes(s3, plan) -> int:
    """Total bytes to download (for the bar; 0 when unknown: the bar then counts files)."""
    total = 0
    for bucket, key, _ in plan:
        try:
            total += s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        except Exception:
            return 0
    return total


def _get_one(s3, bucket: str, key: str, path: str, want_hash: str | None, progress) -> None:
    """Downloads one object to `path` through a temporary file (none left behind on failure)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.roar-part")
    try:
        try:
            s3.download_file(bucket, key, tmp, Callback=progress.add_bytes)
        except Exception as e:
            raise _explain(e, f"s3://{bucket}/{key}") from None
        if want_hash:
            import blake3

            h = blake3.blake3()
            with open(tmp, "rb") as f:
                while chunk := f.read(1 << 20):
                    h.update(chunk)
            got = h.hexdigest()
            if not got.startswith(want_hash.lower()):
                raise TransferError(f"s3://{bucket}/{key}: blake3 {got[:16]} does not match --hash {want_hash}")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    progress.file_done()


def main(argv: list[str]) -> int:
    force = "--force" in argv
    argv = [a for a in argv if a != "--force"]
    want_hash = None
    if "--hash" in argv:
        i = argv.index("--hash")
        if i + 1 >= len(argv):
            raise TransferError("--hash needs a value")
        want_hash = argv[i + 1]
        del argv[i:i + 2]
    if len(argv) < 3 or argv[0] not in ("get", "put"):
        raise TransferError("usage: transfer get S3_URL DEST [--hash H] [--force] | put SRC... S3_URL [--force]")
    if argv[0] == "put":
        return put(argv[1:-1], argv[-1], force)
    if len(argv) != 3:
        raise TransferError("get takes one source and one destination")
    return get(argv[1], argv[2], force, want_hash)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except TransferError as e:
        print(f"roar: error: {e}", file=sys.stderr)
        sys.exit(1)
