"""`roar run` end to end: real commands under the real preload library, checked through `roar dag --json`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import blake3

PY = sys.executable


def b3(path) -> str:
    with open(path, "rb") as f:
        return blake3.blake3(f.read()).hexdigest()


def io_of(job, direction):
    return {os.path.basename(e["path"]): e["hash"] for e in job[direction]}


def last_job(proj):
    return proj.dag("--expanded")["jobs"][-1]


def write(proj, name, data):
    p = proj.root / name
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return p


def test_script_reads_two_writes_one_and_hashes_match(proj):
    write(proj, "a.txt", "alpha\n")
    write(proj, "b.txt", "beta\n")
    write(proj, "merge.py", textwrap.dedent("""
        a = open("a.txt").read(); b = open("b.txt").read()
        with open("out.txt", "w") as f:
            f.write(a + b)
    """))
    r = proj.roar("run", PY, "merge.py")
    assert b"roar @1: 3 in, 1 out (out.txt " in r.stderr  # merge.py, a.txt, b.txt
    job = last_job(proj)
    assert io_of(job, "inputs") == {"a.txt": b3(proj.root / "a.txt"), "b.txt": b3(proj.root / "b.txt"),
                                    "merge.py": b3(proj.root / "merge.py")}
    assert io_of(job, "outputs") == {"out.txt": b3(proj.root / "out.txt")}
    assert job["kind"] == "run" and job["exit_code"] == 0 and job["capture_level"] == "complete"


def test_shell_redirects(proj):
    write(proj, "a", "3\n1\n2\n")
    proj.roar("run", "sh", "-c", "sort < a > b")
    job = last_job(proj)
    assert set(io_of(job, "inputs")) == {"a"}
    assert io_of(job, "outputs") == {"b": b3(proj.root / "b")}
    assert (proj.root / "b").read_text() == "1\n2\n3\n"


def test_cp(proj):
    write(proj, "src.bin", os.urandom(10000))
    proj.roar("run", "cp", "src.bin", "dst.bin")
    job = last_job(proj)
    assert io_of(job, "inputs") == {"src.bin": b3(proj.root / "src.bin")}
    assert io_of(job, "outputs") == {"dst.bin": b3(proj.root / "src.bin")}


def test_child_and_grandchild(proj):
    write(proj, "in.txt", "x")
    write(proj, "parent.py", textwrap.dedent("""
        import subprocess
        subprocess.run(["sh", "-c", "cat in.txt > mid.txt; sh -c 'cat mid.txt mid.txt > final.txt'"], check=True)
    """))
    proj.roar("run", PY, "parent.py")
    job = last_job(proj)
    assert set(io_of(job, "inputs")) == {"parent.py", "in.txt"}
    assert set(io_of(job, "outputs")) == {"mid.txt", "final.txt"}


def test_threads_writing_files(proj):
    write(proj, "threads.py", textwrap.dedent("""
        import threading
        def w(i):
            with open(f"t{i}.out", "w") as f:
                f.write(str(i) * 100)
        ts = [threading.Thread(target=w, args=(i,)) for i in range(16)]
        [t.start() for t in ts]; [t.join() for t in ts]
    """))
    proj.roar("run", PY, "threads.py")
    outs = io_of(last_job(proj), "outputs")
    assert set(outs) == {f"t{i}.out" for i in range(16)}
    assert all(outs[f"t{i}.out"] == b3(proj.root / f"t{i}.out") for i in range(16))


def test_write_temp_then_rename_moves_identity(proj):
    write(proj, "save.py", textwrap.dedent("""
        import os
        with open("model.pt.tmp", "wb") as f:
            f.write(b"weights" * 100)
        os.replace("model.pt.tmp", "model.pt")
    """))
    proj.roar("run", PY, "save.py")
    outs = io_of(last_job(proj), "outputs")
    assert outs == {"model.pt": b3(proj.root / "model.pt")}


def test_file_deleted_by_job_is_not_an_output(proj):
    write(proj, "old.txt", "old")
    write(proj, "del.py", textwrap.dedent("""
        import os
        open("scratch.txt", "w").write("tmp"); os.remove("scratch.txt")
        os.remove("old.txt")
        open("kept.txt", "w").write("kept")
    """))
    proj.roar("run", PY, "del.py")
    job = last_job(proj)
    assert set(io_of(job, "outputs")) == {"kept.txt"}


def test_exit_code_stdout_stderr_passed_through(proj):
    script = "import sys; sys.stdout.write('out\\x00bytes\\n'); sys.stderr.write('err\\n'); sys.exit(3)"
    bare = subprocess.run([PY, "-c", script], capture_output=True)
    r = proj.roar("run", "-q", PY, "-c", script, check=False)
    assert r.returncode == 3 == bare.returncode
    assert r.stdout == bare.stdout
    assert r.stderr == bare.stderr  # -q: roar adds nothing
    job = last_job(proj)
    assert job["status"] == "failed" and job["exit_code"] == 3


def test_signal_passed_through(proj):
    r = proj.roar("run", "-q", "sh", "-c", "kill -TERM $$", check=False)
    assert r.returncode == -signal.SIGTERM
    job = last_job(proj)
    assert job["status"] == "failed" and job["exit_code"] == -signal.SIGTERM


def test_missing_command_is_127_and_recorded(proj):
    r = proj.roar("run", "no-such-command-xyz", check=False)
    assert r.returncode == 127
    assert b"Traceback" not in r.stderr
    assert b"command not found: no-such-command-xyz" in r.stderr
    job = last_job(proj)
    assert job["status"] == "failed" and job["exit_code"] == 127


def test_parallel_runs_lose_no_job(proj):
    for i in range(20):
        write(proj, f"in{i}", str(i))

    def one(i):
        return proj.roar("run", "-q", "sh", "-c", f"cat in{i} > out{i}", check=False).returncode

    with ThreadPoolExecutor(max_workers=20) as ex:
        codes = list(ex.map(one, range(20)))
    assert codes == [0] * 20
    jobs = proj.dag("--expanded")["jobs"]
    assert len(jobs) == 20
    assert sorted(j["seq"] for j in jobs) == list(range(1, 21))
    assert {os.path.basename(j["outputs"][0]["path"]) for j in jobs} == {f"out{i}" for i in range(20)}


def test_awkward_paths(proj):
    names = ["with space.txt", "new\nline.txt"]
    for n in names:
        write(proj, n, n)
    bad = os.fsencode(str(proj.root)) + b"/bad\xff\xfename.txt"
    with open(bad, "wb") as f:
        f.write(b"raw")
    script = textwrap.dedent("""
        import os
        data = b"".join(open(n, "rb").read() for n in ["with space.txt", "new\\nline.txt", b"bad\\xff\\xfename.txt"])
        open(b"out \\xff.txt", "wb").write(data)
    """)
    write(proj, "awk.py", script)
    proj.roar("run", PY, "awk.py")
    job = last_job(proj)
    ins = {e["path"] for e in job["inputs"]}
    assert str(proj.root / "with space.txt") in ins
    assert str(proj.root / "new\\x0aline.txt") in ins  # control characters escaped, as in every view
    assert str(proj.root) + "/bad\\xff\\xfename.txt" in ins  # shown with escapes in JSON
    (out,) = job["outputs"]
    assert out["hash"] == b3(os.fsencode(str(proj.root)) + b"/out \xff.txt")
    # `roar show` on the job prints without crashing on the undecodable names
    assert proj.roar("show", "@1").returncode == 0


def test_names_that_escape_to_the_same_text_stay_two_edges(proj):
    """b"x\\xff.txt" (not UTF-8) is shown as the text x\\xff.txt, which is also the ASCII name
    x\\\\xff.txt: two files, two edges, two hashes, however they display."""
    write(proj, "two.py", textwrap.dedent(r"""
        open(b"x\xff.txt", "wb").write(b"raw byte")
        open(b"x\\xff.txt", "wb").write(b"ascii backslash")
    """))
    out = proj.roar("run", PY, "two.py").stderr.decode()
    assert "1 in, 2 out" in out, out  # two.py
    root = os.fsencode(str(proj.root))
    import sqlite3

    con = sqlite3.connect(proj.root / ".roar" / "roar.db")
    rows = con.execute("SELECT path, path_raw, hash FROM job_io WHERE direction = 'out'").fetchall()
    con.close()
    assert len(rows) == 2 and {(p, raw) for p, raw, _ in rows} == {
        (str(proj.root) + "/x\\xff.txt", None), (str(proj.root) + "/x\\xff.txt", root + b"/x\xff.txt")}
    assert {h for _, _, h in rows} == {b3(root + b"/x\xff.txt"), b3(root + b"/x\\xff.txt")}
    from roar_nb.session import Project

    (job,) = Project(str(proj.root)).store.jobs()
    assert sorted(os.fsencode(e.path) for e in job.outputs) == [root + b"/x\\xff.txt", root + b"/x\xff.txt"]


LONG_PATHS = textwrap.dedent("""
    import os
    base = os.getcwd()
    for i in range(24):  # 24 * 201 bytes: the absolute path is past PATH_MAX (4096)
        os.mkdir("d" * 200)
        os.chdir("d" * 200)
    open("deep.txt", "w").write("deep")
    fd = os.open(".", os.O_RDONLY)  # readlink of this descriptor fails: ENAMETOOLONG
    os.chdir(base)
    os.close(os.open("deep2.txt", os.O_WRONLY | os.O_CREAT, dir_fd=fd))
