"""`[ray]` settings on a real local Ray: `ray.transport = actor` forces the task records
through roar's named collector actor instead of the spool directory (the path for a
cluster without a shared filesystem), lost tasks included; `ray.actor_attribution =
per_actor` makes one job of all the calls of one actor."""

import sys

import pytest

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

from tests.ray.test_ray_tasks import jobs  # noqa: E402

SCRIPT = '''
import glob, os
import ray

{init}

@ray.remote
def write(i):
    with open(f"data/t{{i}}.txt", "w") as f:
        f.write(str(i))

@ray.remote(max_retries=0)
def die():
    os._exit(3)

@ray.remote
class Writer:
    def put(self, i):
        with open(f"data/w{{i}}.txt", "w") as f:
            f.write(str(i))

ray.get([write.remote(i) for i in range(4)])
w = Writer.remote()
for i in range(3):
    ray.get(w.put.remote(i))
try:
    ray.get(die.remote())
except ray.exceptions.RayError:
    print("die crashed")
spool = os.environ["ROAR_RAY_SPOOL"]
print("spool files before shutdown:", sorted(os.path.basename(p) for p in glob.glob(spool + "/frag-*")))
ray.shutdown()
print("done")
'''


def test_actor_transport_and_per_actor_attribution(proj, ray_env, ray_tmp, ray_init_line):
    root = proj.root
    (root / "data").mkdir()
    proj.roar("config", "set", "ray.transport", "actor")
    proj.roar("config", "set", "ray.actor_attribution", "per_actor")
    (root / "t.py").write_text(SCRIPT.format(init=ray_init_line(ray_tmp)))
    r = proj.roar("run", sys.executable, "t.py", env=ray_env, check=False)
    out = r.stdout.decode()
    assert r.returncode == 0 and "done" in out and "die crashed" in out, r.stderr.decode()[-3000:]
    # Nothing went through the spool directory while the tasks ran.
    assert "spool files before shutdown: []" in out, out
    js = jobs(root)
    (d,) = [j for j in js if j["kind"] == "run"]
    tasks = [j for j in js if j["kind"] == "ray_task"]
    got = sorted((t["step"], t["status"], tuple(sorted(t["outs"]))) for t in tasks)
    assert got == sorted([*[("t.write", "ok", (f"data/t{i}.txt",)) for i in range(4)],
                          ("t.Writer", "ok", ("data/w0.txt", "data/w1.txt", "data/w2.txt")),
                          ("t.die", "lost", ())]), got
    assert all(t["parent_job_id"] == d["id"] for t in tasks)
    (w,) = [t for t in tasks if t["step"] == "t.Writer"]
    assert "3 method call(s) of one actor" in w["capture_notes"]
    assert d["capture_level"] == "partial" and "1 Ray task(s) lost" in d["capture_notes"]
    # roar's own collector is not a task of the user's.
    assert not [t for t in tasks if "roar" in t["step"].lower() or "Collector" in t["step"]]


def test_ray_settings_are_validated(proj):
    r = proj.roar("config", "set", "ray.transport", "pigeon", check=False)
    assert r.returncode != 0 and b"ray.transport must be one of auto, spool, actor" in r.stderr
    assert len(r.stderr.decode().strip().splitlines()) == 1
    r = proj.roar("config", "set", "ray.actor_attribution", "per_thread", check=False)
    assert r.returncode != 0 and b"per_call, per_actor" in r.stderr
    (proj.root / ".roar" / "config.toml").write_text('[ray]\ntransport = "carrier"\n')
    r = proj.roar("config", "list")  # a bad value in the file: the default, and one warning line
    assert b"ray.transport must be one of auto, spool, actor, got 'carrier'; using the default" in r.stderr
    assert [ln for ln in r.stdout.decode().splitlines() if "ray.transport" in ln][0].split()[1] == '"auto"'


STATE = '''
import os, socket, time
import ray
from ray.util.state import list_tasks

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
ray.init(address="local", num_cpus=2, object_store_memory=128 * 1024 * 1024, include_dashboard=True,
         dashboard_host="127.0.0.1", dashboard_port=port, _temp_dir={tmp!r})

@ray.remote
def seen():
    with open("data/seen.txt", "w") as f:
        f.write("s")

# Its worker gets no spool: roar's hook stays out of it, so roar never hears of this task.
@ray.remote(runtime_env={{"env_vars": {{"ROAR_RAY_SPOOL": ""}}}})
def unseen():
    with open("data/unseen.txt", "w") as f:
        f.write("u")

ray.get([seen.remote(), unseen.remote()])
for _ in range(120):  # Ray's task events reach the state API with a lag
    if sum(t.state == "FINISHED" for t in list_tasks(filters=[("job_id", "=", ray.get_runtime_context().get_job_id())])) >= 2:
        break
    time.sleep(0.5)
ray.shutdown()
print("done")
'''


def test_state_api_cross_check_finds_a_task_that_never_reported(proj, ray_env, ray_tmp):
    root = proj.root
    (root / "data").mkdir()
    (root / "s.py").write_text(STATE.format(tmp=ray_tmp))
    r = proj.roar("run", sys.executable, "s.py", env=ray_env, check=False)
    assert r.returncode == 0 and b"done" in r.stdout, r.stderr.decode()[-3000:]
    js = jobs(root)
    (d,) = [j for j in js if j["kind"] == "run"]
    tasks = {t["step"]: t for t in js if t["kind"] == "ray_task"}
    # The state API names the function without its module.
    assert sorted(tasks) == ["s.seen", "unseen"], sorted(tasks)
    assert tasks["s.seen"]["status"] == "ok" and sorted(tasks["s.seen"]["outs"]) == ["data/seen.txt"]
    u = tasks["unseen"]
    assert u["status"] == "lost" and u["outs"] == {} and "state API reports this task FINISHED" in u["capture_notes"]
    assert d["capture_level"] == "partial" and "Ray's state API reports as run" in d["capture_notes"]
