"""The layering ARCHITECTURE.md states, checked (issue 10): the adapters (cli.py, magics.py,
server/) call use cases and never import `roar_nb.store`, sqlite3 or sqlite_utils; the server and
the magics never import the CLI; only `roar_nb/store/` talks to SQLite. The contracts are in
pyproject.toml ([tool.importlinter]); import-linter is in the `test` extra."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    exe = Path(sys.executable).parent / "lint-imports"
    assert exe.exists(), "import-linter is not installed (pip install -e '.[test]')"
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(exe), "--no-cache", "--config", str(tree / "pyproject.toml")], cwd=tree,
                          env=env, capture_output=True, text=True, timeout=300)


def test_the_import_contracts_hold():
    res = lint_imports(ROOT)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "4 kept, 0 broken" in res.stdout, res.stdout


def test_the_contracts_catch_a_violation(tmp_path):
    """The same contracts on a copy of the package with three violations: all three are reported."""
    shutil.copytree(ROOT / "roar_nb", tmp_path / "roar_nb", ignore=shutil.ignore_patterns("_native", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "roar_nb" / "cli.py", "a") as f:
        f.write("\nfrom roar_nb.store import Store  # noqa\n")
    with open(tmp_path / "roar_nb" / "server" / "handlers.py", "a") as f:
        f.write("\nfrom roar_nb.cli import main  # noqa\n")
    with open(tmp_path / "roar_nb" / "dag.py", "a") as f:
        f.write("\nimport sqlite3  # noqa\n")
    res = lint_imports(tmp_path)
    assert res.returncode != 0
    for chain in ("roar_nb.cli -> roar_nb.store", "roar_nb.server.handlers -> roar_nb.cli", "roar_nb.dag -> sqlite3"):
        assert chain in res.stdout, res.stdout
