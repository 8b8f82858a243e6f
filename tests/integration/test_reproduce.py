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


# --- issue 10, item 4: reproduction without side effects, exact venvs, scripts that run ------------

def _bash(script: str, cwd) -> subprocess.CompletedProcess:
    """Run a generated script as a user would, with this venv's python first (it has blake3)."""
    from conftest import BIN

    path = cwd / "repro.sh"
    path.write_text(script)
    env = {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", str(path)], check=False, cwd=cwd, capture_output=True, text=True, env=env)


def test_script_of_a_two_step_cli_pipeline_runs_and_reports_identical(proj):
    (proj.root / "gen.py").write_text("open('a.txt', 'w').write('\\n'.join(map(str, range(50))))\n")
    (proj.root / "sq.py").write_text("open('b.txt', 'w').write(str(sum(int(x) ** 2 for x in open('a.txt'))))\n")
    proj.roar("run", PY, "gen.py")
    proj.roar("run", PY, "sq.py")
    recorded = (proj.root / "b.txt").read_bytes()
    script = proj.roar("reproduce", "b.txt", "--script").stdout.decode()
    for n in ("a.txt", "b.txt"):
        (proj.root / n).unlink()
    r = _bash(script, proj.root)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "identical", (script, r.stdout, r.stderr)
    assert (proj.root / "b.txt").read_bytes() == recorded
    # A changed step makes the script say so and fail (the check is not a constant).
    (proj.root / "sq.py").write_text("open('b.txt', 'w').write('changed')\n")
    r = _bash(script, proj.root)
    assert r.returncode == 1 and "differs" in r.stdout, (r.stdout, r.stderr)


def test_script_of_a_notebook_cell_pipeline_runs_and_reports_identical(pipeline):
    script = pipeline.roar("reproduce", "model.json", "--script").stdout.decode()
    assert "ROAR_CELLS" in script  # the cells run as one Python process
    recorded = (pipeline.root / "model.json").read_bytes()
    for n in ("raw.csv", "features.csv", "model.json"):
        (pipeline.root / n).unlink()
    r = _bash(script, pipeline.root)
    assert r.returncode == 0 and r.stdout.strip().splitlines()[-1] == "identical", (script, r.stdout, r.stderr)
    assert (pipeline.root / "model.json").read_bytes() == recorded


WATCH_ENV = textwrap.dedent("""
    import os, threading, time
    before = dict(os.environ)
    changes, stop = [], threading.Event()
    def watch():  # samples os.environ while the reproduction runs in this kernel's main thread
        while not stop.is_set():
            now = dict(os.environ)
            if now != before:
                changes.append(sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k)))
            time.sleep(0.002)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
""")


def test_magic_reproduce_run_leaves_the_kernel_environment_untouched(pipeline, tmp_path):
    dest = tmp_path / "clone"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%load_ext roar"),
                nbformat.v4.new_code_cell(WATCH_ENV),
                nbformat.v4.new_code_cell(f"%roar reproduce metrics.json --run --in {dest}"),
                nbformat.v4.new_code_cell("%roar reproduce metrics.json --run"),
                nbformat.v4.new_code_cell("stop.set(); watcher.join()\n"
                                          "print('CHANGES', changes[:3], 'SAME', dict(os.environ) == before)")]
    path = pipeline.root / "env.ipynb"
    nbformat.write(nb, str(path))
    done = execute_notebook(path, kernel="roar")
    out = ["".join(o.get("text", "") for o in c.outputs) for c in done.cells]
    assert "reproduced: " in out[2] and "NOT reproduced" not in out[2], out[2]
    assert "reproduced: " in out[3] and "NOT reproduced" not in out[3], out[3]
    assert (dest / "metrics.json").read_bytes() == (pipeline.root / "metrics.json").read_bytes()
    assert out[4].strip() == "CHANGES [] SAME True", out[4]


