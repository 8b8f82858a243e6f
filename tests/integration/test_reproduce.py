"""`roar reproduce` and `roar export notebook` on a 4-step pipeline: 2 scripts and 2 notebook cells."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import nbformat
import pytest

from conftest import execute_notebook

PY = sys.executable

MAKE_DATA = "open('raw.csv', 'w').write('\\n'.join(f'{i},{i * i % 7}' for i in range(200)))\n"
EVALUATE = textwrap.dedent("""
    import json
    model = json.load(open('model.json'))
    json.dump({'score': round(model['slope'] * 0.5, 6)}, open('metrics.json', 'w'), sort_keys=True)
""")
CELL_FEATURES = textwrap.dedent("""
    rows = [tuple(map(int, ln.split(','))) for ln in open('raw.csv').read().splitlines()]
    with open('features.csv', 'w') as f:
        f.write('\\n'.join(f'{x},{y},{x * y}' for x, y in rows))
""")
# Kernel state the producing cells rely on: an import made before `%roar on` (untraced,
# replayed as the next traced cell's preamble) and a traced cell that only defines a function.
CELL_IMPORTS = "import json\nDIGITS = 6"
CELL_HELPER = textwrap.dedent("""
    def slope_of(feats):
        return sum(z for _, _, z in feats) / max(1, sum(x for x, _, _ in feats))
""")
CELL_MODEL = textwrap.dedent("""
    feats = [tuple(map(int, ln.split(','))) for ln in open('features.csv').read().splitlines()]
    json.dump({'slope': round(slope_of(feats), DIGITS)}, open('model.json', 'w'))
