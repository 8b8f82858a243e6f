"""The audit-hook backend (capture/audit.py): real file operations, real hook, real IPython shell."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
import threading

import pytest

from roar_nb.capture import audit
from roar_nb.capture import events as ev_mod


@pytest.fixture
def cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def capture(fn):
    audit.start()
    try:
        fn()
    finally:
        events, notes = audit.stop()
    return events, notes


def ops(events, base):
    return [(e.op, os.path.relpath(e.path, base), os.path.relpath(e.path2, base) if e.path2 else None)
            for e in events if e.path.startswith(str(base))]


def test_open_modes_classified_like_the_native_tracer(cwd):
    (cwd / "in.txt").write_text("hello")
    (cwd / "rw.txt").write_text("x")

    def work():
        open("in.txt").read()
        open("out.txt", "w").write("o")
        open("app.txt", "a").write("a")
        open("rw.txt", "r+").read()
        os.close(os.open("raw.txt", os.O_WRONLY | os.O_CREAT))

    events, notes = capture(work)
    assert ops(events, cwd) == [("R", "in.txt", None), ("W", "out.txt", None), ("W", "app.txt", None),
                                ("U", "rw.txt", None), ("W", "raw.txt", None)]
    r = [e for e in events if e.op == "R"][0]
    st = os.stat(cwd / "in.txt")
    assert (r.size, r.mtime_ns) == (st.st_size, st.st_mtime_ns)
    assert r.pid == os.getpid() and r.t_ns > 0 and notes == []


def test_paths_are_absolute_and_normalised(cwd):
    (cwd / "sub").mkdir()
    (cwd / "a.txt").write_text("a")
    events, _ = capture(lambda: open("sub/../a.txt").read() and open(b"./sub//b.txt", "wb").close())
    assert [e.path for e in events if e.path.startswith(str(cwd))] == [str(cwd / "a.txt"), str(cwd / "sub/b.txt")]


def test_failed_opens_are_not_events(cwd):
    def work():
        for target, mode in (("missing.txt", "r"), ("no/such/dir.txt", "w")):
            try:
                open(target, mode)
            except OSError:
                pass
        os.listdir(".")

    events, _ = capture(work)
    assert ops(events, cwd) == []


def test_rename_replace_remove_link_truncate(cwd):
    (cwd / "a.txt").write_text("a")

    def work():
        open("tmp.ckpt", "w").write("weights")
        os.replace("tmp.ckpt", "model.ckpt")
        os.rename("a.txt", "b.txt")
        os.link("b.txt", "c.txt")
        os.unlink("c.txt")
        os.remove("b.txt")
        os.truncate("model.ckpt", 3)

    events, _ = capture(work)
    assert ops(events, cwd) == [("W", "tmp.ckpt", None), ("M", "tmp.ckpt", "model.ckpt"),
                                ("M", "a.txt", "b.txt"), ("L", "b.txt", "c.txt"), ("D", "c.txt", None),
                                ("D", "b.txt", None), ("W", "model.ckpt", None)]
    r = ev_mod.reduce(events)
    assert [os.path.basename(p) for p in r.outputs] == ["model.ckpt"]


def test_shutil_copy_and_rmtree(cwd):
    (cwd / "src.txt").write_text("s")
    (cwd / "tree" / "deep").mkdir(parents=True)
    (cwd / "tree" / "deep" / "f.txt").write_text("f")

    def work():
        shutil.copyfile("src.txt", "dst.txt")
        shutil.copy2("src.txt", "dst2.txt")
        shutil.rmtree("tree")

    events, _ = capture(work)
    r = ev_mod.reduce(events)
    assert {os.path.basename(p) for p in r.inputs} == {"src.txt"}
    assert {os.path.basename(p) for p in r.outputs} == {"dst.txt", "dst2.txt"}
    assert str(cwd / "tree" / "deep" / "f.txt") in r.deleted


def test_remove_relative_to_dir_fd(cwd):
    (cwd / "d").mkdir()
    (cwd / "d" / "x.txt").write_text("x")
    fd = os.open("d", os.O_RDONLY | os.O_DIRECTORY)
    try:
        events, _ = capture(lambda: os.unlink("x.txt", dir_fd=fd))
    finally:
        os.close(fd)
    assert ops(events, cwd) == [("D", "d/x.txt", None)]


def test_sqlite_connect_is_read_write(cwd):
    sqlite3.connect("old.db").execute("create table t(x)").connection.commit()

    def work():
        sqlite3.connect("old.db").close()
        sqlite3.connect("new.db").close()
        sqlite3.connect(":memory:").close()

    events, _ = capture(work)
    assert [(op, p) for op, p, _ in ops(events, cwd) if p.endswith(".db")] == [("U", "old.db"), ("W", "new.db")]


def test_dormant_outside_the_window_and_threads_inside_it(cwd):
    open("before.txt", "w").write("b")
    go = threading.Event()
    done = threading.Event()

    def late():
        go.wait()
        open("late.txt", "w").write("l")
        done.set()

    t = threading.Thread(target=late)
    t.start()

    def work():
        th = threading.Thread(target=lambda: open("thread.txt", "w").write("t"))
        th.start()
        th.join()

    events, _ = capture(work)
    go.set()
    done.wait(5)
    t.join()
    assert ops(events, cwd) == [("W", "thread.txt", None)]
    assert not audit.active()


def test_subprocess_with_own_environment_is_a_note(cwd):
    def work():
        subprocess.run([sys.executable, "-c", "pass"], env={"PATH": os.environ.get("PATH", "")})
        subprocess.run([sys.executable, "-c", "pass"])

    events, notes = capture(work)
    assert [e.op for e in events if e.path == sys.executable] == ["X", "X"]
    assert len(notes) == 1 and "own environment" in notes[0]


def test_hook_errors_never_reach_the_program(cwd):
    # sqlite3.connect hands the hook the caller's own path object: one that fails only when
    # the hook looks at it makes the hook itself fail, while the program's connect succeeds.
    hook_looks = []

    class Flaky(os.PathLike):
        def __fspath__(self):
            if sys._getframe(1).f_code.co_filename == audit.__file__:
                hook_looks.append(1)
                raise RuntimeError("not for the hook")
            return str(cwd / "data.db")

    got = []

    def work():
        con = sqlite3.connect(Flaky())
        con.execute("CREATE TABLE t(x)")
        con.execute("INSERT INTO t VALUES (42)")
        con.commit()
        got.extend(con.execute("SELECT x FROM t").fetchall())
        con.close()

    events, notes = capture(work)
    assert got == [(42,)] and hook_looks  # the program's result, and the hook did fail
    assert ops(events, cwd) == []
    assert notes == ["python-level capture failed on a sqlite3.connect event (RuntimeError): "
                     "that operation's file I/O was not seen"]


# --- through a real IPython shell ------------------------------------------------------------

@pytest.fixture(scope="module")
def shell(tmp_path_factory):
    from IPython.core.interactiveshell import InteractiveShell

    d = tmp_path_factory.mktemp("nb")
    old = os.getcwd()
    os.chdir(d)
    ip = InteractiveShell.instance()
    ip.run_cell("%load_ext roar")
    yield ip, d
    ip.run_cell("%unload_ext roar")
    os.chdir(old)


def last_job(d):
    from roar_nb.session import Project

    jobs = Project(d).store.jobs()
    return jobs[-1], len(jobs)


def test_shell_cell_job_and_kernel_files_excluded(shell, capsys):
    ip, d = shell
    ip.run_cell("open('data.csv', 'w').write('a,b\\n1,2\\n')")
    cell = ("%%roar\n"
            "import os\n"
            "rows = open('data.csv').read()\n"
            "open('features.txt', 'w').write(rows.upper())\n"
            "open(os.path.join(get_ipython().ipython_dir, 'roar-test-scratch'), 'w').write('k')\n"
            "open(os.path.join('.roar', 'scratch'), 'w').write('r')\n")
    r = ip.run_cell(cell, cell_id="cell-1")
    assert r.success
    job, n = last_job(d)
    assert (job.kind, job.step, job.cell_id, job.status) == ("cell", "cell-1", "cell-1", "ok")
    assert (job.backend, job.capture_level) in {("audit", "python-only"), ("preload", "complete")}
    assert [os.path.basename(e.path) for e in job.inputs] == ["data.csv"]
    # The IPython dir and .roar/ are the kernel's bookkeeping, not the user's I/O.
    assert [os.path.basename(e.path) for e in job.outputs] == ["features.txt"]
    assert job.source == cell
    out = capsys.readouterr().out
    assert "roar @" in out and "1 in, 1 out (features.txt " in out


def test_shell_failing_cell_recorded_exception_shown(shell, capsys):
    ip, d = shell
    r = ip.run_cell("%%roar\nraise KeyError('mine')", cell_id="bad")
    assert isinstance(r.error_in_exec, KeyError)
    job, _ = last_job(d)
    assert job.status == "failed" and job.step == "bad"
    out = capsys.readouterr()
    assert "KeyError" in out.out + out.err and "failed" in out.out


def test_shell_auto_trace_and_usage(shell, capsys):
    ip, d = shell
    _, n0 = last_job(d)
    ip.run_cell("%roar on")
    ip.run_cell("y = 1", cell_id="auto-1")
    ip.run_cell("%roar status")
    ip.run_cell("%roar off")
    ip.run_cell("z = 2", cell_id="auto-2")
    ip.run_cell("%roar nonsense --x")
    job, n = last_job(d)
    assert n == n0 + 1 and job.cell_id == "auto-1"
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("usage: %roar ")
