"""A real `jupyter lab` on 127.0.0.1 with a token: the roar REST API and the Lineage panel.

The server runs with the installed lab extension and server extension (enabled
by the install, nothing enabled here), the roar kernel from tests/conftest.py,
and private config/data/runtime dirs. The browser part is lineage.mjs under
Debian's chromium through playwright-core; its screenshots land in
test-output/e2e/. Nothing is skipped: a missing build is built, a missing
chromium is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

# A browser and a JupyterLab server: the full tier only (`make test`), not `make test-fast`.
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
OUT = REPO / "test-output" / "e2e"
CHROMIUM = os.environ.get("ROAR_E2E_CHROMIUM", "/usr/bin/chromium")


def ensure_lab_extension() -> None:
    """The installed lab extension must be the one built from this tree; rebuild it like `make` does."""
    built = REPO / "roar_nb" / "labextension" / "package.json"
    installed = Path(sys.prefix) / "share" / "jupyter" / "labextensions" / "roar-nb" / "package.json"
    if not (REPO / "labextension" / "node_modules" / "playwright-core").is_dir():
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REPO / "labextension", check=True)
    src = REPO / "labextension"
    newest = max(p.stat().st_mtime for d in ("src", "style", "scripts") for p in (src / d).rglob("*")
                 if p.is_file() and p.name != "_workerSource.ts")
    newest = max(newest, *(p.stat().st_mtime for p in src.glob("*.json")))
    if (not installed.exists() or not built.exists() or built.stat().st_mtime < newest
            or installed.read_bytes() != built.read_bytes()):
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-e", ".",
                        "--config-settings", "editable_mode=compat"], cwd=REPO, check=True)
    assert installed.exists(), "the lab extension was not installed into share/jupyter/labextensions"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, token: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, headers={"Authorization": f"token {token}"} if token else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if body.startswith(b"{") else {"raw": body.decode(errors="replace")}


def wait_ready(proc, url: str, token: str, seconds: float, what: str, log) -> None:
    """Poll `url`/api/status until the server answers 200; fail if it exits or takes longer
    than `seconds` (`log()` says where its output is)."""
    deadline = time.time() + seconds
    while True:
        try:
            if get(f"{url}/api/status", token)[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        assert proc.poll() is None, f"{what} exited; {log()}"
        assert time.time() < deadline, f"{what} did not start in {seconds:g} s"
        time.sleep(0.3)


class Lab:
    def __init__(self, url: str, token: str, root: Path, proc: subprocess.Popen):
        self.url, self.token, self.root, self.proc = url, token, root, proc

    def api(self, endpoint: str, token: str | None = "<lab>") -> tuple[int, dict]:
        return get(f"{self.url}/roar/api/{endpoint}", self.token if token == "<lab>" else token)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, jupyter_kernels):
    ensure_lab_extension()
    root = tmp_path_factory.mktemp("labroot")
    shutil.copy(REPO / "notebooks" / "pipeline.ipynb", root / "pipeline.ipynb")
    home = tmp_path_factory.mktemp("labhome")
    token = secrets.token_hex(16)
    port = free_port()
    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "ws"),
        "JUPYTER_PLATFORM_DIRS": "1",
    })
    env.pop("ROAR_PROJECT", None)
    cmd = [str(BIN / "jupyter"), "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.port_retries=0", "--LabApp.news_url=", "--LabApp.check_for_updates_class="
           "jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    OUT.mkdir(parents=True, exist_ok=True)
    log = open(OUT / "jupyter-lab.log", "wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, token, 90, "jupyter lab", lambda: f"see {OUT / 'jupyter-lab.log'}")
    yield Lab(url, token, root, proc)
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


def test_requests_without_the_token_are_refused(lab):
    for endpoint in ("changes", "sessions", "dag", "dag?session=all", "job/abc", "artifact/abcd", "nope"):
        code, body = lab.api(endpoint, token=None)
        assert code == 403, endpoint
        assert "message" in body["error"], body
        code, _ = lab.api(endpoint, token="wrong" + lab.token)
        assert code == 403, endpoint


def test_no_project_is_a_hint_not_an_error(lab):
    assert not (lab.root / ".roar").exists()  # runs before the browser test creates the project
    code, body = lab.api("changes?path=pipeline.ipynb")
    assert code == 200 and body["project"] is None and "%load_ext roar" in body["hint"]
    code, body = lab.api("dag?path=pipeline.ipynb")
    assert code == 200 and body["project"] is None
    code, body = lab.api("job/abc")
    assert code == 404 and "roar init" in body["error"]["message"]
    code, body = lab.api("dag?path=../../etc/passwd")
    assert code == 400 and "outside" in body["error"]["message"]


def test_lineage_panel_in_a_real_browser(lab):
    assert Path(CHROMIUM).exists(), f"{CHROMIUM} missing: `make setup` installs Debian's chromium"
    env = dict(os.environ, LAB_URL=lab.url, LAB_TOKEN=lab.token, OUT_DIR=str(OUT), NOTEBOOK="pipeline.ipynb",
               ROAR=str(BIN / "roar"), PYTHON=sys.executable, PROJECT_DIR=str(lab.root), CHROMIUM=CHROMIUM)
    env.pop("ROAR_PROJECT", None)
    p = subprocess.run(["node", str(REPO / "tests" / "e2e" / "lineage.mjs")], env=env,
                       capture_output=True, text=True, timeout=600)
    print(p.stdout)
    assert p.returncode == 0, f"browser test failed (screenshots in {OUT}):\n{p.stdout}\n{p.stderr}"
    assert (OUT / "lineage-panel.png").stat().st_size > 10_000

    # The same DAG through the API: the notebook's session, as `roar dag --json` shapes it.
    code, doc = lab.api("dag?path=pipeline.ipynb")
    assert code == 200 and [j["ref"] for j in doc["jobs"]] == ["@1", "@2", "@3", "@4"]
    assert doc["session_info"]["notebook_path"] == "pipeline.ipynb"
    assert all(j["kind"] == "cell" and j["label"].startswith(j["ref"]) for j in doc["jobs"])
    code, job = lab.api(f"job/{doc['jobs'][1]['id']}")
    assert code == 200 and job["outputs"][0]["path"].endswith("features.parquet")
    code, art = lab.api(f"artifact/{job['outputs'][0]['hash']}")
    assert code == 200 and [p["ref"] for p in art["producers"]] == ["@2"]


def test_concurrent_writer_never_shows_a_half_written_job(lab):
    """A writer inserts jobs with 200 outputs each while the API is read in a loop:
    every job the API returns has all of its outputs."""
    from roar_nb.model import Edge, Job
    from roar_nb.session import Project

    sub = lab.root / "concurrent"
    sub.mkdir()
    project, _ = Project.init(sub)
    store = project.store
    session = store.new_session("cli", name="writer")
    n_out = 200
    stop = threading.Event()

    def writer():
        i = 0
        while not stop.is_set() and i < 60:
            now = time.time()
            outs = tuple(Edge("out", f"{sub}/f{i}_{k}", f"{i:08x}{k:056x}", 1) for k in range(n_out))
            store.insert_job(Job(id=f"{i:032x}", session_id=session.id, seq=0, kind="run", step=f"s{i}",
                                 command=f"job {i}", cwd=str(sub), started_at=now, ended_at=now,
                                 exit_code=0, status="ok", backend="none", capture_level="partial",
                                 outputs=outs))
            i += 1

    t = threading.Thread(target=writer)
    t.start()
    seen = 0
    try:
        deadline = time.time() + 60
        while t.is_alive() and time.time() < deadline:
            code, doc = lab.api(f"dag?path=concurrent/x.ipynb&session={session.id}")
            assert code == 200, doc
            for j in doc["jobs"]:
                assert len(j["outputs"]) == n_out, f"{j['ref']} has {len(j['outputs'])} outputs"
            seen = max(seen, len(doc["jobs"]))
    finally:
        stop.set()
        t.join()
    assert seen > 0
