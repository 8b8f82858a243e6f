"""Never destroy data, hash in bounded memory (issue 12, items 13 and 14): `roar pop` deletes only
files the job created; sparse and huge files hash without reading holes into memory."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from roar_nb.capture.events import reduce
from roar_nb.model import Event


def _pop(proj) -> str:
    out = proj.roar("pop", "-y").stdout.decode()
    assert "popped @" in out
    return out


@pytest.mark.parametrize("tracer", ["preload", "ptrace"])
def test_pop_keeps_a_file_the_job_appended_to(proj, tracer):
    log = proj.root / "experiments.log"
    log.write_text("earlier runs\n")
    proj.roar("run", "--tracer", tracer, "--", "sh", "-c", "echo run >> experiments.log")
    out = _pop(proj)
    assert log.read_text() == "earlier runs\nrun\n"
    assert "experiments.log" in out and "existed before the job" in out


@pytest.mark.parametrize("tracer", ["preload", "ptrace"])
def test_pop_deletes_what_the_job_created(proj, tracer):
    (proj.root / "input.txt").write_text("in\n")
    proj.roar("run", "--tracer", tracer, "--", "sh", "-c", "cat input.txt > new.txt; mkdir d; echo 2 > d/two")
    out = _pop(proj)
    assert not (proj.root / "new.txt").exists() and not (proj.root / "d" / "two").exists()
    assert (proj.root / "input.txt").read_text() == "in\n"
    assert "deleted 2 file(s) it created; kept 0" in out
    assert proj.dag()["jobs"] == []


@pytest.mark.parametrize("tracer", ["preload", "ptrace"])
def test_pop_deletes_nothing_when_the_job_also_changed_existing_files(proj, tracer):
    (proj.root / "old.txt").write_text("precious\n")
    proj.roar("run", "--tracer", tracer, "--", "sh", "-c", "echo new > new.txt; echo over > old.txt")
    out = _pop(proj)
    assert (proj.root / "old.txt").read_text() == "over\n"  # its old bytes are gone, the file is not
    assert (proj.root / "new.txt").exists()  # old.txt may refer to it: nothing is deleted
    assert "deleted 0 file(s) it created; kept 2" in out and "existed before the job" in out
    assert proj.dag()["jobs"] == []


def test_pop_after_git_commit_keeps_the_repository(proj):
    git = shutil.which("git")
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(proj.root)}

    def run(*a):
        return subprocess.run([git, *a], cwd=proj.root, env={**os.environ, **env}, check=True, capture_output=True)

    run("init", "-q", "-b", "main")
    (proj.root / "a.txt").write_text("a\n")
    run("add", "a.txt")
    run("commit", "-qm", "first")
    (proj.root / "a.txt").write_text("b\n")
    run("add", "a.txt")
    before = {p: (proj.root / ".git" / p).read_bytes() for p in ("index", "refs/heads/main")}
    proj.roar("run", "--", git, "commit", "-qm", "second", env=env)
    after = {p: (proj.root / ".git" / p).read_bytes() for p in before}
    assert after != before
    out = _pop(proj)
    for p, data in after.items():
        assert (proj.root / ".git" / p).read_bytes() == data, f".git/{p} was deleted or changed by pop"
    assert run("log", "--oneline").stdout.count(b"\n") == 2  # objects kept too: HEAD resolves
    assert run("fsck", "--no-progress").returncode == 0
    assert "deleted 0 file(s)" in out


def test_pop_keeps_a_rename_target_it_cannot_vouch_for(proj):
    (proj.root / "ckpt").write_text("last week's model\n")
    proj.roar("run", "--", "sh", "-c", "echo new > tmp && mv tmp ckpt && echo fresh > tmp2 && mv tmp2 brandnew")
    out = _pop(proj)
    assert (proj.root / "ckpt").read_text() == "new\n"
    assert (proj.root / "brandnew").exists()  # in doubt (a rename target): kept, and said so
    assert out.count("roar cannot tell") == 2


def _ev(op, path, t, path2=None):
    return Event(op, path, t, 0, -1, path2, 1)


def test_reduce_decides_creation_from_the_first_event_on_a_path():
    r = reduce([
        _ev("W", "/p/new", 1),
        _ev("R", "/p/log", 2), _ev("W", "/p/log", 3),
        _ev("U", "/p/db", 4),
        _ev("D", "/p/re", 5), _ev("W", "/p/re", 6),
        _ev("W", "/p/tmp", 7), _ev("M", "/p/tmp", 8, "/p/final"),
        _ev("W", "/p/w", 9), _ev("W", "/p/t2", 10), _ev("M", "/p/t2", 11, "/p/w"),
        _ev("L", "/p/new", 12, "/p/hard"),
        _ev("W", "/p/d/x", 13), _ev("M", "/p/d", 14, "/p/e"),
    ])
    c = r.created
    assert (c["/p/new"], c["/p/log"], c["/p/db"], c["/p/re"]) == (True, False, False, False)
    assert c["/p/final"] is None and c["/p/w"] is None  # replaced by a rename: unknown
    assert c["/p/hard"] is True and c["/p/e/x"] is True


# --- item 13: sparse and huge files ----------------------------------------------------------

def _zeros_blake3(n: int) -> str:
    import blake3

    h, z = blake3.blake3(max_threads=blake3.blake3.AUTO), bytes(1 << 24)
    while n:
        k = min(n, len(z))
        h.update(memoryview(z)[:k])
        n -= k
    return h.hexdigest()


def test_a_huge_sparse_output_hashes_in_bounded_memory(proj):
    """`roar run truncate -s 8G f` took 8.4 GB of memory (mmap of the holes)."""
    size = 8 << 30
    p = subprocess.Popen([*__import__("conftest").roar_cmd(), "run", "-q", "--", "truncate", "-s", str(size), "f"],
                         cwd=proj.root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(p.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, p.stderr.read()
    p.stderr.close()
    assert usage.ru_maxrss < 300 * 1024, f"max RSS {usage.ru_maxrss // 1024} MiB"  # ru_maxrss is in KiB
    (out,) = proj.dag()["jobs"][0]["outputs"]
    assert out["size"] == size and out["hash"] == _zeros_blake3(size)


def test_sparse_files_hash_to_the_blake3_of_their_bytes(tmp_path):
    import blake3

    from roar_nb.hashing import hash_paths

    f = tmp_path / "sparse.bin"
    with open(f, "wb") as fh:  # data islands at unaligned offsets, holes between, a hole at the end
        for off, data in ((0, b"head"), (5 << 20, os.urandom(70_001)), ((40 << 20) + 3, b"x" * 4097),
                          (100 << 20, os.urandom(1 << 20))):
            fh.seek(off)
            fh.write(data)
        fh.truncate(130 << 20)
    st = os.stat(f)
    assert st.st_blocks * 512 < st.st_size  # really sparse here
    want = blake3.blake3(f.read_bytes()).hexdigest()
    r = hash_paths([str(f)], extra=("sha256",))[str(f)]
    assert r.hash == want and r.digests["sha256"] == __import__("hashlib").sha256(f.read_bytes()).hexdigest()
    g = tmp_path / "dense.bin"
    g.write_bytes(os.urandom((3 << 20) + 5))
    assert hash_paths([str(g)])[str(g)].hash == blake3.blake3(g.read_bytes()).hexdigest()


def test_hashing_one_huge_file_shows_progress_on_a_terminal(proj):
    """The bar advanced per file, so one 8 GiB output showed nothing until it was done."""
    import pty

    proj.roar("config", "set", "hash.progress_after", "0")
    master, slave = pty.openpty()
    p = subprocess.Popen([*__import__("conftest").roar_cmd(), "run", "--", "truncate", "-s", "4G", "big"],
                         cwd=proj.root, stdout=subprocess.DEVNULL, stderr=slave, stdin=subprocess.DEVNULL)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 4096)
        except OSError:  # EIO: the child closed the pty
            break
        if not data:
            break
        chunks.append(data)
    assert p.wait() == 0
    os.close(master)
    out = b"".join(chunks).decode(errors="replace")
    partial = [int(n) for n in __import__("re").findall(r"0/1 files (\d+)/4096 MiB", out)]
    assert partial and min(partial) < 4096, out  # the bar moved while the one file was hashed


def test_pop_deletes_nothing_after_a_partial_capture(proj):
    """A static program under preload changed old.txt unseen (ptrace could not attach to it:
    test fault): deleting new.txt alone is in doubt."""
    (proj.root / "old.txt").write_text("old\n")
    r = proj.roar("run", "--tracer", "preload", "--", "busybox", "env", "/bin/sh", "-c",
                  'echo x > new.txt; busybox sh -c "echo y >> old.txt"', env={"ROAR_PTRACE_FAULT": "attach"})
    assert "partial" in r.stderr.decode()
    assert [os.path.basename(e["path"]) for e in proj.dag()["jobs"][0]["outputs"]] == ["new.txt"]
    out = _pop(proj)
    assert (proj.root / "new.txt").exists() and "capture was partial" in out
