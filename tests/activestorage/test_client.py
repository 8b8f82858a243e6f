"""roar_nb.activestorage.reduce against the real listener; lineage of reductions made by a
`roar run` command and by traced notebook cells (the proxy's events become job inputs)."""

from __future__ import annotations

import sys
import textwrap

import blake3
import numpy as np
import pytest

from roar_nb import activestorage, errors
from tests.s3.s3util import AK, Proxy, s3_env

from .asutil import reference
from .conftest import CREDS, DATA, PUBLIC

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]  # SeaweedFS: the full tier only (make test)

ARR = (np.arange(120, dtype="float64") - 30).reshape(4, 5, 6)


@pytest.fixture(scope="module")
def cube(s3c):
    s3c.put_object(Bucket=DATA, Key="client/cube.bin", Body=ARR.tobytes())
    return f"s3://{DATA}/client/cube.bin"


def test_reduce_returns_numpy_and_counts(active, s3, cube):
    kw = dict(server=active.active_url, source=s3, auth=CREDS, dtype="float64", shape=[4, 5, 6])
    r = activestorage.reduce(cube, "sum", **kw)
    assert r.array.shape == () and r.array == ARR.sum() and r.counts.tolist() == [120]
    arr, counts = activestorage.reduce(cube, "max", axis=[0, 2], missing={"valid_max": 50},
                                       selection=[slice(None), slice(None, None, -1), [0, 6, 2]], **kw)
    want, wc = reference("max", ARR.tobytes(), "float64", shape=[4, 5, 6], axis=[0, 2],
                         missing={"valid_max": 50}, selection=[(0, 4, 1), (4, -6, -1), (0, 6, 2)])
    np.testing.assert_array_equal(arr, want)
    assert counts.tolist() == wc and counts.shape == arr.shape
    sel = activestorage.reduce(cube, "select", order="F", selection=[slice(1, 3), slice(-1, 0, -2), slice(0, 6, 5)],
                               **kw)
    f_view = np.frombuffer(ARR.tobytes(), "float64").reshape((4, 5, 6), order="F")
    np.testing.assert_array_equal(sel.array, f_view[1:3, -1:0:-2, 0:6:5])


def test_errors_are_one_type_each(active, s3, cube, as_proxy_bin, s3c, tmp_path):
    kw = dict(server=active.active_url, source=s3, auth=CREDS)
    cases = [
        (errors.InvalidReduction, dict(dtype="float64", shape=[4, 5, 7])),
        (errors.InvalidReduction, dict(dtype="float64", axis=3, shape=[4, 5, 6])),
        (errors.InvalidReduction, dict(dtype="float16")),
    ]
    for exc, extra in cases:
        with pytest.raises(exc) as ei:
            activestorage.reduce(cube, "sum", **kw, **extra)
        assert "\n" not in str(ei.value)
    with pytest.raises(errors.InvalidReduction) as ei:  # a name with an escape sequence cannot act
        activestorage.reduce(cube, "sum", dtype="float64", missing={"\x1b[2Jx": 1}, **kw)
    assert "\x1b" not in str(ei.value) and "\\x1b[2Jx" in str(ei.value)
    with pytest.raises(errors.ObjectNotFound, match="NoSuchKey"):
        activestorage.reduce(f"s3://{DATA}/client/none.bin", "sum", dtype="int32", **kw)
    with pytest.raises(errors.AccessDenied, match="Access Denied"):
        activestorage.reduce(cube, "sum", dtype="float64", server=active.active_url, source=s3, auth=(AK, "bad"))
    with pytest.raises(errors.AccessDenied):
        activestorage.reduce(cube, "sum", dtype="float64", server=active.active_url, source=s3, auth=False)
    with pytest.raises(errors.UnknownOperation):  # refused by the server, not only by the client
        activestorage.post(active.active_url, "median", activestorage.request_body(cube, "sum", dtype="int32",
                                                                                   source=s3), CREDS)
    with pytest.raises(errors.UpstreamError):
        activestorage.reduce(cube, "sum", dtype="float64", server=active.active_url, source="http://127.0.0.1:9",
                             auth=CREDS)
    with pytest.raises(errors.ServerUnavailable):
        activestorage.reduce(cube, "sum", dtype="float64", server="http://127.0.0.1:9", source=s3, auth=CREDS)
    ev = tmp_path / "ev"
    ev.mkdir()
    small = Proxy(as_proxy_bin, s3, ev, args=("--active-storage-port", "0", "--active-storage-memory-mib", "1"))
    try:
        s3c.put_object(Bucket=DATA, Key="client/big.bin", Body=bytes(2 << 20))
        with pytest.raises(errors.OverBudget, match="memory budget"):
            activestorage.reduce(f"s3://{DATA}/client/big.bin", "sum", dtype="int64", shape=[512, 512], axis=0,
                                 server=small.active_url, source=s3, auth=CREDS)
    finally:
        small.stop()
    for e in (errors.InvalidReduction, errors.AccessDenied, errors.OverBudget, errors.ServerBusy,
              errors.UpstreamError, errors.ServerUnavailable, errors.UnknownOperation):
        assert issubclass(e, errors.ActiveStorageError) and issubclass(e, errors.RoarError)


