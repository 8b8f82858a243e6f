"""Notebook capture that says what it did not see (issue 11, notebook items), in real kernels.

Each case runs through nbclient in the roar kernel (preload dormant) and/or the
plain python3 kernel (audit hook): files opened before the traced cell, threads
that outlive their cell, `%%roar` in front of another cell magic, directory
renames and forks under python-level capture, one session per kernel start,
trace directories that do not outlive their kernel or run, and staleness that is
the same in every view.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_notebooks import by_cell, dag_json, make_nb, names, notebook_sessions, run, store, text

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SHM = Path("/dev/shm")


@pytest.fixture(scope="module")
def kernels(jupyter_kernels):
    return jupyter_kernels


def roar(cwd: Path, *args) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "ROAR_PROJECT"}
    exe = BIN / "roar"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "roar_nb.cli"]
    p = subprocess.run([*cmd, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, (args, p.stdout, p.stderr)
    return p


# --- 1. files opened before the cell ------------------------------------------------------

@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_writes_and_reads_through_descriptors_opened_before_the_cell(kernels, tmp_path, kernel):
    (tmp_path / "data.txt").write_text("0123456789")
    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("open", "fh = open('train.log', 'a'); fh.write('e0;'); fh.flush()\nrf = open('data.txt')"),
        ("write", "fh.write('e1;'); fh.flush()"),
        ("read", "head = rf.read(4)"),
        ("idle", "x = 1"),
        ("close", "fh.write('e2;'); fh.close(); rf.close()"),
    ])
    out = run(nb, tmp_path, kernel)
    jobs = by_cell(dag_json(tmp_path))
    assert (tmp_path / "train.log").read_text() == "e0;e1;e2;"
    assert names(jobs["write"]["outputs"]) == {"train.log"}, text(out["write"])
    assert "1 out" in text(out["write"])
    assert names(jobs["read"]["inputs"]) == {"data.txt"}
    # written after the cell began, closed inside it: still this cell's output
    assert names(jobs["close"]["outputs"]) == {"train.log"}
    # The write cell's train.log is the version after e1; the close cell's is after e2.
    assert jobs["write"]["outputs"][0]["hash"] != jobs["close"]["outputs"][0]["hash"]
    # data.txt was open and readable while `idle` ran: that cannot be known, and it says so.
    assert names(jobs["idle"]["inputs"]) == set() and names(jobs["idle"]["outputs"]) == set()
    assert any("data.txt" in n and "open since before this cell" in n for n in jobs["idle"]["capture_notes"])
    if kernel == "roar":
        # (data.txt is open for reading in every one of these cells: none can be complete)
        assert jobs["idle"]["capture_level"] == jobs["write"]["capture_level"] == "partial"
    assert "open since before this cell" not in " ".join(jobs["open"]["capture_notes"])


@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_sqlite_connection_kept_open_across_cells(kernels, tmp_path, kernel):
    nb = make_nb([
        ("load", "%load_ext roar"),
        ("connect", "import sqlite3\ncon = sqlite3.connect('app.db')\n"
                    "con.execute('create table t(x)'); con.commit()"),
        ("on", "%roar on"),
        ("insert", "con.execute('insert into t values (1)'); con.commit()"),
        ("query", "n = con.execute('select count(*) from t').fetchone()[0]\nprint(n)"),
        ("again", "m = con.execute('select count(*) from t').fetchone()[0]"),
    ])
    out = run(nb, tmp_path, kernel)
    jobs = by_cell(dag_json(tmp_path))
    assert text(out["query"]).splitlines()[0] == "1"
    assert "app.db" in names(jobs["insert"]["outputs"])
    # A read-only query goes through pread: not seen, so not claimed; the cell says so.
    assert any("app.db" in n and "pread" in n for n in jobs["query"]["capture_notes"])
    if kernel == "roar":
        assert jobs["query"]["capture_level"] == "partial"
        assert "partial" in text(out["query"])
        # The same reason in the next cell is said again: it is that cell's too.
        assert "app.db" in text(out["again"]) and "partial" in text(out["again"])


def test_kernel_started_with_its_output_in_a_log_file(kernels, tmp_path):
    """`jupyter lab > server.log 2>&1`: the kernel's stdout/stderr are that file; output a
    cell sends there (C-level prints, warnings) is not a data artifact of the cell."""
    from jupyter_client.manager import start_new_kernel

    log = tmp_path / "server.log"
    with open(log, "w") as f:
        km, kc = start_new_kernel(kernel_name="roar", cwd=str(tmp_path), stdout=f, stderr=f)
    try:
        for code in ("%load_ext roar\n%roar on", "import os; os.write(2, b'to the log'); os.write(1, b'!')",
                     "open('real.txt', 'w').write('r')"):
            reply = kc.execute_interactive(code, output_hook=lambda m: None, timeout=60)
            assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "to the log" in log.read_text()
    outs = {os.path.basename(e.path) for j in store(tmp_path).jobs() for e in j.outputs}
    assert outs == {"real.txt"}
    assert all(j.capture_level == "complete" for j in store(tmp_path).jobs())


# --- 3. threads that outlive their cell ---------------------------------------------------

THREAD_CELLS = [
    ("load", "%load_ext roar\n%roar on"),
    ("start", "import threading\ngo = threading.Event()\n"
              "def logger():\n    go.wait(); open('late.txt', 'w').write('l')\n"
              "t = threading.Thread(target=logger, name='bg-logger'); t.start()"),
    ("later", "go.set(); t.join(); open('own.txt', 'w').write('o')"),
    ("after", "y = 2"),
]


@pytest.mark.parametrize("kernel", ["roar", "python3"])
def test_thread_still_running_after_its_cell_is_named(kernels, tmp_path, kernel):
    run(make_nb(THREAD_CELLS), tmp_path, kernel)
    jobs = by_cell(dag_json(tmp_path))
    start, later = jobs["start"], jobs["later"]
    assert any("bg-logger" in n and "still running at its end" in n for n in start["capture_notes"])
    assert any(f"started by {start['ref']}" in n and "bg-logger" in n for n in later["capture_notes"])
    if kernel == "roar":
        # Native capture traces every thread: the write is counted here, and it says so.
        assert names(later["outputs"]) == {"late.txt", "own.txt"}
        assert start["capture_level"] == later["capture_level"] == "partial"
    else:
        # The audit hook knows which thread did the I/O: not this cell's.
        assert names(later["outputs"]) == {"own.txt"}
        assert any("not counted as this cell's" in n for n in later["capture_notes"])
    # The thread had ended before `after` began: nothing to say there.
    assert not any("thread" in n for n in jobs["after"]["capture_notes"])


def test_audit_thread_of_an_earlier_cell_that_only_renames_is_named(kernels, tmp_path):
    """A rename makes no read/write system call: the hook itself tells that the thread acted."""
    (tmp_path / "a.txt").write_text("a")
    nb = make_nb([("load", "%load_ext roar\n%roar on"),
                  ("start", "import threading, os\ngo = threading.Event(); moved = threading.Event()\n"
                            "stay = threading.Event()\n"
                            "t = threading.Thread(target=lambda: (go.wait(), os.rename('a.txt', 'b.txt'), "
                            "moved.set(), stay.wait()), name='mover'); t.start()"),
                  ("later", "go.set(); moved.wait()"),  # the thread is still alive at the end
                  ("bye", "stay.set(); t.join()")])
    run(nb, tmp_path, "python3")
    later = by_cell(dag_json(tmp_path))["later"]
    assert (tmp_path / "b.txt").exists() and names(later["outputs"]) == set()
    assert any("mover" in n and "not counted as this cell's" in n for n in later["capture_notes"]), later


def test_bash_event_loop_thread_is_not_the_users(kernels, tmp_path):
    nb = make_nb([("load", "%load_ext roar\n%roar on"), ("sh", "%%bash\necho hi > hi.txt"),
                  ("py", "open('p.txt', 'w').write('p')")])
    run(nb, tmp_path, "roar")
    for j in dag_json(tmp_path)["jobs"]:
        assert j["capture_level"] == "complete", j["capture_notes"]


# --- 4. %%roar in front of another cell magic ---------------------------------------------

def test_roar_then_another_cell_magic_runs_traced(kernels, tmp_path):
    nb = make_nb([
        ("load", "%load_ext roar"),
        ("bash", "%%roar\n%%bash\necho hello > from_bash.txt\necho shown"),
        ("time", "%%roar\n%%time\nopen('timed.txt', 'w').write('t')"),
        ("wf", "%%roar\n\n%%writefile written.txt\nline one\n"),
        ("cap", "%%roar\n%%capture captured\nprint('quiet')\nopen('cap.txt', 'w').write('c')"),
        ("check", "print(repr(captured.stdout))"),
    ])
    out = run(nb, tmp_path, "roar")
    for cid in ("bash", "time", "wf", "cap"):
        assert not any(o["output_type"] == "error" for o in out[cid]), text(out[cid])
    assert "shown" in text(out["bash"]) and "Wall time" in text(out["time"])
    assert (tmp_path / "from_bash.txt").read_text() == "hello\n"
    assert (tmp_path / "written.txt").read_text() == "line one\n"
    assert text(out["check"]).strip() == "'quiet\\n'"
    jobs = by_cell(dag_json(tmp_path))
    assert set(jobs) == {"bash", "time", "wf", "cap"}  # one job per cell, the nested run included
    assert names(jobs["bash"]["outputs"]) == {"from_bash.txt"}
    assert names(jobs["time"]["outputs"]) == {"timed.txt"}
    assert names(jobs["wf"]["outputs"]) == {"written.txt"}
    assert names(jobs["cap"]["outputs"]) == {"cap.txt"}
    assert all(j["capture_level"] == "complete" and j["status"] == "ok" for j in jobs.values())


def test_untraced_capture_cell_is_one_preamble_entry(kernels, tmp_path):
    """An untraced `%%capture` cell runs its body through a nested run_cell: the body is
    part of that cell, so a reproduction must not replay it twice."""
    nb = make_nb([("load", "%load_ext roar"), ("bump", "%%capture\nn = globals().get('n', 0) + 1"),
                  ("use", "%%roar\nopen('n.txt', 'w').write(str(n))")])
    run(nb, tmp_path, "roar")
    assert (tmp_path / "n.txt").read_text() == "1"
    (job,) = store(tmp_path).jobs()
    assert job.preamble == "%%capture\nn = globals().get('n', 0) + 1", job.preamble
    r = roar(tmp_path, "reproduce", "n.txt", "--run")
    assert "identical" in r.stdout and "differs" not in r.stdout, r.stdout


# --- 5. python-level capture: directory renames, forks --------------------------------------

def test_audit_directory_rename_keeps_outputs(kernels, tmp_path):
    nb = make_nb([("load", "%load_ext roar\n%roar on"),
                  ("save", "import os\nos.makedirs('ckpt.tmp/sub')\n"
                           "open('ckpt.tmp/a.txt', 'w').write('a')\nopen('ckpt.tmp/sub/b.txt', 'w').write('b')\n"
                           "os.rename('ckpt.tmp', 'ckpt')")])
    run(nb, tmp_path, "python3")
    (job,) = dag_json(tmp_path)["jobs"]
    assert {e["path"] for e in job["outputs"] if e["hash"]} == {
        str(tmp_path / "ckpt" / "a.txt"), str(tmp_path / "ckpt" / "sub" / "b.txt")}


def test_audit_forked_pool_workers_are_captured_or_named(kernels, tmp_path):
    (tmp_path / "in0.txt").write_text("zero")
    nb = make_nb([("load", "%load_ext roar\n%roar on"),
                  ("pool", "import multiprocessing as mp\n"
                           "def w(i):\n    open(f'part{i}.txt', 'w').write(str(i))\n"
                           "    return open('in0.txt').read() if i == 0 else ''\n"
                           "with mp.get_context('fork').Pool(2) as p:\n    print(p.map(w, range(3)))"),
                  ("keep", "import multiprocessing as mp\nkept = mp.get_context('fork').Pool(1)\n"
                           "kept.apply(w, (5,))"),
                  ("bye", "kept.terminate(); kept.join()")])
    out = run(nb, tmp_path, "python3")
    assert "'zero'" in text(out["pool"])
    jobs = by_cell(dag_json(tmp_path))
    # IPython restarts its history thread after a fork: machinery, not a thread of the cell.
    notes = [n for j in jobs.values() for n in j["capture_notes"]]
    assert not any("HistorySaving" in n for n in notes), notes
    assert not any("thread" in n for n in jobs["pool"]["capture_notes"])
    # The kept pool's helper threads (_handle_workers...) only move messages: machinery,
    # never named; what matters, its worker processes, are named below.
    assert not any("_handle_workers" in n for n in notes), notes
    # Written by forked workers (the hook is inherited; they write their events through).
    assert names(jobs["pool"]["outputs"]) == {"part0.txt", "part1.txt", "part2.txt"}
    assert names(jobs["pool"]["inputs"]) == {"in0.txt"}
    assert not any("forked" in n for n in jobs["pool"]["capture_notes"]), jobs["pool"]["capture_notes"]
    # A worker that outlives its cell is named: what it does later is not recorded.
    assert names(jobs["keep"]["outputs"]) == {"part5.txt"}
    assert any("forked during this cell" in n and "still running" in n for n in jobs["keep"]["capture_notes"])


def test_ipython_history_thread_restarted_after_a_fork_is_not_the_users(kernels, tmp_path):
    """IPython stops its history thread before a fork and starts a new one at the next
    cell. (nbclient keeps history in memory, without the thread: a plain client here.)"""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="python3", cwd=str(tmp_path),
                              env={**os.environ, "IPYTHONDIR": str(tmp_path / "ipython")})
    try:
        for code in ("%load_ext roar\n%roar on",
                     "import os\npid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)",
                     "a = 1", "b = 2",
                     "import threading\nprint(sum(t.name == 'IPythonHistorySavingThread' for t in threading.enumerate()))"):
            got = []
            reply = kc.execute_interactive(code, timeout=60, output_hook=lambda m: got.append(
                m["content"].get("text", "")) if m["msg_type"] == "stream" else None)
            assert reply["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    assert "".join(got).startswith("1")  # the thread is there, restarted after the fork
    notes = [n for j in store(tmp_path).jobs() for n in j.capture_notes]
    assert not any("thread" in n for n in notes), notes


# --- 6. one session per kernel start --------------------------------------------------------

def test_each_kernel_start_is_its_own_session(kernels, tmp_path):
    nbpath = str(tmp_path / "work.ipynb")
    cells = [("load", "%load_ext roar\n%roar on"), ("w", "open('o.txt', 'w').write(str(id(object())))")]
    run(make_nb(cells), tmp_path, "roar", env={"ROAR_NOTEBOOK": nbpath})
    again = cells + [("unload", "%unload_ext roar"), ("reload", "%load_ext roar\n%roar on"),
                     ("w2", "open('p.txt', 'w').write('p')")]
    run(make_nb(again), tmp_path, "roar", env={"ROAR_NOTEBOOK": nbpath}, order=[c for c, _ in again])
    sessions = [s for s in store(tmp_path).sessions() if s.session.kind == "notebook"]
    assert len(sessions) == 2 and all(s.session.notebook == nbpath for s in sessions)
    first, second = sorted(sessions, key=lambda s: s.session.created_at)
    assert first.jobs == 1
    # %unload_ext / %load_ext in the same kernel keeps that kernel's session.
    assert second.jobs == 2
    assert [j.cell_id for j in store(tmp_path).jobs(second.session.id)] == ["w", "w2"]


# --- 7. trace directories do not outlive their owner ---------------------------------------

def _dead_pid() -> int:
    p = subprocess.Popen(["true"])
    p.wait()
    return p.pid


def _start_time(pid) -> str:
    data = Path(f"/proc/{pid}/stat").read_bytes()
    return data[data.rindex(b")") + 2:].split()[19].decode()


def test_kernel_trace_dir_removed_at_exit_and_stale_ones_reaped(kernels, tmp_path):
    dead = SHM / f"roar-kernel-{_dead_pid()}-test{os.getpid()}"
    dead.mkdir()
    (dead / "owner").write_text(f"{dead.name.split('-')[2]} 12345")
    (dead / "1").mkdir()
    alive = SHM / f"roar-kernel-{os.getpid()}-test"
    alive.mkdir()
    (alive / "owner").write_text(f"{os.getpid()} {_start_time(os.getpid())}")
    legacy = SHM / f"roar-kernel-legacy{os.getpid()}"
    legacy.mkdir()
    try:
        nb = make_nb([("load", "%load_ext roar\n%roar on"),
                      ("where", "print(get_ipython()._roar_nb_state.capture.trace_base)")])
        out = run(nb, tmp_path, "roar")
        mine = Path(text(out["where"]).split()[0])
        assert mine.parent == SHM
        assert not dead.exists()
        assert alive.exists() and legacy.exists()  # a live owner, or no owner file: left alone
        deadline = time.monotonic() + 60  # the kernel has been asked to shut down: let it exit
        while mine.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not mine.exists()
    finally:
        for d in (dead, alive, legacy):
            subprocess.run(["rm", "-rf", str(d)])


def test_trace_dirs_of_killed_runs_are_reaped(proj):
    base = SHM / f"roar-traces-{os.getuid()}"
    roar(proj.root, "run", "true")  # makes the per-user directory
    orphan = base / f"orphan{os.getpid()}"
    orphan.mkdir()
    (orphan / "owner").write_text(f"{_dead_pid()} 12345")
    (orphan / "1-2.ev").write_bytes(b"")
    unowned = base / f"unowned{os.getpid()}"
    unowned.mkdir()
    try:
        roar(proj.root, "run", "true")
        assert not orphan.exists()
        assert unowned.exists()
    finally:
        for d in (orphan, unowned):
            subprocess.run(["rm", "-rf", str(d)])


def test_reaping_never_follows_a_link(tmp_path):
    """A link named like a trace directory, to a directory with a dead owner: left alone."""
    from roar_nb.capture import events

    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "owner").write_text(f"{_dead_pid()} 12345")
    (victim / "precious.txt").write_text("keep me")
    link = SHM / f"roar-kernel-{os.getpid()}-link"
    link.symlink_to(victim)
    try:
        events.reap_stale(str(SHM), "roar-kernel-")
        assert (victim / "precious.txt").read_text() == "keep me"
    finally:
        link.unlink()


# --- 8. staleness is a fact about the data ------------------------------------------------

def test_cell_made_stale_by_a_later_roar_run_is_stale_in_the_notebook_view(kernels, tmp_path):
    from roar_nb.session import Project

    Project.init(tmp_path)
    roar(tmp_path, "run", "sh", "-c", "echo 1 > in.txt")
    nb = make_nb([
        ("load", "%load_ext roar"),
        ("use", "%%roar\nopen('out.txt', 'w').write(open('in.txt').read() * 2)"),
        ("rewrite", "import subprocess\n"
                    "subprocess.run(['roar', 'run', 'sh', '-c', 'echo 2 > in.txt'], check=True)"),
        ("status", "%roar status"),
    ])
    out = run(nb, tmp_path, "roar", env={"PATH": f"{BIN}:{os.environ['PATH']}"})
    (s,) = notebook_sessions(tmp_path)
    assert "stale      @1" in text(out["status"]), text(out["status"]) + text(out["rewrite"])
    view = json.loads(roar(tmp_path, "dag", "--json", "--session", s.id).stdout)
    everything = json.loads(roar(tmp_path, "dag", "--json", "--all").stdout)
    (cell,) = view["jobs"]
    assert cell["stale"] and "in.txt" in cell["stale"]
    assert cell["stale"] == {j["id"]: j["stale"] for j in everything["jobs"]}[cell["id"]]


def test_reproduce_after_a_kernel_restart_replays_only_that_kernel(kernels, tmp_path):
    """The false `differs` of issue 11: the second kernel's cell ran without the first
    kernel's state; replaying both kernels' cells in one kernel gave another result."""
    nbpath = str(tmp_path / "work.ipynb")
    env = {"ROAR_NOTEBOOK": nbpath}
    run(make_nb([("load", "%load_ext roar\n%roar on"), ("a", "v = 1"),
                 ("b", "open('o.txt', 'w').write('k1')")]), tmp_path, "roar", env=env)
    run(make_nb([("load", "%load_ext roar\n%roar on"),
                 ("c", "v = globals().get('v', 0) + 10\nopen('p.txt', 'w').write(str(v))")]),
        tmp_path, "roar", env=env)
    assert (tmp_path / "p.txt").read_text() == "10"
    r = roar(tmp_path, "reproduce", "p.txt", "--run")
    assert "identical" in r.stdout and "differs" not in r.stdout, r.stdout
    assert (tmp_path / "p.txt").read_text() == "10"