""")


def git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def pipeline(proj, jupyter_kernels):
    root = proj.root
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    (root / "make_data.py").write_text(MAKE_DATA)
    (root / "evaluate.py").write_text(EVALUATE)
    nb = nbformat.v4.new_notebook()
    for cid, src in (("setup", "%load_ext roar"), ("imports", CELL_IMPORTS), ("on", "%roar on"),
                     ("features", CELL_FEATURES), ("helper", CELL_HELPER), ("model", CELL_MODEL)):
        c = nbformat.v4.new_code_cell(src)
        c.id = cid
        nb.cells.append(c)
    nbformat.write(nb, str(root / "analysis.ipynb"))
    (root / ".gitignore").write_text(".roar/\n*.csv\n*.json\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "pipeline")

    proj.roar("run", PY, "make_data.py")
    execute_notebook(root / "analysis.ipynb", kernel="roar")
    proj.roar("run", PY, "evaluate.py")
    return proj


def test_plan_lists_four_steps_in_order(pipeline):
    out = pipeline.roar("reproduce", "metrics.json").stdout.decode()
    steps = [ln.split()[2] for ln in out.splitlines() if ln.strip()[:2] in ("1.", "2.", "3.", "4.")]
    assert steps == ["run", "cell", "cell", "run"], out
    assert "make_data.py" in out and "ok" in out
    assert "also replays 1 other cell(s) of the notebook session and 1 untraced preamble(s)" in out


def test_run_regenerates_deleted_outputs_identically(pipeline):
    root = pipeline.root
    recorded = {n: (root / n).read_bytes() for n in ("raw.csv", "features.csv", "model.json", "metrics.json")}
    for n in ("features.csv", "model.json", "metrics.json"):
        (root / n).unlink()
    r = pipeline.roar("reproduce", "metrics.json", "--run", check=False)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert out.count("identical") >= 4 and "differs" not in out and "missing" not in out
    assert {n: (root / n).read_bytes() for n in recorded} == recorded
    shown = json.loads(pipeline.roar("show", "metrics.json", "--json").stdout)
    assert shown["reproductions"] and shown["reproductions"][-1]["ok"] is True


def test_changed_script_differs_and_fails(pipeline):
    (pipeline.root / "evaluate.py").write_text(EVALUATE.replace("0.5", "0.25"))
    r = pipeline.roar("reproduce", "metrics.json", "--run", check=False)
    out = r.stdout.decode()
    assert r.returncode == 1
    assert "differs" in out and "metrics.json" in out


def test_nondeterministic_step(proj):
    (proj.root / "noise.py").write_text("import os; open('noise.bin', 'wb').write(os.urandom(32))\n")
    proj.roar("run", PY, "noise.py")
    r = proj.roar("reproduce", "noise.bin", "--run", "--check-determinism", check=False)
    assert r.returncode == 1
    assert "nondeterministic" in r.stdout.decode()


def test_missing_source_is_one_clear_line(pipeline):
    (pipeline.root / "make_data.py").unlink()
    (pipeline.root / "raw.csv").unlink()
    r = pipeline.roar("reproduce", "metrics.json", "--run", check=False)
    err = r.stderr.decode().strip().splitlines()
    assert r.returncode == 1
    assert err[-1].startswith("roar: error: source artifact") and "make_data.py" in err[-1]
    assert "Traceback" not in r.stderr.decode()


def test_in_fresh_clone(pipeline, tmp_path):
    dest = tmp_path / "elsewhere"
    r = pipeline.roar("reproduce", "metrics.json", "--run", "--in", dest, check=False)
    out = r.stdout.decode()
    assert r.returncode == 0, out + r.stderr.decode()
    assert (dest / "metrics.json").read_bytes() == (pipeline.root / "metrics.json").read_bytes()
    assert (dest / ".venv" / "bin" / "python").exists()
    # Outside the project (and the cwd), the verdict names the reproduced file by its absolute path.
    assert f"  * {'identical':<16} {dest / 'metrics.json'}" in out.splitlines(), out


def test_script_and_exported_notebook_verify(pipeline, tmp_path):
    script = pipeline.roar("reproduce", "metrics.json", "--script").stdout.decode()
    assert script.startswith("#!/usr/bin/env bash") and "make_data.py" in script
    # The script is run, not just read: from scratch outputs it rebuilds identical ones.
    (tmp_path / "repro.sh").write_text(script)
    saved = {n: (pipeline.root / n).read_bytes() for n in ("features.csv", "model.json", "metrics.json")}
    for n in saved:
        (pipeline.root / n).unlink()
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    ran = subprocess.run(["bash", str(tmp_path / "repro.sh")], cwd=pipeline.root, env=env, capture_output=True,
                         text=True, timeout=600)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert ran.stdout.strip().splitlines()[-1] == "identical", ran.stdout + ran.stderr
    assert {n: (pipeline.root / n).read_bytes() for n in saved} == saved
    out = tmp_path / "repro.ipynb"
    pipeline.roar("export", "notebook", "metrics.json", "-o", out)
    nb = nbformat.read(str(out), as_version=4)
    nbformat.validate(nb)
    assert nb.cells[0].cell_type == "markdown" and "metrics\\.json" in nb.cells[0].source
    kinds = [c.metadata["roar"].get("kind") or "preamble" for c in nb.cells[1:-1]]
    assert kinds == ["run", "preamble", "cell", "cell", "cell", "run"]
    assert "import json" in nb.cells[2].source and "def slope_of" in nb.cells[4].source
    for n in ("features.csv", "model.json", "metrics.json"):
        (pipeline.root / n).unlink()
    executed = execute_notebook(out, kernel="python3", cwd=pipeline.root)
    last = executed.cells[-1]
    assert any("identical" in o.get("text", "") for o in last.outputs), last.outputs


def test_magic_reproduce_preview_and_export(pipeline, tmp_path):
    nb = nbformat.v4.new_notebook()
    out = tmp_path / "from-magic.ipynb"
    nb.cells = [nbformat.v4.new_code_cell("%load_ext roar"),
                nbformat.v4.new_code_cell("%roar reproduce metrics.json"),
                nbformat.v4.new_code_cell(f"%roar export metrics.json {out}"),
                nbformat.v4.new_code_cell("%roar reproduce")]
    path = pipeline.root / "magic.ipynb"
    nbformat.write(nb, str(path))
    done = execute_notebook(path, kernel="roar")
    preview = "".join(o.get("text", "") for o in done.cells[1].outputs)
    assert "Reproduction plan for metrics.json" in preview and "steps (4)" in preview
    assert "wrote" in "".join(o.get("text", "") for o in done.cells[2].outputs)
    nbformat.validate(nbformat.read(str(out), as_version=4))
    assert "".join(o.get("text", "") for o in done.cells[3].outputs).startswith("usage: %roar")
