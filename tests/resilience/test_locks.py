"""Item 10 of issue 12: another process holds a write transaction on roar.db.

`roar run` pays the busy timeout at most once (it used to pay it for the hash cache,
then again for the job), keeps the job pending and says so; a traced notebook cell
never waits for the lock: its job goes to pending/ at once, the user is told once, and
the jobs are stored, in order, as soon as the database takes writes again.
"""

from __future__ import annotations

import time

import nbformat
from nbclient import NotebookClient

from _faults import LockHolder, db_jobs, env, pending, roar, roar_lines

BUSY = 8.0  # seconds: ROAR_BUSY_TIMEOUT for these runs


def test_busy_timeout_is_paid_once(proj):
    (proj.root / "in.txt").write_text("input\n")  # something to hash: the cache write used to wait too
    db = proj.root / ".roar" / "roar.db"
    with LockHolder(db):
        t0 = time.monotonic()
        r = roar(["run", "-q", "sh", "-c", "cat in.txt > out.txt"], proj.root,
                 extra_env={"ROAR_BUSY_TIMEOUT": BUSY})
        elapsed = time.monotonic() - t0
    assert r.returncode == 0 and r.stdout == b""
    assert roar_lines(r.stderr) == r.stderr.splitlines() and len(r.stderr.splitlines()) == 1
    assert r.stderr.startswith(b"roar: job kept in pending (") and b"locked by another process" in r.stderr
    # One wait of BUSY seconds plus start-up; two waits would be 2 x BUSY. (A generous bound
    # on the property under test, not a performance figure.)
    assert BUSY <= elapsed < 1.75 * BUSY, elapsed
    assert len(pending(proj.root)) == 1 and db_jobs(proj.root) == []
    r = roar(["log"], proj.root)  # the lock is gone: the next command stores the job
    assert r.returncode == 0 and pending(proj.root) == []
    assert db_jobs(proj.root) == [(1, "sh -c 'cat in.txt > out.txt'", 0)]


def test_pending_files_do_not_multiply_the_wait(proj):
    """Five jobs already pending + a held lock: opening the store tries them once, not five times."""
    db = proj.root / ".roar" / "roar.db"
    with LockHolder(db):
        for i in range(5):
            r = roar(["run", "-q", "true"], proj.root, extra_env={"ROAR_BUSY_TIMEOUT": 0.3})
            assert r.returncode == 0
        assert len(pending(proj.root)) == 5
        t0 = time.monotonic()
        r = roar(["run", "-q", "true"], proj.root, extra_env={"ROAR_BUSY_TIMEOUT": BUSY})
        elapsed = time.monotonic() - t0
    assert r.returncode == 0 and b"job kept in pending" in r.stderr
    assert elapsed < 1.75 * BUSY, elapsed
    assert len(pending(proj.root)) == 6
    roar(["status"], proj.root)
    assert pending(proj.root) == [] and [j[0] for j in db_jobs(proj.root)] == [1, 2, 3, 4, 5, 6]


def _text(outputs) -> str:
    return "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")


def test_traced_cell_never_waits_for_the_lock(proj, jupyter_kernels):
    cells = ["%load_ext roar",
             "%%roar\nopen('a.txt', 'w').write('1')",
             "%%roar\nopen('b.txt', 'w').write(open('a.txt').read())",
             "%%roar\nopen('c.txt', 'w').write('3')",
             "%%roar\nopen('d.txt', 'w').write('4')"]
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    # Far longer than the client's per-cell timeout: a cell that waits for the lock fails.
    kenv = env(ROAR_BUSY_TIMEOUT=600)
    client = NotebookClient(nb, kernel_name="roar", timeout=60, resources={"metadata": {"path": str(proj.root)}})
    with client.setup_kernel(env=kenv):
        client.execute_cell(nb.cells[0], 0)
        client.execute_cell(nb.cells[1], 1)
        assert "roar @1" in _text(nb.cells[1].outputs)
        with LockHolder(proj.root / ".roar" / "roar.db"):
            client.execute_cell(nb.cells[2], 2)
            client.execute_cell(nb.cells[3], 3)
            assert len(pending(proj.root)) == 2
        client.execute_cell(nb.cells[4], 4)  # free again: pending cells first, then this one
    said = _text(nb.cells[2].outputs) + _text(nb.cells[3].outputs)
    assert said.count("kept in .roar/pending/") == 1, said
    assert "roar @" not in said and "Traceback" not in said
    assert "roar @4" in _text(nb.cells[4].outputs)
    assert pending(proj.root) == []
    jobs = proj.dag("--all")["jobs"]
    assert [(j["seq"], j["source"].splitlines()[1]) for j in jobs] == [(i, cells[i].splitlines()[1]) for i in range(1, 5)]
