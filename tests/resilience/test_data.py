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
    run = lambda *a: subprocess.run([git, *a], cwd=proj.root, env={**os.environ, **env}, check=True,
                                    capture_output=True)
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
