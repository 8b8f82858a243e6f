"""Worker processes that outlive a cell, through a real roar kernel (nbclient).

A joblib (loky) executor or a `multiprocessing.Pool` (fork and forkserver start
methods) created in one traced cell and used in later ones: each cell must get
exactly the files its own tasks read and wrote, and I/O done by the same workers
while no cell is traced belongs to no job. The workers are the same processes
in every cell (checked through their pids), so this is the long-lived case, not
a fresh pool per cell.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

# Same directory, no package: pytest puts it on sys.path. `kernels` is the fixture.
from test_notebooks import by_cell, dag_json, kernels, make_nb, run, text  # noqa: F401

# The task: read in_<i>.txt, write <tag>_<i>.txt. In a module so that forkserver
# workers can unpickle it (they do not share the notebook's __main__).
WORKER = textwrap.dedent("""
    import os

    def task(arg):
        tag, i = arg
        with open(f"in_{i}.txt") as f:
            data = f.read()
        with open(f"{tag}_{i}.txt", "w") as f:
            f.write(data + tag)
        return os.getpid()
""")

MAKERS = {
    "loky": ("from joblib import Parallel, delayed\n"
             "def use(tag, idx):\n"
             "    return set(Parallel(n_jobs=2)(delayed(wk.task)((tag, i)) for i in idx))\n"),
    "fork": ("import multiprocessing as mp\n"
             "pool = mp.get_context('fork').Pool(2)\n"
             "def use(tag, idx):\n"
             "    return set(pool.map(wk.task, [(tag, i) for i in idx], chunksize=1))\n"),
    "forkserver": ("import multiprocessing as mp\n"
                   "pool = mp.get_context('forkserver').Pool(2)\n"
                   "def use(tag, idx):\n"
                   "    return set(pool.map(wk.task, [(tag, i) for i in idx], chunksize=1))\n"),
}

CELLS = {"c1": (0, 1, 2, 3), "c2": (4, 5), "u": (6,), "c3": (7, 8, 9)}


def data_names(edges) -> set:
    """The task files among a job's edges (the worker module and its bytecode aside)."""
    return {os.path.basename(e["path"]) for e in edges} - {"wk.py"} - {
        n for n in (os.path.basename(e["path"]) for e in edges) if n.endswith(".pyc")}


@pytest.mark.parametrize("method", list(MAKERS))
def test_workers_created_in_one_cell_record_in_later_cells(kernels, tmp_path, method):
    (tmp_path / "wk.py").write_text(WORKER)
    for i in range(10):
        (tmp_path / f"in_{i}.txt").write_text(f"data {i}\n")

    def use(tag):
        return f"pids_{tag} = use({tag!r}, {CELLS[tag]!r})\nprint(sorted(pids_{tag}))"

    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("c1", "import sys; sys.path.insert(0, '.')\nimport wk\n" + MAKERS[method] + use("c1")),
        ("c2", use("c2")),
        ("off", "%roar off"),
        ("u", use("u")),
        ("on", "%roar on"),
        ("c3", use("c3")),
        ("off2", "%roar off"),
        ("reuse", "print('reused', bool(pids_c3 & (pids_c1 | pids_c2)), bool(pids_c2 & pids_c1))"),
    ])
    out = run(nb, tmp_path, "roar")
    for cid in ("c1", "c2", "u", "c3"):
        assert "Error" not in text(out[cid]), text(out[cid])
    assert (tmp_path / "c3_9.txt").read_text() == "data 9\nc3"
    # Same worker processes in the later cells as in the first one.
    assert "reused True True" in text(out["reuse"]), text(out["reuse"])

    jobs = by_cell(dag_json(tmp_path))
    assert set(jobs) == {"c1", "c2", "c3"}
    for cid in ("c1", "c2", "c3"):
        j = jobs[cid]
        assert data_names(j["outputs"]) == {f"{cid}_{i}.txt" for i in CELLS[cid]}, (cid, j["outputs"])
        assert data_names(j["inputs"]) == {f"in_{i}.txt" for i in CELLS[cid]}, (cid, j["inputs"])
        assert (j["backend"], j["capture_level"]) == ("preload", "complete"), j["capture_notes"]
    # The untraced cell's writes (same workers, between traced cells) belong to no job.
    assert not any(n.startswith("u_") for j in jobs.values() for e in j["outputs"]
                   for n in [os.path.basename(e["path"])])


@pytest.mark.parametrize("method", ["fork", "forkserver"])
def test_workers_created_before_the_extension_loads(kernels, tmp_path, method):
    """The kernel hosts the control block from its start (the kernelspec asks for it), so a
    pool made before `%load_ext roar` still records into the traced cells that use it."""
    (tmp_path / "wk.py").write_text(WORKER)
    for i in range(10):
        (tmp_path / f"in_{i}.txt").write_text(f"data {i}\n")
    nb = make_nb([
        ("pool", "import sys; sys.path.insert(0, '.')\nimport wk\n" + MAKERS[method]
         + "print(sorted(use('p', (0, 1))))"),
        ("load", "%load_ext roar\n%roar on"),
        ("c1", "print(sorted(use('c1', (2, 3, 4))))"),
    ])
    out = run(nb, tmp_path, "roar")
    assert "Error" not in text(out["c1"]), text(out["c1"])
    jobs = by_cell(dag_json(tmp_path))
    assert data_names(jobs["c1"]["outputs"]) == {"c1_2.txt", "c1_3.txt", "c1_4.txt"}
    assert data_names(jobs["c1"]["inputs"]) == {"in_2.txt", "in_3.txt", "in_4.txt"}


def test_control_block_is_removed_with_the_kernel_dir(kernels, tmp_path):
    """The control page lives in the kernel's private runtime dir and goes with it."""
    nb = make_nb([
        ("load", "%load_ext roar\n%roar on"),
        ("where", "import os\nprint('CONTROL', os.environ.get('ROAR_CONTROL'))"),
        ("unload", "%unload_ext roar\nprint('GONE', os.path.exists(os.environ.get('ROAR_CONTROL') or '/nonexistent'),"
                   " 'ROAR_CONTROL' in os.environ)"),
    ])
    out = run(nb, tmp_path, "roar")
    where = text(out["where"]).split("CONTROL ", 1)[1].split()[0]
    assert where.startswith(("/dev/shm/roar-kernel-", "/tmp/roar-kernel-")) and where.endswith("/control")
    assert "GONE False False" in text(out["unload"])
    assert not Path(where).exists()
