"""Security of what roar writes and shows: owner-only .roar/, escaped names in every view,
generated scripts and notebooks that user text cannot break out of (issue 12, items 15-17)."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from conftest import Proj


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def open_dir():
    """A project directory every local user can traverse (pytest's tmp_path is 0700, which
    would hide a world-readable DB by accident and make the test prove nothing)."""
    d = tempfile.mkdtemp(prefix="roar-perm-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _as_nobody(*argv) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", *argv],
                          capture_output=True, text=True, errors="replace")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")
def test_secrets_at_rest_are_owner_only(open_dir, native_lib):
    p = Proj(__import__("pathlib").Path(open_dir))
    p.roar("init", "-n")
    p.roar("env", "set", "AWS_SECRET_ACCESS_KEY", "s3cr3t-value")
    p.roar("run", "--", "sh", "-c", "echo x > out.txt")
    roar_dir = os.path.join(open_dir, ".roar")
    assert _mode(roar_dir) == 0o700
    for name in ("roar.db", "roar.db-wal", "roar.db-shm", "config.toml"):
        f = os.path.join(roar_dir, name)
        if os.path.exists(f):
            assert _mode(f) & 0o077 == 0, (name, oct(_mode(f)))
    # Another local user can neither list .roar/ nor read the DB (nor its WAL, which holds the value first).
    for target in ("roar.db", "roar.db-wal"):
        r = _as_nobody("cat", os.path.join(roar_dir, target))
        assert r.returncode != 0 and "s3cr3t" not in r.stdout
        assert "Permission denied" in r.stderr
    assert _as_nobody("ls", roar_dir).returncode != 0
    # The owner still works normally.
    assert "AWS_SECRET_ACCESS_KEY" in p.roar("env", "list").stdout.decode()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as a second local user")
def test_existing_world_readable_project_is_tightened_on_open(open_dir, native_lib):
    p = Proj(__import__("pathlib").Path(open_dir))
    p.roar("init", "-n")
    p.roar("env", "set", "TOKEN", "hunter2")
    roar_dir = os.path.join(open_dir, ".roar")
    # A project made by an older roar: world-readable directory and DB.
    os.chmod(roar_dir, 0o755)
    for name in ("roar.db", "roar.db-wal", "roar.db-shm"):
        if os.path.exists(os.path.join(roar_dir, name)):
            os.chmod(os.path.join(roar_dir, name), 0o644)
    assert _as_nobody("cat", os.path.join(roar_dir, "roar.db")).returncode == 0  # the break, as it was
    p.roar("status")
    assert _mode(roar_dir) == 0o700
    assert _mode(os.path.join(roar_dir, "roar.db")) == 0o600
    r = _as_nobody("cat", os.path.join(roar_dir, "roar.db"))
    assert r.returncode != 0 and "hunter2" not in r.stdout


# --- item 16 and issue 10: one escaping rule in every view ------------------------------------

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\nroar @9: FAKE\u202e.txt"
HOSTILE_SHOWN = "\\x1b]0;pwned\\x07\\x1b[2J\\x0aroar @9: FAKE\\u202e.txt"


def _no_raw_controls(s: str) -> None:
    assert "\x1b" not in s and "\x07" not in s and "\u202e" not in s, repr(s)
    assert not any(ln.startswith("roar @9") for ln in s.splitlines()), repr(s)


def test_hostile_file_names_cannot_act_on_the_terminal(proj):
    # The name comes from the job's environment so that no shell quoting is involved.
    env = {"NAME": HOSTILE}
    r = proj.roar("run", "--", "sh", "-c", 'echo x > "$NAME"; cat "$NAME" > "$NAME.copy"', env=env)
    assert (proj.root / HOSTILE).exists()
    err = r.stderr.decode()
    _no_raw_controls(err)
    assert "\\x1b]0;pwned" in err  # the summary names the file, escaped
    views = [proj.roar("show", "@1").stdout.decode(), proj.roar("dag", "--show-artifacts").stdout.decode(),
             proj.roar("log").stdout.decode(), proj.roar("show").stdout.decode()]
    for v in views:
        _no_raw_controls(v)
    assert HOSTILE_SHOWN in views[0] and HOSTILE_SHOWN in views[1]
    # A command line holding the same characters is escaped too.
    proj.roar("run", "--", "sh", "-c", "true # \x1b[2J\x1b]0;t\x07")
    for v in (proj.roar("log").stdout.decode(), proj.roar("show", "@2").stdout.decode(),
              proj.roar("dag").stdout.decode()):
        _no_raw_controls(v)
    # An error message quoting what the user typed.
    r = proj.roar("show", "no\x1b[2Jsuch", check=False)
    assert r.returncode != 0 and "\x1b" not in r.stderr.decode() and "no\\x1b[2Jsuch" in r.stderr.decode()


def test_one_non_utf8_path_reads_the_same_in_every_view(proj):
    import json
    import sqlite3

    name = b"data\xff\x1b.bin"
    r = proj.roar("run", "--", "sh", "-c", 'printf x > "$(printf "data\\377\\033.bin")"')
    assert os.path.exists(os.path.join(os.fsencode(proj.root), name))
    want = "data\\xff\\x1b.bin"
    show = proj.roar("show", "@1").stdout.decode()
    dag_text = proj.roar("dag", "--show-artifacts").stdout.decode()
    js = json.loads(proj.roar("dag", "--json").stdout)
    shown_json = js["jobs"][0]["outputs"][0]["path"]
    show_json = json.loads(proj.roar("show", "@1", "--json").stdout)["outputs"][0]["path"]
    db = sqlite3.connect(proj.path(".roar", "roar.db"))
    db_text, db_raw = db.execute("SELECT path, path_raw FROM job_io WHERE direction='out'").fetchone()
    assert db_raw == os.path.join(os.fsencode(proj.root), name)  # the exact bytes are kept
    # The SVG view, drawn from the same store in-process (what the magic shows).
    from roar_nb import dag as dag_mod
    from roar_nb.render import dag_svg
    from roar_nb.session import Project

    svg = dag_svg(dag_mod.build(Project(str(proj.root)).store.jobs()))
    assert svg is not None
    for view in (show, dag_text, shown_json, show_json, db_text, svg, r.stderr.decode()):
        assert want in view, view
        assert "udcff" not in view and "\x1b" not in view


# --- item 15: generated scripts and notebooks cannot be broken out of ------------------------

def _bash(script: str, cwd) -> subprocess.CompletedProcess:
    path = os.path.join(cwd, "repro.sh")
    with open(path, "w") as f:
        f.write(script)
    # The venv's python first: the script's check imports blake3, as a user's environment would have it.
    env = {**os.environ, "PATH": f"{__import__('conftest').BIN}:{os.environ['PATH']}"}
    return subprocess.run(["bash", path], cwd=cwd, capture_output=True, text=True, env=env)


def test_reproduce_script_quotes_every_recorded_string(proj):
    root = str(proj.root)
    name = "out\ntouch PWNED_COMMENT\n`touch PWNED_TICK`$(touch PWNED_SUB)'.txt"
    arg = "$(touch PWNED_ARG); touch PWNED_ARG2"
    proj.roar("run", "--", "sh", "-c", 'printf %s "$1" > "$2"', "sh", arg, name)
    assert (proj.root / name).read_text() == arg
    script = proj.roar("reproduce", name, "--script").stdout.decode()
    (proj.root / name).unlink()
    r = _bash(script, root)
    assert r.returncode == 0 and "identical" in r.stdout, (script, r.stdout, r.stderr)
    assert (proj.root / name).read_text() == arg  # the command ran, with its exact arguments
    assert not [f for f in os.listdir(root) if f.startswith("PWNED")], script


def test_reproduce_script_cell_cannot_end_its_heredoc(proj):
    """A cell holding the line `ROAR_CELLS` ended the heredoc: the rest of the cell ran as bash."""
    from roar_nb.hashing import hash_file
    from roar_nb.model import Edge, Job, new_id
    from roar_nb.session import Project

    source = ('ROAR_CELLS = ROAR_CHECK = 0\nopen("cell.txt", "w").write("v")\nROAR_CELLS\n'
              '"touch" "PWNED_CELL"\nROAR_CHECK\n"touch" "PWNED_CHECK"\n')
    out = proj.path("cell.txt")
    with open(out, "w") as f:
        f.write("v")
    store = Project(str(proj.root)).store
    t = __import__("time").time()
    store.insert_job(Job(id=new_id(), session_id=store.active_session().id, seq=0, kind="cell", step="c1",
                         command="", cwd=str(proj.root), started_at=t, ended_at=t + 0.1, exit_code=0,
                         status="ok", backend="audit", capture_level="complete", source=source,
                         outputs=(Edge("out", out, hash_file(out), 1, created=True),)))
    script = proj.roar("reproduce", "cell.txt", "--script").stdout.decode()
    os.unlink(out)
    r = _bash(script, str(proj.root))
    assert r.returncode == 0 and "identical" in r.stdout, (script, r.stdout, r.stderr)
    assert not [f for f in os.listdir(proj.root) if f.startswith("PWNED")], script


def test_exported_notebook_shows_hostile_names_as_text(proj, jupyter_kernels, tmp_path):
    from conftest import execute_notebook

    target = "a`<img src=x onerror=alert(1)>`b.txt"
    arg = '{__import__("os").system("touch PWNED_EXPAND")}$HOME'
    proj.roar("run", "--", "sh", "-c", 'printf %s "$1" > "$2"', "sh", arg, target)
    nb_path = tmp_path / "repro.ipynb"
    proj.roar("export", "notebook", target, "-o", nb_path)
    r = subprocess.run([str(__import__("conftest").BIN / "jupyter"), "nbconvert", "--to", "html",
                        "--output-dir", str(tmp_path), str(nb_path)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    html = (tmp_path / "repro.html").read_text()
    assert "onerror=alert" in html  # the name is shown ...
    assert not __import__("re").search(r"<img[^>]*onerror", html)  # ... as text, not a tag
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    # Run it: the recorded argument must reach the program verbatim (IPython expands {expr}
    # and $name in `!cmd` lines, which is how the old export ran CLI steps).
    (proj.root / target).unlink()
    done = execute_notebook(nb_path, kernel="python3", cwd=proj.root)
    assert any("identical" in o.get("text", "") for o in done.cells[-1].outputs)
    assert (proj.root / target).read_text() == arg
    assert not [f for f in os.listdir(proj.root) if f.startswith("PWNED")]


def test_reproduce_finds_a_source_whose_name_needs_escaping(proj):
    """Views show `\\xNN`; reproduction must still open the real file (exact bytes from path_raw)."""
    src = os.path.join(os.fsencode(proj.root), b"in\nput\xff.txt")
    with open(src, "wb") as f:
        f.write(b"data\n")
    name = os.fsdecode(src)
    # The name via the environment first (the break being tested is in reproduce) ...
    proj.roar("run", "--", "sh", "-c", '{ cat "$SRC"; echo more; } > out.txt', env={"SRC": name})
    plan = proj.roar("reproduce", "out.txt").stdout.decode()
    assert "in\\x0aput\\xff.txt" in plan and "missing" not in plan, plan
    # ... then in argv: a command line that is not UTF-8 made `roar run` crash after the command ran.
    proj.roar("run", "--", "sh", "-c", '{ cat "$1"; echo more; } > out.txt', "sh", name)
    assert "in\\x0aput\\xff.txt" in proj.roar("show", "@2").stdout.decode()  # command line and input
    plan = proj.roar("reproduce", "out.txt").stdout.decode()
    assert "in\\x0aput\\xff.txt" in plan and "missing" not in plan, plan
    (proj.root / "out.txt").unlink()
    r = proj.roar("reproduce", "out.txt", "--run", check=False)
    assert r.returncode == 0 and b"identical" in r.stdout, (r.stdout, r.stderr)
