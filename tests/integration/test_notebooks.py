"""Notebooks under roar, executed through real Jupyter kernels (nbclient).

Two kernelspecs are installed into a temporary JUPYTER_PATH: "roar" (ipykernel
with the preload library dormant: native capture) and a plain "python3"
(python-level capture through the audit hook). The preload library must exist;
if it does not, it is built with cargo; if that fails, the tests fail.

The test client sends each cell's id in the execute_request metadata
(`cellId`), as JupyterLab and Notebook 7 do, so step identity is the cell id.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[2]
ANSI = re.compile(r"\x1b\[[0-9;]*m")


# --- fixtures -----------------------------------------------------------------------------

@pytest.fixture(scope="session")
def kernels(jupyter_kernels):
    """The shared kernelspecs (tests/conftest.py): roar (preload dormant) and plain python3."""
    return {"prefix": jupyter_kernels}


# --- helpers ------------------------------------------------------------------------------

def make_nb(cells) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    for cid, src in cells:
        c = nbformat.v4.new_code_cell(src)
        c.id = cid
        nb.cells.append(c)
    return nb


def run(nb, cwd: Path, kernel: str, order=None, env=None) -> dict:
    """Execute cells (by id, in `order`, repeats allowed) in one real kernel.

    Returns {cell id: outputs of its last execution}."""
    client = NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    by_id = {c.id: (i, c) for i, c in enumerate(nb.cells)}
    outputs = {}
    kenv = dict(os.environ)
    kenv.update(env or {})
    with client.setup_kernel(env=kenv):
        kc = client.kc
        current = {}

        def execute(code, silent=False, store_history=True, user_expressions=None,
                    allow_stdin=None, stop_on_error=True):
            # What JupyterLab sends: the cell id in the request metadata.
            content = dict(code=code, silent=silent, store_history=store_history,
                           user_expressions=user_expressions or {}, allow_stdin=False,
                           stop_on_error=stop_on_error)
            msg = kc.session.msg("execute_request", content, metadata={"cellId": current["id"]})
            kc.shell_channel.send(msg)
            return msg["header"]["msg_id"]

        kc.execute = execute
        for cid in order or [c.id for c in nb.cells]:
            i, cell = by_id[cid]
            current["id"] = cid
            client.execute_cell(cell, i)
            outputs[cid] = list(cell.outputs)
    return outputs


def text(outputs) -> str:
    parts = []
    for o in outputs:
        if o.get("output_type") == "stream":
            parts.append(o["text"])
        elif o.get("output_type") == "error":
            parts.append(ANSI.sub("", "\n".join(o["traceback"])))
        elif "data" in o and "text/plain" in o["data"]:
            parts.append(o["data"]["text/plain"])
    return "".join(parts)


def store(cwd: Path):
    from roar_nb.session import Project

    return Project(cwd).store


def notebook_sessions(cwd: Path) -> list:
    return [s.session for s in store(cwd).sessions() if s.session.kind == "notebook"]


def dag_json(cwd: Path, session_id: str | None = None, expanded: bool = False) -> dict:
    from roar_nb import dag

    st = store(cwd)
    if session_id is None:
        (s,) = notebook_sessions(cwd)
        session_id = s.id
    return dag.build(st.jobs(session_id), expanded=expanded, session_id=session_id).to_json()


def cell_edges(d: dict) -> set:
    """{(upstream cell id, downstream cell id)} of a DAG's JSON."""
    cell = {j["id"]: j["cell_id"] for j in d["jobs"]}
    return {(cell[dep], j["cell_id"]) for j in d["jobs"] for dep in j["depends_on"]}


def by_cell(d: dict) -> dict:
    return {j["cell_id"]: j for j in d["jobs"]}


def names(edges) -> set:
    return {os.path.basename(e["path"]) for e in edges}


# --- the example notebooks ----------------------------------------------------------------

