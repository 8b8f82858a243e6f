"""Ray tasks started from notebook cells, in a real roar kernel (nbclient): `ray.init()` in
one traced cell, tasks in two later traced cells. Each task is a `ray_task` job whose parent
is the cell it started in (a task still running when its cell ends is recorded by the next
traced cell, still as the child of its own cell, with a note); no cell holds Ray's own
files, and the daemons Ray started do not follow the kernel's cells."""

import pytest

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[test]')")
pytest.importorskip("nbclient")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

from tests.integration.test_notebooks import make_nb, run, text  # noqa: E402
from tests.ray.test_ray_tasks import jobs  # noqa: E402

INIT = '''%%roar
import os, time
import ray
{init}

@ray.remote
def write(tag, i):
    with open(f"data/{{tag}}{{i}}.txt", "w") as f:
        f.write(tag * (i + 1))

@ray.remote
def slow():
    with open("data/started.txt", "w") as f:
        f.write("s")
    time.sleep(4)
    with open("data/late.txt", "w") as f:
        f.write("late")
print("ray up")
'''

FIRST = '''%%roar
late = slow.remote()
for _ in range(600):  # the slow task has started (in this cell's window)
    if os.path.exists("data/started.txt"):
        break
    time.sleep(0.1)
ray.get([write.remote("b", i) for i in range(3)])
print("first done")
'''

SECOND = '''%%roar
ray.get([write.remote("c", i) for i in range(2)])
ray.get(late)
time.sleep(0.5)
print("second done")
'''

DOWN = '''%%roar
ray.shutdown()
print("down")
'''


def test_cell_tasks_are_children_of_their_cells(jupyter_kernels, tmp_path, ray_env, ray_tmp, ray_init_line):
    root = tmp_path / "nb"
    (root / "data").mkdir(parents=True)
    from tests.conftest import Proj

    Proj(root).roar("init", "-n")
    nb = make_nb([("load", "%load_ext roar"), ("init", INIT.format(init=ray_init_line(ray_tmp))),
                  ("first", FIRST), ("second", SECOND), ("down", DOWN)])
    out = run(nb, root, "roar", env=ray_env)
    assert "ray up" in text(out["init"]) and "first done" in text(out["first"]), out
    assert "second done" in text(out["second"]) and "down" in text(out["down"]), out

    js = jobs(root)
    cells = {j["cell_id"]: j for j in js if j["kind"] == "cell"}
    assert sorted(cells) == ["down", "first", "init", "second"]
    tasks = [j for j in js if j["kind"] == "ray_task"]
    kids = {cid: sorted(sorted(t["outs"]) for t in tasks if t["parent_job_id"] == c["id"])
            for cid, c in cells.items()}
    assert kids == {
        "init": [], "down": [],
        "first": [["data/b0.txt"], ["data/b1.txt"], ["data/b2.txt"], ["data/late.txt", "data/started.txt"]],
        "second": [["data/c0.txt"], ["data/c1.txt"]],
    }, (kids, [(t["step"], t["parent_job_id"], sorted(t["outs"]), t["capture_notes"]) for t in tasks],
        {c: (j["id"], j["capture_notes"], j["started_at"], j["ended_at"]) for c, j in cells.items()})
    assert len(tasks) == 6 and all(t["status"] == "ok" and t["capture_level"] == "complete" for t in tasks)
    (late,) = [t for t in tasks if "data/late.txt" in t["outs"]]
    assert "ended after the cell it started in" in late["capture_notes"]
    assert "still running when this cell ended" in cells["first"]["capture_notes"]
    assert late["ended_at"] > cells["first"]["ended_at"]
    # No cell holds Ray's files (its temp dir, the object store) or the workers' writes.
    for cid, c in cells.items():
        paths = {**c["ins"], **c["outs"]}
        assert not [p for p in paths if p.startswith((ray_tmp, "/tmp/ray", "/dev/shm"))], (cid, paths)
        assert not [p for p in c["outs"] if p.startswith("data/")], (cid, c["outs"])
