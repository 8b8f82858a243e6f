"""Attribution per actor method call and per generator task, under `roar run` with a real
local Ray: calls of a sync actor, overlapping calls of a threaded and of an async actor
(each its own job, never merged: python-level capture, said), a streaming generator task
(one job holding what its body wrote), a thread that outlives its call (not attributed to
the next call of that worker), and a task whose runtime_env overrides `env_vars`."""

import sys

import pytest

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

from tests.ray.test_ray_tasks import jobs  # noqa: E402

SCRIPT = '''
import asyncio, os, threading, time
import ray

{init}

@ray.remote
class Sync:
    def put(self, i):
        with open(f"data/sync{{i}}.txt", "w") as f:
            f.write(str(i))

@ray.remote(max_concurrency=2)
class Threaded:
    def slow(self, i):
        with open("data/in.txt") as f:
            f.read()
        time.sleep(1.5)
        with open(f"data/thr{{i}}.txt", "w") as f:
            f.write(str(i))

@ray.remote
class Async:
    async def aput(self, i):
        await asyncio.sleep(1.0)
        with open(f"data/async{{i}}.txt", "w") as f:
            f.write(str(i))

@ray.remote
def gen(n):
    for i in range(n):
        with open(f"data/gen{{i}}.txt", "w") as f:
            f.write(str(i))
        yield i

@ray.remote
class Lingerer:
    def start(self):
        def later():
            time.sleep(1.0)
            with open("data/late.txt", "w") as f:
                f.write("late")
        threading.Thread(target=later).start()

    def next(self):
        with open("data/next.txt", "w") as f:
            f.write("n")
        time.sleep(2.5)

@ray.remote(runtime_env={{"env_vars": {{"MY_VAR": "mine"}}}})
def envtask():
    with open("data/env.txt", "w") as f:
        f.write(os.environ["MY_VAR"])

s = Sync.remote()
for i in range(3):
    ray.get(s.put.remote(i))
t = Threaded.remote()
ray.get([t.slow.remote(0), t.slow.remote(1)])
a = Async.remote()
ray.get([a.aput.remote(i) for i in range(3)])
print("gen", [ray.get(r) for r in gen.remote(3)])
l = Lingerer.remote()
ray.get(l.start.remote())
ray.get(l.next.remote())
ray.get(envtask.remote())
ray.shutdown()
print("done")
'''


def test_calls_are_told_apart(proj, ray_env, ray_tmp, ray_init_line):
    root = proj.root
    (root / "data").mkdir()
    (root / "data" / "in.txt").write_text("in")
    (root / "actors.py").write_text(SCRIPT.format(init=ray_init_line(ray_tmp)))
    r = proj.roar("run", sys.executable, "actors.py", env=ray_env, check=False)
    out = r.stdout.decode()
    assert r.returncode == 0 and "done" in out and "gen [0, 1, 2]" in out, r.stderr.decode()[-3000:]
    js = jobs(root)
    (d,) = [j for j in js if j["kind"] == "run"]
    tasks = [j for j in js if j["kind"] == "ray_task"]
    assert all(t["parent_job_id"] == d["id"] and t["status"] == "ok" for t in tasks)
    got = sorted((t["step"], tuple(sorted(t["outs"])), t["capture_level"]) for t in tasks)
    assert got == sorted([
        *[("actors.Sync.put", (f"data/sync{i}.txt",), "complete") for i in range(3)],
        *[("actors.Threaded.slow", (f"data/thr{i}.txt",), "python-only") for i in range(2)],
        *[("actors.Async.aput", (f"data/async{i}.txt",), "python-only") for i in range(3)],
        ("actors.gen", ("data/gen0.txt", "data/gen1.txt", "data/gen2.txt"), "complete"),
        ("actors.Lingerer.start", (), "complete"),
        ("actors.Lingerer.next", ("data/next.txt",), "partial"),
        ("actors.envtask", ("data/env.txt",), "complete"),
    ]), (got, [(t["step"], t["capture_notes"]) for t in tasks if "Lingerer" in t["step"]])
    by = {}
    for t in tasks:
        by.setdefault(t["step"], []).append(t)
    assert all("same time as another call" in t["capture_notes"]
               for t in by["actors.Threaded.slow"] + by["actors.Async.aput"])
    assert all(sorted(t["ins"]) == ["data/in.txt"] for t in by["actors.Threaded.slow"])
    (start,) = by["actors.Lingerer.start"]
    (nxt,) = by["actors.Lingerer.next"]
    assert "still running when it ended" in start["capture_notes"]
    assert "started by an earlier call" in nxt["capture_notes"]
    assert (root / "data" / "late.txt").read_text() == "late" and (root / "data" / "env.txt").read_text() == "mine"