""")


def test_paths_longer_than_path_max_are_never_dropped_silently(proj):
    write(proj, "long.py", LONG_PATHS)
    r = proj.roar("run", "--tracer", "preload", PY, "long.py")
    job = last_job(proj)
    assert job["capture_level"] == "partial", job["capture_notes"]
    notes = " ".join(job["capture_notes"])
    assert "PATH_MAX" in notes and "'deep2.txt'" in notes, notes
    assert b"capture partial" in r.stderr
    # The file written through the long cwd is an edge (no hash: its name is too long to open).
    (deep,) = [o for o in job["outputs"] if o["path"].endswith("/deep.txt")]
    assert deep["hash"] is None and len(deep["path"]) > 4096


def test_dag_links_jobs_and_show(proj):
    write(proj, "data.csv", "a,b\nc,d\n")
    write(proj, "prep.py", "open('feat.txt','w').write(open('data.csv').read().upper())\n")
    write(proj, "train.py", "open('model.pt','w').write(str(len(open('feat.txt').read())))\n")
    proj.roar("run", PY, "prep.py")
    proj.roar("run", PY, "train.py")
    d = proj.dag()
    j1, j2 = d["jobs"]
    assert j2["depends_on"] == [j1["id"]]
    for key in ("id", "step", "kind", "command", "exit_code", "inputs", "outputs"):
        assert key in j1
    art = json.loads(proj.roar("show", "model.pt", "--json").stdout)
    assert art["hash"] == b3(proj.root / "model.pt")
    assert [p["ref"] for p in art["producers"]] == ["@2"]
    feat = json.loads(proj.roar("show", "feat.txt", "--json").stdout)
    assert [p["ref"] for p in feat["producers"]] == ["@1"] and [c["ref"] for c in feat["consumers"]] == ["@2"]
    shown = proj.roar("show", "@2").stdout.decode()
    assert "train.py" in shown and "model.pt" in shown
    assert "dag hash" in proj.roar("status").stdout.decode()
    # Rewriting the data makes prep stale once re-run... a new run of prep makes train stale.
    write(proj, "data.csv", "e,f\n")
    proj.roar("run", PY, "prep.py")
    d = proj.dag()
    assert [j["ref"] for j in d["jobs"]] == ["@2", "@3"]
    stale = {j["ref"]: j["stale"] for j in d["jobs"]}
    assert stale["@2"] and "feat.txt" in stale["@2"] and not stale["@3"]


def test_rerun_step_with_override(proj):
    write(proj, "p.py", "import sys; open('out.txt','w').write(' '.join(sys.argv[1:]))\n")
    proj.roar("run", PY, "p.py", "--epochs=1", "--lr", "0.1")
    proj.roar("run", "@1", "--epochs=3", "--lr", "0.5")
    assert (proj.root / "out.txt").read_text() == "--epochs=3 --lr 0.5"
    assert last_job(proj)["command"].endswith("p.py --epochs=3 --lr 0.5")


def test_build_env_label_config_pop_reset(proj):
    proj.roar("env", "set", "GREETING", "hi there")
    assert proj.roar("env", "get", "GREETING").stdout == b"hi there\n"
    proj.roar("build", "sh", "-c", 'printf "%s" "$GREETING" > built.txt')
    assert (proj.root / "built.txt").read_text() == "hi there"
    assert last_job(proj)["kind"] == "build"
    assert b"@B1" in proj.roar("log").stdout
    proj.roar("env", "unset", "GREETING")
    assert proj.roar("env", "list").stdout == b""

    proj.roar("label", "set", "job", "@B1", "phase=build", "owner=me")
    proj.roar("label", "set", "job", "@B1", "owner=")
    assert json.loads(proj.roar("label", "show", "job", "@B1").stdout) == {"phase": "build"}
    assert proj.roar("label", "history", "job", "@B1").stdout.count(b"\n") == 2

    assert proj.roar("config", "get", "output.quiet").stdout == b"false\n"
    proj.roar("config", "set", "output.quiet", "true")
    assert b"output.quiet" in proj.roar("config", "list").stdout
    bad = proj.roar("config", "set", "no.such.key", "1", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith(b"roar: error: unknown config key")

    proj.roar("run", "sh", "-c", "echo x > popme.txt")
    assert (proj.root / "popme.txt").exists()
    proj.roar("pop", "-y")
    assert not (proj.root / "popme.txt").exists()
    assert len(proj.dag("--expanded")["jobs"]) == 1

    proj.roar("reset", "-y")
    assert proj.dag()["jobs"] == []
    assert len(proj.dag("--all")["jobs"]) == 1


def test_bad_input_is_one_line(proj, tmp_path):
    r = proj.roar("run", check=False)
    assert r.returncode == 2 and r.stderr.count(b"\n") == 1
    r = proj.roar("show", "@42", check=False)
    assert r.returncode == 1 and b"no job @42" in r.stderr and b"Traceback" not in r.stderr
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    r = proj.roar("status", cwd=outside, check=False)
    assert r.returncode == 1 and b"roar init" in r.stderr and r.stderr.count(b"\n") == 1
    corrupt = tmp_path / "corrupt"
    (corrupt / ".roar").mkdir(parents=True)
    (corrupt / ".roar" / "roar.db").write_bytes(b"this is not sqlite" * 100)
    r = proj.roar("run", "true", cwd=corrupt, check=False)  # the command runs; the job waits in pending/
    assert r.returncode == 0 and b"not a valid roar database" in r.stderr and r.stderr.count(b"\n") == 1


def test_locked_database_keeps_the_job(proj):
    """A job whose database is locked is kept in .roar/pending/ and stored by the next command."""
    import sqlite3

    conn = sqlite3.connect(proj.root / ".roar" / "roar.db", isolation_level=None)
    conn.execute("BEGIN EXCLUSIVE")
    try:
        r = proj.roar("run", "sh", "-c", "echo 1 > locked.txt", env={"ROAR_BUSY_TIMEOUT": "0.2"})
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert b"pending" in r.stderr
    assert list((proj.root / ".roar" / "pending").glob("*.json"))
    jobs = proj.dag("--expanded")["jobs"]
    assert len(jobs) == 1 and jobs[0]["outputs"][0]["path"].endswith("locked.txt")


def test_dev_shm_files_are_data(proj):
    """/dev is a pseudo file system to roar, but /dev/shm holds real files (tmpfs)."""
    import uuid

    d = f"/dev/shm/roar-test-{uuid.uuid4().hex}"
    os.mkdir(d)
    try:
        write(proj, "src.txt", "shm")
        proj.roar("run", "sh", "-c", f"cat src.txt > {d}/out.txt; cat /dev/null > /dev/null")
        job = last_job(proj)
        assert io_of(job, "outputs") == {"out.txt": b3(f"{d}/out.txt")}
        assert set(io_of(job, "inputs")) == {"src.txt"}
    finally:
        import shutil
        shutil.rmtree(d, ignore_errors=True)


def test_label_cp_and_init_gitignore(proj):
    """`roar label cp` and init's .gitignore policy, through the CLI (their logic lives in
    roar_nb.labels and roar_nb.gitignore)."""
    proj.roar("run", "--", "sh", "-c", "echo a > a.txt")
    proj.roar("label", "set", "job", "@1", "phase=prep", "owner=me")
    proj.roar("label", "set", "artifact", "a.txt", "owner=you", "kept=1")
    out = json.loads(proj.roar("label", "cp", "job", "@1", "artifact", "a.txt").stdout)
    assert out == {"phase": "prep", "owner": "me", "kept": "1"}
    bad = proj.roar("label", "cp", "job", "@1", "artifact", check=False)
    assert bad.returncode != 0 and b"usage: roar label cp" in bad.stderr
    bad = proj.roar("label", "cp", "job", "@7", "artifact", "a.txt", check=False)
    assert bad.returncode != 0 and b"no job @7" in bad.stderr

    repo = proj.root / "repo"
    (repo / ".git").mkdir(parents=True)
    (repo / ".gitignore").write_text("build/")
    assert b"Added .roar/" in proj.roar("init", "-y", repo).stdout
    assert (repo / ".gitignore").read_text() == "build/\n.roar/\n"
    assert b"Added" not in proj.roar("init", "-y", repo).stdout  # already there: untouched
    assert (repo / ".gitignore").read_text() == "build/\n.roar/\n"
