"""One rule for the session a view shows when none is named (issue 10): `roar dag`, `roar log`,
`@N` and the lab panel (against a real `jupyter server`) show the same default DAG, both when the
work happened in a notebook (the CLI session is empty) and after a `roar run`."""

from __future__ import annotations

import json

import nbformat

from conftest import Proj, execute_notebook
from resilience.test_server_api import serve


def _job_ids(doc: dict) -> set:
    return {j["id"] for j in doc["jobs"]}


def test_cli_and_panel_show_the_same_default_dag(tmp_path, jupyter_kernels, native_lib):
    root = tmp_path / "proj"
    root.mkdir()
    p = Proj(root)
    p.roar("init", "-n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext roar"),
                nbformat.v4.new_code_cell("%%roar\nopen('made-in-nb.txt', 'w').write('x')")]
    nbformat.write(nb, str(root / "work.ipynb"))
    execute_notebook(root / "work.ipynb")

    (tmp_path / "jhome").mkdir()
    with serve(root, tmp_path / "jhome") as server:
        # The work happened in the notebook: the CLI session is empty, so every view falls back
        # to the latest notebook session, the same one.
        cli = p.dag()
        assert len(cli["jobs"]) == 1, cli
        code, panel = server.api("dag")
        assert code == 200, panel
        assert _job_ids(panel) == _job_ids(cli)
        assert panel["session_info"]["kind"] == "notebook"
        code, sessions = server.api("sessions")
        assert code == 200 and sessions["active"] == panel["session_info"]["id"], sessions
        log = json.loads(p.roar("log", "--json").stdout)
        assert {j["id"] for j in log} == _job_ids(cli)
        assert json.loads(p.roar("show", "@1", "--json").stdout)["id"] in _job_ids(cli)

        # A job in the CLI session: that session is the default for all of them.
        p.roar("run", "--", "sh", "-c", "echo y > made-by-cli.txt")
        cli = p.dag()
        code, panel = server.api("dag")
        assert code == 200 and len(cli["jobs"]) == 1 and _job_ids(panel) == _job_ids(cli), (cli, panel)
        assert panel["session_info"]["kind"] == "cli"
        code, sessions = server.api("sessions")
        assert sessions["active"] == panel["session_info"]["id"]