@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_pipeline_notebook_dag_edges(kernels, tmp_path, kernel):
    nb = nbformat.read(ROOT / "notebooks" / "pipeline.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    out = run(nb, tmp_path, kernel)
    assert json.loads((tmp_path / "metrics.json").read_text())["accuracy"] > 0.8
    assert "roar: created" in text(out["setup"])
    assert re.search(r"^roar @1: 0 in, 1 out \(iris\.csv [0-9a-f]{8}\), \d", text(out["make-data"]), re.M)
    assert any("image/svg+xml" in o.get("data", {}) for o in out["dag"])

    d = dag_json(tmp_path)
    jobs = by_cell(d)
    # Only the cells after %roar on are jobs; roar's own cells never are.
    assert set(jobs) == {"make-data", "features", "train", "evaluate"}
    if kernel == "roar":
        assert cell_edges(d) == {("make-data", "features"), ("features", "train"), ("train", "evaluate")}
        assert names(jobs["features"]["outputs"]) == {"features.parquet"}
        assert names(jobs["train"]["inputs"]) == {"features.parquet"}
        assert names(jobs["train"]["outputs"]) == {"model.joblib", "test.parquet"}
        assert names(jobs["evaluate"]["inputs"]) == {"model.joblib", "test.parquet"}
        for j in d["jobs"]:
            assert (j["backend"], j["capture_level"]) == ("preload", "complete")
            assert j["step"] == j["cell_id"] and j["kind"] == "cell"
    else:
        # pyarrow writes parquet from C++: the audit hook cannot see it, and says so.
        assert "features.parquet" not in names(jobs["features"]["outputs"])
        assert ("make-data", "features") in cell_edges(d)
        for j in d["jobs"]:
            assert (j["backend"], j["capture_level"]) == ("audit", "python-only")
            assert any("C extensions" in n for n in j["capture_notes"])
    assert jobs["evaluate"]["outputs"][0]["path"] == str(tmp_path / "metrics.json")


@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_shell_notebook_subprocesses_are_traced(kernels, tmp_path, kernel):
    nb = nbformat.read(ROOT / "notebooks" / "shell.ipynb", as_version=4)
    nb.cells = [c for c in nb.cells if c.cell_type == "code"]
    run(nb, tmp_path, kernel)
    d = dag_json(tmp_path)
    assert cell_edges(d) == {("words", "sort"), ("sort", "gzip")}
    jobs = by_cell(d)
    assert names(jobs["sort"]["inputs"]) == {"words.txt"}
    assert names(jobs["sort"]["outputs"]) == {"sorted.txt"}
    assert names(jobs["gzip"]["outputs"]) == {"sorted.txt.gz"}


def test_jupyter_execute_headless_demo(kernels, tmp_path):
    """The Makefile demo: `jupyter execute --kernel_name=roar` on a scratch copy."""
    shutil.copy(ROOT / "notebooks" / "pipeline.ipynb", tmp_path)
    r = subprocess.run([str(Path(sys.executable).parent / "jupyter"), "execute", "--kernel_name=roar",
                        "pipeline.ipynb"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    jobs = store(tmp_path).jobs()
    assert [j.execution_count for j in jobs] == [4, 5, 6, 7]
    assert all(j.capture_level == "complete" for j in jobs)
    assert {os.path.basename(e.path) for j in jobs for e in j.outputs} == {
        "iris.csv", "features.parquet", "model.joblib", "test.parquet", "metrics.json"}


# --- capture ------------------------------------------------------------------------------

PARQUET = ("import pyarrow as pa, pyarrow.parquet as pq\n"
           "pq.write_table(pa.table({'x': [1, 2, 3]}), 'direct.parquet')")


@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_pyarrow_parquet_write(kernels, tmp_path, kernel):
    nb = make_nb([("load", "%load_ext roar"), ("pq", "%%roar\n" + PARQUET)])
    out = run(nb, tmp_path, kernel)
    (job,) = dag_json(tmp_path)["jobs"]
    summary = text(out["pq"])
    if kernel == "roar":
        assert names(job["outputs"]) == {"direct.parquet"}
        assert job["capture_level"] == "complete" and job["backend"] == "preload"
        assert "python-level" not in text(out["load"])
    else:
        assert "direct.parquet" not in names(job["outputs"])
        assert job["capture_level"] == "python-only" and job["backend"] == "audit"
        assert any("pyarrow" in n for n in job["capture_notes"])
        # %load_ext told the user once how to get native capture.
        assert "roar kernel install" in text(out["load"])
        assert "roar kernel install" not in summary
    assert summary.startswith("roar @1: ")


@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_failing_cell_recorded_and_traceback_untouched(kernels, tmp_path, kernel):
    body = "open('before.txt', 'w').write('x')\ndef f():\n    raise ValueError('boom <&>')\nf()"
    with_roar = make_nb([("load", "%load_ext roar\n%roar on"), ("bad", body)])
    without = make_nb([("load", "pass"), ("bad", body)])
    a = run(with_roar, tmp_path, kernel)["bad"]
    b = run(without, tmp_path, kernel)["bad"]
    err_a = [o for o in a if o["output_type"] == "error"]
    err_b = [o for o in b if o["output_type"] == "error"]
    assert len(err_a) == 1
    assert (err_a[0]["ename"], err_a[0]["evalue"], err_a[0]["traceback"]) == \
           (err_b[0]["ename"], err_b[0]["evalue"], err_b[0]["traceback"])
    (job,) = dag_json(tmp_path)["jobs"]
    assert job["status"] == "failed" and job["cell_id"] == "bad"
    assert names(job["outputs"]) == {"before.txt"}
    assert "failed" in text(a).splitlines()[-1]


def test_roar_cell_magic_traceback_has_no_roar_frames(kernels, tmp_path):
    nb = make_nb([("load", "%load_ext roar"), ("bad", "%%roar\nx = 1\n1 / 0")])
    out = run(nb, tmp_path, "roar")["bad"]
    (err,) = [o for o in out if o["output_type"] == "error"]
    tb = ANSI.sub("", "\n".join(err["traceback"]))
    assert err["ename"] == "ZeroDivisionError"
    assert "roar" not in tb and "magic" not in tb
    assert "line 3" in tb  # line numbers match the cell as the user sees it
    (job,) = dag_json(tmp_path)["jobs"]
    assert job["status"] == "failed"


def test_rerun_cells_same_step_latest_and_stale(kernels, tmp_path):
    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("set1", "v = 'one'"),
        ("write", "open('x.txt', 'w').write(v)"),
        ("read", "open('y.txt', 'w').write(open('x.txt').read().upper())"),
        ("set2", "v = 'two'"),
    ])
    run(nb, tmp_path, "roar", order=["load", "set1", "write", "read", "set2", "write"])
    d = dag_json(tmp_path)
    jobs = by_cell(d)
    assert [j["cell_id"] for j in d["jobs"]] == ["set1", "read", "set2", "write"]
    assert jobs["read"]["stale"] and "x.txt" in jobs["read"]["stale"]
    assert not jobs["write"]["stale"]
    full = dag_json(tmp_path, expanded=True)
    writes = [j for j in full["jobs"] if j["cell_id"] == "write"]
    assert len(writes) == 2 and writes[0]["superseded"] and not writes[1]["superseded"]
    assert writes[0]["step"] == writes[1]["step"] == "write"
    assert writes[0]["outputs"][0]["hash"] != writes[1]["outputs"][0]["hash"]


def test_roar_on_off_and_own_cells(kernels, tmp_path):
    nb = make_nb([
        ("load", "%load_ext roar"),
        ("untraced1", "open('a.txt', 'w').write('a')"),
        ("on", "%roar on"),
        ("traced1", "open('b.txt', 'w').write(open('a.txt').read())"),
        ("traced2", "open('c.txt', 'w').write(open('b.txt').read())"),
        ("status", "%roar status\n%roar log"),
        ("off", "%roar off"),
        ("untraced2", "open('d.txt', 'w').write('d')"),
        ("once", "%%roar\nopen('e.txt', 'w').write(open('c.txt').read())"),
        ("show", "%roar show @2\n%roar show c.txt"),
    ])
    out = run(nb, tmp_path, "roar")
    d = dag_json(tmp_path)
    assert [j["cell_id"] for j in d["jobs"]] == ["traced1", "traced2", "once"]
    assert cell_edges(d) == {("traced1", "traced2"), ("traced2", "once")}
    assert "roar" not in text(out["untraced1"]) and "roar" not in text(out["untraced2"])
    assert "tracing every cell on" in text(out["on"])
    st = text(out["status"])
    assert "jobs       2" in st and "native" in st
    shown = text(out["show"])
    assert "@2  job" in shown and "b.txt" in shown and "artifact " in shown and "produced by" in shown


def test_threads_count_while_the_cell_runs_only(kernels, tmp_path):
    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("threads", "import threading, time\n"
                    "t = threading.Thread(target=lambda: open('inside.txt', 'w').write('i'))\n"
                    "t.start(); t.join()\n"
                    "go = threading.Event()\n"
                    "def late():\n    go.wait(); open('after.txt', 'w').write('a')\n"
                    "t2 = threading.Thread(target=late); t2.start()"),
        ("later", "go.set(); t2.join(); time.sleep(0.05)\nopen('own.txt', 'w').write('o')"),
    ])
    run(nb, tmp_path, "roar")
    jobs = by_cell(dag_json(tmp_path))
    assert names(jobs["threads"]["outputs"]) == {"inside.txt"}
    # after.txt was written by a thread while the *next* cell ran: it counts for that cell.
    assert names(jobs["later"]["outputs"]) == {"after.txt", "own.txt"}