def test_anonymous_public_bucket_and_defaults_from_the_environment(active, s3, s3c, monkeypatch):
    s3c.put_object(Bucket=PUBLIC, Key="client/pub.bin", Body=ARR.tobytes())
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("ROAR_ACTIVE_STORAGE_URL", active.active_url)
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    r = activestorage.reduce(f"s3://{PUBLIC}/client/pub.bin", "min", dtype="float64")
    assert r.array == ARR.min()


SCRIPT = textwrap.dedent("""
    import sys
    from roar_nb.activestorage import reduce
    whole = reduce(f"s3://{sys.argv[1]}/run/whole.bin", "sum", dtype="int32")
    part = reduce(f"s3://{sys.argv[1]}/run/part.bin", "max", dtype="int32", offset=8, size=16, shape=[2, 2])
    print(int(whole.array), int(part.array))
""")


def test_roar_run_records_the_reduced_objects_as_inputs(proj, active, s3, s3c):
    data = np.arange(1000, dtype="int32")
    s3c.put_object(Bucket=DATA, Key="run/whole.bin", Body=data.tobytes())
    s3c.put_object(Bucket=DATA, Key="run/part.bin", Body=data.tobytes())
    (proj.root / "reduce.py").write_text(SCRIPT)
    proj.roar("proxy", "enable")
    env = s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = s3
    r = proj.roar("run", sys.executable, "reduce.py", DATA, env=env)
    assert r.stdout.decode().split() == [str(data.sum()), "5"], r.stderr
    job = proj.dag()["jobs"][-1]
    ins = {e["path"]: e for e in job["inputs"] if e["path"].startswith("s3://")}
    assert set(ins) == {f"s3://{DATA}/run/whole.bin", f"s3://{DATA}/run/part.bin"}
    assert ins[f"s3://{DATA}/run/whole.bin"]["hash"] == blake3.blake3(data.tobytes()).hexdigest()
    assert job["capture_level"] == "complete", job["capture_notes"]
    part = ins[f"s3://{DATA}/run/part.bin"]
    assert part["hash"] is None and "bytes=8-23" in str(part), part  # a range: the object's blake3 is unknown