def _fake_site(site, name: str, files: dict) -> None:
    """Install a tiny distribution into `site` as pip would from its wheel: files + dist-info with RECORD."""
    info = f"{name}-0.1.dist-info"
    files = {**files, f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    for rel, body in files.items():
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        (site / rel).write_text(body)
    (site / info / "RECORD").write_text("".join(f"{rel},,\n" for rel in [*files, f"{info}/RECORD"]))


def test_in_dir_venv_holds_exactly_the_recorded_packages(proj, tmp_path):
    root = proj.root
    git(root, "init", "-q")
    git(root, "config", "user.email", "t@example.com")
    git(root, "config", "user.name", "t")
    # A host site directory holding a recorded distribution (roarrec), one recorded but gone
    # by reproduction time (roargone), and a bare module no distribution owns (roarunrec):
    # importable when recorded, but not a recorded package.
    site = tmp_path / "host" / "site-packages"
    _fake_site(site, "roarrec", {"roarrec/__init__.py": "VALUE = 'from roarrec'\n"})
    _fake_site(site, "roargone", {"roargone.py": "X = 1\n"})
    (site / "roarunrec.py").write_text("VALUE = 'from roarunrec'\n")
    (root / "use_rec.py").write_text("import roarrec\nopen('a.txt', 'w').write(roarrec.VALUE)\n")
    (root / "use_unrec.py").write_text("import roarunrec\nopen('b.txt', 'w').write(roarunrec.VALUE)\n")
    (root / ".gitignore").write_text(".roar/\n*.txt\n")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "steps")
    host = {"PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    proj.roar("run", PY, "use_rec.py", env=host)
    proj.roar("run", PY, "use_unrec.py", env=host)
    reqs = proj.roar("reproduce", "b.txt", "--list-requirements", env=host).stdout.decode().splitlines()
    assert "roarrec==0.1" in reqs and "roargone==0.1" in reqs and not any("roarunrec" in r for r in reqs)
    import shutil

    shutil.rmtree(site / "roargone-0.1.dist-info")
    (site / "roargone.py").unlink()
    # Offline: pip may look only at (empty) find-links, so roargone cannot be had anywhere.
    offline = {**host, "PIP_NO_INDEX": "1", "PIP_FIND_LINKS": str(tmp_path / "no-wheels")}

    one = root / "inside"  # DIR inside the recorded repository: its venv's python must not be re-mapped
    ok = proj.roar("reproduce", "a.txt", "--run", "--in", one, env=offline, check=False)
    out = ok.stdout.decode()
    assert ok.returncode == 0, out + ok.stderr.decode()
    assert (one / "a.txt").read_text() == "from roarrec"
    assert "recorded package not installed in the venv: roargone==0.1" in out, out
    venv_site = next((one / ".venv" / "lib").glob("python*/site-packages"))
    assert (venv_site / "roarrec" / "__init__.py").is_file() and not (venv_site / "roarunrec.py").exists()

    bad = proj.roar("reproduce", "b.txt", "--run", "--in", tmp_path / "two", env=offline, check=False)
    out, err = bad.stdout.decode(), bad.stderr.decode()
    assert bad.returncode == 1, out + err
    assert "step failed" in out and "use_unrec.py" in out and "NOT reproduced" in out, out
    assert "No module named 'roarunrec'" in err, err
    assert not (tmp_path / "two" / "b.txt").exists()


def test_plan_reads_only_the_store_and_check_looks_on_disk(proj):
    from roar_nb import reproduce
    from roar_nb.session import Project

    (proj.root / "in.txt").write_text("x")
    (proj.root / "cp.py").write_text("open('out.txt', 'w').write(open('in.txt').read().upper())\n")
    proj.roar("run", PY, "cp.py")
    (proj.root / "in.txt").unlink()
    project = Project.find(str(proj.root))
    plan = reproduce.make_plan(project, str(proj.root / "out.txt"))
    assert {s.status for s in plan.sources} == {"unchecked"} and plan.drift == [] and not plan.checked
    checked = reproduce.check(project, plan)
    status = {s.path: s.status for s in checked.sources}
    assert status == {str(proj.root / "in.txt"): "missing", str(proj.root / "cp.py"): "ok"}, status
    assert checked.missing_sources and reproduce.check(project, checked) is checked