def test_kernel_bookkeeping_files_are_not_io(kernels, tmp_path):
    nb = make_nb([("load", "%load_ext roar\n%roar on")] +
                 [(f"c{i}", f"x{i} = {i}\nprint(x{i})") for i in range(5)])
    run(nb, tmp_path, "roar")
    for j in dag_json(tmp_path)["jobs"]:
        assert j["inputs"] == [] and j["outputs"] == [], j


# --- bad input ----------------------------------------------------------------------------

def test_bad_arguments_print_usage(kernels, tmp_path):
    nb = make_nb([("load", "%load_ext roar"), ("bad", "%roar frobnicate"), ("bad2", "%roar show"),
                  ("bad3", "%%roar --nope\nprint('still ran')"),
                  ("bad4", "%roar show @99")])
    out = run(nb, tmp_path, "roar")
    for cid in ("bad", "bad2"):
        lines = text(out[cid]).strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("usage: %roar")
    assert text(out["bad3"]).splitlines() == [text(out["bad"]).strip(), "still ran"]
    assert text(out["bad4"]).strip().startswith("roar: no job @99")
    assert not any(o["output_type"] == "error" for v in out.values() for o in v)


def test_read_only_roar_dir_one_line_and_cells_run(kernels, tmp_path):
    from roar_nb.session import Project

    project, _ = Project.init(tmp_path)
    project.store.close()
    roar_dir = tmp_path / ".roar"
    os.chmod(roar_dir / "roar.db", 0o444)
    os.chmod(roar_dir, 0o555)
    try:
        if os.access(roar_dir / "roar.db", os.W_OK):
            # root ignores permission bits: make the database unusable another way.
            os.chmod(roar_dir, 0o755)
            for f in roar_dir.glob("roar.db*"):
                f.unlink()
            (roar_dir / "roar.db").write_bytes(b"this is not a database")
            os.chmod(roar_dir, 0o555)
        nb = make_nb([("load", "%load_ext roar\n%roar on"), ("work", "print(6 * 7)"),
                      ("again", "print(7 * 6)")])
        out = run(nb, tmp_path, "roar")
    finally:
        os.chmod(tmp_path / ".roar", 0o755)
    load = [ln for ln in text(out["load"]).splitlines() if ln.startswith("roar:")]
    assert load and "not recorded" in load[0]
    assert text(out["work"]).strip() == "42" and text(out["again"]).strip() == "42"


