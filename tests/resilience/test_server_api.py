"""The REST API's boundaries (issue 12 item 18), against a real `jupyter server` on 127.0.0.1 with a
token: only projects at or below the server's root are served, `session=` is a prefix and not a
LIKE pattern, an out-of-range `@N` is a one-line 404 (the CLI too), and no endpoint answers
without the token."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, Proj
from e2e.test_lab import free_port, get, wait_ready
from integration.test_json_contract import conforms

HUGE = "@99999999999999999999999"


class Server:
    def __init__(self, url: str, token: str):
        self.url, self.token = url, token

    def api(self, endpoint: str, token: str | None = "<server>") -> tuple[int, dict]:
        return get(f"{self.url}/roar/api/{endpoint}", self.token if token == "<server>" else token)


@contextlib.contextmanager
def serve(root: Path, home: Path, **env_extra):
    """`jupyter server` with the roar extension, rooted at `root`, on a free 127.0.0.1 port with a token."""
    token, port = secrets.token_hex(16), free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(home / "config"), "JUPYTER_RUNTIME_DIR": str(home / "rt"),
           "JUPYTER_PLATFORM_DIRS": "1"}
    env.pop("ROAR_PROJECT", None)
    env.update(env_extra)
    cmd = [str(BIN / "jupyter"), "server", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
           "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
           "--ServerApp.jpserver_extensions={'roar_nb.server': True}"]
    if os.geteuid() == 0:
        cmd.append("--allow-root")
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, token, 120, "jupyter server", lambda: (home / "server.log").read_text())
        yield Server(url, token)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def layout(tmp_path_factory, native_lib):
    """outer/ holds a project with a job; the server's root is outer/inner/, which holds its own
    project; outer/inner/bare/ has a notebook and no project of its own."""
    outer = tmp_path_factory.mktemp("outer")
    Proj(outer).roar("init", "-n")
    Proj(outer).roar("run", "--", "sh", "-c", "echo secret > outer-secret.txt")
    inner = outer / "inner"
    inner.mkdir()
    p = Proj(inner)
    p.roar("init", "-n")
    p.roar("run", "--", "sh", "-c", "echo hi > inner.txt")
    (inner / "bare").mkdir()
    (inner / "bare" / "nb.ipynb").write_text("{}")
    return outer, inner


@pytest.fixture(scope="module")
def server(layout, tmp_path_factory):
    with serve(layout[1], tmp_path_factory.mktemp("jhome")) as s:
        yield s


def test_a_project_above_the_root_is_not_served(server, layout):
    outer, inner = layout
    # The root's own project is served...
    code, body = server.api("dag")
    assert code == 200 and body["project"] == str(inner), body
    # ... and a notebook below it, without a project of its own, sees the root's.
    code, body = server.api("dag?path=bare/nb.ipynb&session=all")
    assert code == 200 and body["project"] == str(inner)
    assert all("outer-secret" not in json.dumps(j) for j in body["jobs"])
    # /api/contents refuses to go above the root; so does the roar API.
    assert get(f"{server.url}/api/contents/..", server.token)[0] in (400, 404)
    code, body = server.api("dag?path=../x.ipynb")
    assert code == 400


def test_a_project_above_the_root_is_not_found_by_walking_up(layout, tmp_path_factory):
    """The server's root has no project; its parent has one: the API must answer 'no project'."""
    outer, inner = layout
    # $ROAR_PROJECT must not widen it either.
    with serve(inner / "bare", tmp_path_factory.mktemp("jhome2"), ROAR_PROJECT=str(outer)) as s:
        for endpoint in ("dag", "dag?session=all", "dag?path=nb.ipynb", "changes", "sessions"):
            code, body = s.api(endpoint)
            assert code == 200 and body["project"] is None, (endpoint, body)
            assert "outer-secret" not in json.dumps(body)
        code, body = s.api("job/@1")
        assert code == 404 and "root" in body["error"]["message"]


@pytest.mark.parametrize("pattern", ["%", "_", "%25", "_%25"])
def test_session_is_a_prefix_not_a_like_pattern(server, pattern):
    code, body = server.api(f"dag?session={pattern}")
    assert code == 404 and "no session matches" in body["error"]["message"], body


def test_an_out_of_range_step_is_a_404_not_a_traceback(server, layout):
    code, body = server.api(f"job/{HUGE}")
    assert code == 404 and "\n" not in body["error"]["message"], body
    assert "no job" in body["error"]["message"]
    r = Proj(layout[1]).roar("show", HUGE, check=False)
    err = r.stderr.decode()
    assert r.returncode != 0 and "Traceback" not in err and err.count("\n") == 1, err
    r = Proj(layout[1]).roar("dag", "--session", "%", check=False)
    assert r.returncode != 0 and "no session matches" in r.stderr.decode()


def test_every_endpoint_needs_the_token(server):
    for endpoint in ("changes", "sessions", "dag", "dag?session=all", f"job/{HUGE}", "artifact/abcd", "nope"):
        for token in (None, "wrong" + server.token):
            code, body = server.api(endpoint, token=token)
            assert code == 403 and "message" in body["error"], (endpoint, code, body)


def test_every_document_matches_the_shapes_schema(server, layout):
    """What the panel reads is what roar_nb/shapes.schema.json (and model.ts) says, error bodies too."""
    for endpoint, shape in (("dag", "dagView"), ("dag?session=all&expanded=1", "dagView"),
                            ("dag?path=bare/nb.ipynb", "dagView"), ("sessions", "sessionsView"),
                            ("sessions?path=bare/nb.ipynb", "sessionsView"), ("changes", "changesView"),
                            ("job/@1", "job")):
        code, body = server.api(endpoint)
        assert code == 200, (endpoint, body)
        conforms(body, shape)
    code, dag = server.api("dag")
    (job,) = dag["jobs"]
    assert "label" in job and job["outputs"]
    code, art = server.api(f"artifact/{job['outputs'][0]['hash']}")
    assert code == 200
    conforms(art, "artifact")
    for endpoint in (f"job/{HUGE}", "artifact/zz", "nope", "dag?session=%"):
        code, body = server.api(endpoint)
        assert code >= 400
        conforms(body, "error")
