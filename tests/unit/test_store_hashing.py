"""Store, hashing cache, config and DAG logic against a real SQLite file."""

import os
import sqlite3
import threading

import blake3
import pytest

from roar_nb import config as cfg_mod
from roar_nb import dag as dag_mod
from roar_nb.errors import AmbiguousRef, ConfigError
from roar_nb.hashing import hash_paths
from roar_nb.model import Edge, Job
from roar_nb.resolve import resolve_artifact
from roar_nb.session import Project
from roar_nb.store import schema


def mkjob(session_id, n, ins=(), outs=(), step=None, kind="run"):
    return Job(id=f"job{n:04d}", session_id=session_id, seq=0, kind=kind, step=step or f"s{n}",
               command=f"cmd {n}", cwd="/w", started_at=float(n), ended_at=float(n) + 0.5,
               exit_code=0, status="ok", backend="preload", capture_level="complete",
               inputs=tuple(Edge("in", p, h, 1) for p, h in ins),
               outputs=tuple(Edge("out", p, h, 1) for p, h in outs))


@pytest.fixture
def project(tmp_path):
    p, created = Project.init(tmp_path)
    assert created
    return p


def test_schema_is_migrated_and_wal(project):
    conn = sqlite3.connect(os.path.join(project.roar_dir, "roar.db"))
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"jobs", "artifacts", "job_io", "sessions", "labels", "env_vars", "hash_cache",
            "environments", "artifact_digests", "meta"} <= tables


def test_seq_numbering_separates_builds_and_is_concurrent(project):
    store = project.store
    s = store.active_session()
    assert store.insert_job(mkjob(s.id, 1)).ref == "@1"
    assert store.insert_job(mkjob(s.id, 2, kind="build")).ref == "@B1"
    assert store.insert_job(mkjob(s.id, 3)).ref == "@2"

    def worker(k):
        st = Project(project.root).store
        for i in range(10):
            st.insert_job(mkjob(s.id, 100 + k * 10 + i))

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    seqs = sorted(j.seq for j in store.jobs(s.id) if j.kind == "run")
    assert seqs == list(range(1, 43))


def test_every_field_of_a_job_round_trips(project):
    """What insert_job is given is what job() returns: no field is dropped on the way (a job's
    parent, once, was)."""
    from roar_nb.model import replace

    store = project.store
    s = store.active_session()
    parent = store.insert_job(mkjob(s.id, 1))
    child = replace(mkjob(s.id, 2, ins=[("/w/a", "a" * 64)], outs=[("/w/b", "b" * 64)], kind="ray_task"),
                    parent_job_id=parent.id, argv=("python", "x.py"), capture_notes=("a note",),
                    source="x = 1", preamble="import os", notebook="/w/nb.ipynb", cell_id="c1",
                    execution_count=3, kernel_id="k", git_commit="c" * 40, git_branch="main", git_dirty=True,
                    git_root="/w")
    stored = store.insert_job(child)
    assert store.job(child.id) == stored
    assert stored.parent_job_id == parent.id


def test_hash_cache_reused_and_invalidated(project, tmp_path):
    f = tmp_path / "data.bin"
    f.write_bytes(b"x" * 5000)
    r1 = hash_paths([str(f)], store=project.store)[str(f)]
    assert r1.hash == blake3.blake3(b"x" * 5000).hexdigest()
    rows = project.store.conn.execute("SELECT count(*) FROM hash_cache").fetchone()[0]
    assert rows == 1
    f.write_bytes(b"y" * 5000)
    r2 = hash_paths([str(f)], store=project.store)[str(f)]
    assert r2.hash == blake3.blake3(b"y" * 5000).hexdigest()


def test_large_file_parallel_hash(tmp_path):
    big = tmp_path / "big"
    data = os.urandom(3 << 20)
    big.write_bytes(data)
    small = tmp_path / "small"
    small.write_bytes(b"s")
    res = hash_paths([str(big), str(small), str(tmp_path / "missing")], extra=("sha256",))
    assert res[str(big)].hash == blake3.blake3(data).hexdigest()
    import hashlib
    assert res[str(big)].digests["sha256"] == hashlib.sha256(data).hexdigest()
    assert res[str(tmp_path / "missing")].hash is None and res[str(tmp_path / "missing")].error


def test_config_roundtrip_and_errors(project):
    c = project.config
    assert c.get("filters.ignore_system_reads") is True
    c.set("filters.ignore_paths", "/data/cache, /scratch")
    assert cfg_mod.Config(project.roar_dir).get("filters.ignore_paths") == ["/data/cache", "/scratch"]
    with pytest.raises(ConfigError):
        c.set("output.quiet", "maybe")
    with pytest.raises(ConfigError):
        c.get("nope")
    ignore = project.read_filter()
    assert ignore("/usr/lib/x.so") and ignore("/scratch/a") and not ignore(os.path.join(project.root, "a.csv"))


def test_dag_compact_expanded_and_stale():
    a, b, b2 = "a" * 64, "b" * 64, "c" * 64
    j1 = mkjob("s", 1, ins=[("/raw", "0" * 64)], outs=[("/feat", a)], step="prep")
    j2 = mkjob("s", 2, ins=[("/feat", a)], outs=[("/model", b)], step="train")
    j3 = mkjob("s", 3, ins=[("/raw", "0" * 64)], outs=[("/feat", b2)], step="prep")
    d = dag_mod.build([j1, j2, j3])
    assert [j.id for j in d.jobs] == ["job0002", "job0003"]
    assert "job0002" in d.stale and "/feat" in d.stale["job0002"]
    assert d.deps["job0002"] == {"job0003"}  # re-pointed to the latest run of the step
    full = dag_mod.build([j1, j2, j3], expanded=True)
    assert len(full.jobs) == 3 and full.superseded == {"job0001"} and full.deps["job0002"] == {"job0001"}


def test_ambiguous_artifact_prefix(project):
    s = project.store.active_session()
    project.store.insert_job(mkjob(s.id, 1, outs=[("/x1", "ab120" + "0" * 59), ("/x2", "ab121" + "0" * 59)]))
    with pytest.raises(AmbiguousRef) as e:
        resolve_artifact(project, "ab12")
    assert "/x1" in str(e.value) and "/x2" in str(e.value)
    assert resolve_artifact(project, "ab120") == "ab120" + "0" * 59
