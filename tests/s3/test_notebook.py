"""`%roar proxy on` in a real roar kernel: each traced cell's S3 requests become that cell's edges."""

from __future__ import annotations

import os

import blake3
import nbformat
import pytest
from nbclient import NotebookClient

from .s3util import client, s3_env

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # slow: the full tier only (make test)


def test_cells_s3_requests_are_attributed_to_the_cell_that_made_them(jupyter_kernels, proxy_bin, seaweed, bucket,
                                                                     tmp_path):
    data = os.urandom(100_000)
    client(seaweed).put_object(Bucket=bucket, Key="raw.bin", Body=data)
    cells = [
        "%load_ext roar",
        # A client made before the proxy is switched on, pointed straight at the S3 server.
        f"import boto3\nearly = boto3.client('s3', endpoint_url='{seaweed}')",
        "%roar proxy on",
        "%roar on",
        f"s3 = boto3.client('s3')\nraw = s3.get_object(Bucket='{bucket}', Key='raw.bin')['Body'].read()",
        "x = 1  # no S3 here",
        f"s3.put_object(Bucket='{bucket}', Key='clean.bin', Body=raw[::-1])",
        f"early.put_object(Bucket='{bucket}', Key='early.bin', Body=b'early')",
        "%roar off",
        f"s3.put_object(Bucket='{bucket}', Key='untraced.bin', Body=b'u')",
        "%roar proxy off",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env = s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = seaweed
    NotebookClient(nb, kernel_name="roar", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    outs = ["".join(o.get("text", "") for o in c.outputs) for c in nb.cells]
    assert outs[2].startswith("roar: S3 proxy on (http://127.0.0.1:"), outs[2]
    assert outs[10].strip() == "roar: S3 proxy off"

    from roar_nb import dag
    from roar_nb.session import Project

    st = Project(tmp_path).store
    (sess,) = [s.session for s in st.sessions() if s.session.kind == "notebook"]
    jobs = dag.build(st.jobs(sess.id), session_id=sess.id).to_json()["jobs"]
    b3 = lambda d: blake3.blake3(d).hexdigest()  # noqa: E731
    s3_io = [([(e["path"], e["hash"]) for e in j["inputs"] if e["path"].startswith("s3://")],
              [(e["path"], e["hash"]) for e in j["outputs"] if e["path"].startswith("s3://")]) for j in jobs]
    assert s3_io == [
        ([(f"s3://{bucket}/raw.bin", b3(data))], []),
        ([], []),
        ([], [(f"s3://{bucket}/clean.bin", b3(data[::-1]))]),
        ([], [(f"s3://{bucket}/early.bin", b3(b"early"))]),
    ]
    assert client(seaweed).get_object(Bucket=bucket, Key="untraced.bin")["Body"].read() == b"u"