def test_missing_library_falls_back_with_one_warning(kernels, tmp_path):
    """A roar kernelspec whose library has gone: ld.so ignores it, the kernel still works."""
    broken = kernels["prefix"] / "share" / "jupyter" / "kernels" / "roar-broken"
    broken.mkdir(exist_ok=True)
    spec = json.loads((kernels["prefix"] / "share" / "jupyter" / "kernels" / "roar" / "kernel.json").read_text())
    missing = str(tmp_path / "gone" / "libroar_preload.so")
    spec["env"] = {"LD_PRELOAD": missing, "ROAR_PRELOAD_LIB": missing}
    (broken / "kernel.json").write_text(json.dumps(spec))
    nb = make_nb([("load", "%load_ext roar\n%roar on"), ("w", "open('f.txt', 'w').write('f')"),
                  ("w2", "import subprocess; subprocess.run(['cp', 'f.txt', 'g.txt'])")])
    out = run(nb, tmp_path, "roar-broken")
    jobs = by_cell(dag_json(tmp_path))
    assert names(jobs["w"]["outputs"]) == {"f.txt"}
    assert all(j["capture_level"] == "python-only" for j in jobs.values())
    warn = [ln for o in out.values() for ln in text(o).splitlines() if "roar kernel install" in ln]
    assert len(warn) == 1
    assert not any(o["output_type"] == "error" for v in out.values() for o in v)


