"""`roar run ray job submit --address http://127.0.0.1:PORT --runtime-env-json '{"working_dir": "."}'
-- python pipeline.py` against a `ray start --head` cluster of this module (every listener on
127.0.0.1, checked; stopped afterwards): the job's tasks are `ray_task` jobs whose parent is
the submitting job, paths in Ray's extracted copy of the working_dir are mapped back to the
host's, and `.roar/` is not uploaded."""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import pytest

pytest.importorskip("ray", reason="the `ray` extra is not installed (pip install -e '.[test]')")
pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

from tests.ray.conftest import RAY_ENV  # noqa: E402
from tests.ray.test_ray_tasks import jobs  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pids_with(text: str) -> set:
    """Processes whose command line names `text` (the cluster's own temp dir: ours only)."""
    out = set()
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/cmdline", "rb") as f:
                    if text.encode() in f.read():
                        out.add(int(p))
            except OSError:
                pass
    return out


@pytest.fixture(scope="module")
def cluster():
    tmp = tempfile.mkdtemp(prefix="rc-", dir="/tmp")  # short: socket paths go under it
    gcs, dash, client = _free_port(), _free_port(), _free_port()
    env = {**os.environ, **RAY_ENV, "TMPDIR": tmp,
           "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           # The cluster's Python imports this tree's roar_nb (roar-nb installed where Ray runs).
           "PYTHONPATH": os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    for k in ("LD_PRELOAD", "ROAR_TRACE_DIR", "ROAR_CONTROL", "RAY_RUNTIME_ENV_HOOK", "ROAR_RAY_SPOOL"):
        env.pop(k, None)
    ray = os.path.join(os.path.dirname(sys.executable), "ray")
    proc = subprocess.Popen(
        [ray, "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={gcs}",
         "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
         "--num-cpus=2", f"--object-store-memory={128 * 1024 * 1024}", f"--temp-dir={tmp}",
         "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{dash}"
    try:
        for _ in range(240):  # the job API answers once the dashboard is up
            try:
                urllib.request.urlopen(url + "/api/version", timeout=2).read()
                break
            except OSError:
                assert proc.poll() is None, "ray start --head exited"
                time.sleep(0.5)
        else:
            raise AssertionError("the Ray dashboard never answered")
        yield {"url": url, "tmp": tmp}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for pid in _pids_with(tmp):  # daemons of this cluster that did not drain
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)


PIPELINE = '''
import os
import ray

ray.init()

@ray.remote
def prep(src, dst):
    with open(src) as f:
        t = f.read()
    with open(dst, "w") as f:
        f.write(t.upper())

@ray.remote
def count(src):
    with open(src) as f:
        return len(f.read())

ray.get(prep.remote("data/in.txt", "data/out.txt"))
print("count", ray.get(count.remote("data/out.txt")))
print("roar dir uploaded:", os.path.exists(".roar"), "pipeline here:", os.path.exists("pipeline.py"))
with open("data/out.txt") as f, open("data/summary.txt", "w") as g:  # the entrypoint's own I/O
    g.write(str(len(f.read())))
'''


def test_job_submit_tasks_mapped_to_host(proj, cluster):
    root = proj.root
    (root / "data").mkdir()
    (root / "data" / "in.txt").write_text("hello\n")
    (root / "pipeline.py").write_text(PIPELINE)
    # .roar/ has a .gitignore of its own: without this, Ray's upload would skip it anyway.
    env = {**RAY_ENV, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "RAY_RUNTIME_ENV_IGNORE_GITIGNORE": "1"}
    r = proj.roar("run", "ray", "job", "submit", "--address", cluster["url"],
                  "--runtime-env-json", '{"working_dir": "."}', "--", "python", "pipeline.py", env=env, check=False)
    out = r.stdout.decode()
    assert r.returncode == 0, (out[-3000:], r.stderr.decode()[-3000:])
    assert "count 6" in out and "roar dir uploaded: False pipeline here: True" in out, out[-3000:]

    # Every listener of the cluster is on loopback.
    pids = _pids_with(cluster["tmp"])
    ss = subprocess.run(["ss", "-Hltnp"], capture_output=True, text=True).stdout.splitlines()
    addrs = [ln.split()[3] for ln in ss if any(f"pid={p}," in ln for p in pids)]
    assert len(addrs) >= 3, (pids, ss)
    assert all(a.rsplit(":", 1)[0] in ("127.0.0.1", "[::1]", "[::ffff:127.0.0.1]") for a in addrs), addrs

    js = jobs(root)
    (d,) = [j for j in js if j["kind"] == "run"]
    assert d["command"].startswith("ray job submit") and '{"working_dir": "."}' in d["command"]
    tasks = sorted((j for j in js if j["kind"] == "ray_task"), key=lambda j: j["step"])
    assert [t["step"] for t in tasks] == ["entrypoint pipeline.py", "pipeline.count", "pipeline.prep"], \
        [t["step"] for t in tasks]
    assert all(t["parent_job_id"] == d["id"] and t["status"] == "ok" for t in tasks)
    entry, count, prep = tasks
    from roar_nb.hashing import hash_bytes

    # Paths in Ray's extracted copy of the working_dir are the host's paths.
    assert prep["ins"] == {"data/in.txt": hash_bytes(b"hello\n")}, prep["ins"]
    assert prep["outs"] == {"data/out.txt": hash_bytes(b"HELLO\n")}, prep["outs"]
    assert count["ins"] == {"data/out.txt": hash_bytes(b"HELLO\n")}, count["ins"]
    import sqlite3

    db = sqlite3.connect(os.path.join(root, ".roar", "roar.db"))
    (note,) = db.execute("SELECT note FROM job_io WHERE job_id = ? AND direction = 'out'", (prep["id"],)).fetchone()
    assert "Ray's copy of the working_dir" in note and "/working_dir_files/" in note
    # The host's own file was not written by the job (the write happened in Ray's copy).
    assert not (root / "data" / "out.txt").exists()
    # The entrypoint (the job's driver, on the cluster): a child job with its own I/O, mapped too.
    # (from its ray.init() on: the script itself was read before, as it started)
    assert entry["ins"] == {"data/out.txt": hash_bytes(b"HELLO\n")}, entry["ins"]
    assert "from its ray.init() to its exit" in entry["capture_notes"]
    assert entry["outs"] == {"data/summary.txt": hash_bytes(b"6")}, entry["outs"]
    assert entry["capture_level"] == "complete" and entry["seq"] == d["seq"] + 1
    # The submitting job: no Ray files, and nothing said missing.
    assert d["capture_level"] == "complete", d["capture_notes"]
    assert not [p for p in {**d["ins"], **d["outs"]} if p.startswith((cluster["tmp"], "/tmp/ray", "/dev/shm"))]
    assert not [p for p in {**d["ins"], **d["outs"]} if p.startswith(".roar")]