def test_reductions_in_traced_cells_are_their_inputs(jupyter_kernels, active, s3, s3c, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    s3c.put_object(Bucket=DATA, Key="nb/a.bin", Body=ARR.tobytes())
    s3c.put_object(Bucket=DATA, Key="nb/b.bin", Body=(ARR * 2).tobytes())
    cells = [
        "%load_ext roar",
        "%roar proxy on",
        "%roar on",
        f"%roar reduce sum s3://{DATA}/nb/a.bin --dtype float64 --shape 4,30 --axis 1",
        f"from roar_nb.activestorage import reduce\nr = reduce('s3://{DATA}/nb/b.bin', 'max', dtype='float64',"
        " offset=80, size=160)\nprint(float(r.array), r.counts.tolist())",
        "x = 1",
        "%roar off",
        "%roar proxy off",
    ]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    env = s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = s3
    NotebookClient(nb, kernel_name="roar", timeout=120, resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    out3 = nb.cells[3].outputs[0]["data"]["text/plain"]
    assert "Reduction(array=array([" in out3 and "counts=array([30, 30, 30, 30])" in out3, out3
    assert "".join(o.get("text", "") for o in nb.cells[4].outputs).split()[:2] == ["-2.0", "[20]"]

    from roar_nb import dag
    from roar_nb.session import Project

    st = Project(tmp_path).store
    (sess,) = [s.session for s in st.sessions() if s.session.kind == "notebook"]
    jobs = dag.build(st.jobs(sess.id), session_id=sess.id).to_json()["jobs"]
    s3_ins = [[(e["path"], e["hash"]) for e in j["inputs"] if e["path"].startswith("s3://")] for j in jobs]
    assert s3_ins == [[(f"s3://{DATA}/nb/a.bin", blake3.blake3(ARR.tobytes()).hexdigest())],
                      [(f"s3://{DATA}/nb/b.bin", None)], []]


def test_proxy_daemon_with_active_storage(proj, active, s3, s3c):
    """`roar proxy start --active-storage-port N`: the listener is on that port; status says so;
    without the option it is off."""
    import socket

    from .asutil import decode, get, post

    ports, env = free_ports(2), s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = s3
    out = proj.roar("proxy", "start", "--port", ports[0], "--active-storage-port", ports[1], env=env).stdout.decode()
    try:
        url = f"http://127.0.0.1:{ports[1]}"
        assert f"active storage on {url}" in out
        assert f"active    {url}" in proj.roar("proxy", "status", env=env).stdout.decode()
        s3c.put_object(Bucket=DATA, Key="daemon/x.bin", Body=ARR.tobytes())
        # The source may be the proxy's own S3 port: the listener reads from its upstream.
        st, h, body = post(url, "/v1/sum", {"source": f"http://127.0.0.1:{ports[0]}", "bucket": DATA,
                                             "object": "daemon/x.bin", "dtype": "float64"}, auth=CREDS)
        assert st == 200 and decode(h, body)[0] == ARR.sum()
        assert get(url, "/.well-known/reductionist-schema")[0] == 200
    finally:
        proj.roar("proxy", "stop", env=env)
    proj.roar("proxy", "start", "--port", ports[0], env=env)
    try:
        assert "active " not in proj.roar("proxy", "status", env=env).stdout.decode()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", ports[1]), timeout=5).close()
    finally:
        proj.roar("proxy", "stop", env=env)


def free_ports(n: int) -> list[int]:
    """`n` ports free on 127.0.0.1 now (for `roar proxy start --port P --active-storage-port Q`)."""
    import socket

    ports = []
    for _ in range(n):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            ports.append(s.getsockname()[1])
    return ports


def test_request_building_without_a_server():
    from roar_nb.magics import _reduce_args

    body = activestorage.request_body("s3://b/dir/a b=c.bin", "sum", dtype="int32", shape=(5, 4),
                                      selection=[slice(None, None, -1), slice(1, None, 2)], axis=(1,),
                                      compression="gzip", source="http://h:1/")
    assert body == {"source": "http://h:1", "bucket": "b", "object": "dir/a b=c.bin", "dtype": "int32",
                    "shape": [5, 4], "axis": [1], "selection": [[4, -6, -1], [1, 4, 2]], "compression": {"id": "gzip"}}
    assert list(range(5))[4:-6:-1] == [4, 3, 2, 1, 0]
    for bad in ("b/k", "s3://b", "s3://b/"):
        with pytest.raises(errors.InvalidReduction):
            activestorage.request_body(bad, "sum", dtype="int32")
    with pytest.raises(errors.UnknownOperation):
        activestorage.request_body("s3://b/k", "median", dtype="int32")
    op, url, kw = _reduce_args(["sum", "s3://b/k", "--dtype", "float32", "--shape", "10,20", "--axis", "0",
                                "--selection", "0:10:2,::-1", "--missing", '{"valid_min": 0}', "--order=F"])
    assert (op, url) == ("sum", "s3://b/k")
    assert kw == {"dtype": "float32", "shape": [10, 20], "axis": [0], "missing": {"valid_min": 0}, "order": "F",
                  "selection": [slice(0, 10, 2), slice(None, None, -1)]}
    assert _reduce_args(["sum", "s3://b/k"]) is None and _reduce_args(["sum", "s3://b/k", "--colour", "x"]) is None


def test_a_reduction_through_the_daemon_in_a_traced_job_is_said(proj, active, s3, s3c):
    """With the job proxy off, a `roar run` script's reductions go to the `roar proxy start`
    daemon, which records nothing for the job: the job is partial and says which input it
    lacks, instead of a silent `complete` without it."""

    data = np.arange(1000, dtype="int32")
    s3c.put_object(Bucket=DATA, Key="run/whole.bin", Body=data.tobytes())
    s3c.put_object(Bucket=DATA, Key="run/part.bin", Body=data.tobytes())
    (proj.root / "reduce.py").write_text(SCRIPT)
    proj.roar("proxy", "disable")
    ports, env = free_ports(2), s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = s3
    proj.roar("proxy", "start", "--port", ports[0], "--active-storage-port", ports[1], env=env)
    try:
        r = proj.roar("run", sys.executable, "reduce.py", DATA, env=env)
    finally:
        proj.roar("proxy", "stop", env=env)
    assert r.stdout.decode().split() == [str(data.sum()), "5"], r.stderr  # the script is unchanged
    job = proj.dag()["jobs"][-1]
    assert not [e for e in job["inputs"] if e["path"].startswith("s3://")]
    assert job["capture_level"] == "partial", job["capture_notes"]
    said = "\n".join(job["capture_notes"])
    assert f"s3://{DATA}/run/whole.bin went through the `roar proxy start` daemon" in said, said
    assert f"s3://{DATA}/run/part.bin" in said, said


def test_a_traced_cell_reducing_through_the_daemon_is_partial(jupyter_kernels, active, s3, s3c, tmp_path):
    """Without `%roar proxy on`, a traced cell's reduction goes to the daemon: the cell is partial
    and names the object; an untraced cell's reduction says nothing (nothing is being recorded)."""

    import nbformat
    from nbclient import NotebookClient

    from roar_nb.session import Project

    s3c.put_object(Bucket=DATA, Key="nbd/a.bin", Body=ARR.tobytes())
    Project.init(tmp_path)
    ports, env = free_ports(2), s3_env()
    env["ROAR_UPSTREAM_S3_ENDPOINT"] = s3
    from conftest import Proj

    Proj(tmp_path).roar("proxy", "start", "--port", ports[0], "--active-storage-port", ports[1], env=env)
    cells = ["%load_ext roar", "%roar on",
             f"%roar reduce sum s3://{DATA}/nbd/a.bin --dtype float64", "%roar off",
             f"%roar reduce max s3://{DATA}/nbd/a.bin --dtype float64"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    try:
        NotebookClient(nb, kernel_name="roar", timeout=120,
                       resources={"metadata": {"path": str(tmp_path)}}).execute(env=env)
    finally:
        Proj(tmp_path).roar("proxy", "stop", env=env)
    assert "Reduction(array=array(" in nb.cells[2].outputs[0]["data"]["text/plain"]
    (job,) = Project(tmp_path).store.jobs()
    assert job.capture_level == "partial", job.capture_notes
    assert any(f"s3://{DATA}/nbd/a.bin went through the `roar proxy start` daemon" in n for n in job.capture_notes)
    assert not [e for e in job.inputs if e.path.startswith("s3://")]