def test_two_notebooks_share_one_roar_dir_concurrently(kernels, tmp_path):
    from roar_nb.session import Project

    Project.init(tmp_path)
    n = 25
    nbs = {}
    for name in ("a", "b"):
        cells = [("load", "%load_ext roar\n%roar on")]
        cells += [(f"{name}{i}", f"open('{name}{i}.txt', 'w').write('{name}' * {i + 1})") for i in range(n)]
        nbs[name] = make_nb(cells)
    errors = []

    def go(name):
        try:
            run(nbs[name], tmp_path, "roar")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=go, args=(k,)) for k in nbs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    sessions = [s for s in store(tmp_path).sessions() if s.session.kind == "notebook"]
    assert sorted(s.jobs for s in sessions) == [n, n]
    for s in sessions:
        jobs = store(tmp_path).jobs(s.session.id)
        assert [j.seq for j in jobs] == list(range(1, n + 1))
        prefix = jobs[0].cell_id[0]
        assert {os.path.basename(e.path) for j in jobs for e in j.outputs} == {f"{prefix}{i}.txt" for i in range(n)}
    assert not (tmp_path / ".roar" / "pending").exists() or not list((tmp_path / ".roar" / "pending").iterdir())


# --- rendering ----------------------------------------------------------------------------

def test_dag_svg_escapes_user_strings_and_widget(kernels, tmp_path):
    evil = '<b>x</b> & "q" \\n.txt'
    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("evil", f"open({evil!r}, 'w').write('x')  # <script>alert(1)</script>"),
        ("dag", "%roar dag"),
        ("widget", "%roar dag --widget"),
        ("text", "%roar dag --text"),
    ])
    out = run(nb, tmp_path, "roar")
    (svg,) = [o["data"]["image/svg+xml"] for o in out["dag"] if "image/svg+xml" in o.get("data", {})]
    assert "<script>" not in svg and "<b>x</b>" not in svg
    assert "&lt;b&gt;x&lt;/b&gt;" in svg and "&lt;script&gt;" in svg
    assert "\\n.txt" in svg  # the backslash is drawn, not turned into a line break
    assert any("application/vnd.jupyter.widget-view+json" in o.get("data", {}) for o in out["widget"])
    assert "@1 open(" in text(out["text"])


def test_render_without_dot_falls_back_to_text(tmp_path, monkeypatch):
    from roar_nb import dag, render
    from roar_nb.model import Edge, Job

    j = Job(id="j1", session_id="s", seq=1, kind="cell", step="c", command="x", cwd=str(tmp_path),
            started_at=0, ended_at=1, exit_code=0, status="ok", backend="audit",
            capture_level="python-only", source="df.to_csv('a<b>.csv')",
            outputs=(Edge("out", str(tmp_path / "a<b>.csv"), "ab" * 32, 3),))
    d = dag.build([j])
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot`
    assert render.dag_svg(d) is None
    assert "a<b>.csv" in render.dag_text(d)
