"""Backend selection through the real `roar` CLI: auto decisions, explicit tracers, the
recorded backend and capture level, fallbacks before the command runs, tracer crashes."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent.parent
BUSYBOX = "/bin/busybox"


@pytest.fixture(autouse=True, scope="module")
def ptrace_binary(native_lib):
    """`native_lib` builds roar-ptrace too and packages it (tests/conftest.py)."""
    dest = REPO / "roar_nb" / "_native" / "roar-ptrace"
    assert dest.exists(), dest
    assert os.path.exists(BUSYBOX), "busybox-static missing: run `make system-deps`"
    return dest


def job(proj, ref="@1") -> dict:
    return json.loads(proj.roar("show", ref, "--json").stdout)


def names(edges) -> set:
    return {os.path.basename(e["path"]) for e in edges}


def test_auto_uses_preload_for_dynamic_programs(proj):
    Path(proj.path("a.txt")).write_text("a\n")
    proj.roar("run", "cp", "a.txt", "b.txt")
    j = job(proj)
    assert (j["backend"], j["capture_level"]) == ("preload", "complete")
    assert names(j["outputs"]) == {"b.txt"}


def test_auto_uses_ptrace_for_a_static_binary(proj):
    Path(proj.path("in.txt")).write_text("s\n")
    p = proj.roar("run", BUSYBOX, "sh", "-c", "cat in.txt > out.txt")
    j = job(proj)
    assert (j["backend"], j["capture_level"]) == ("ptrace", "complete")
    assert names(j["inputs"]) == {"in.txt"} and names(j["outputs"]) == {"out.txt"}
    assert b"partial" not in p.stderr


def test_auto_looks_through_launchers(proj):
    Path(proj.path("in.txt")).write_text("s\n")
    proj.roar("run", "env", "A=1", "nice", "-n", "1", BUSYBOX, "cp", "in.txt", "out.txt")
    assert job(proj)["backend"] == "ptrace"


def test_static_binary_under_preload_is_handed_to_ptrace(proj):
    """The preload launcher has `roar-ptrace --attach` trace a static command (same pid)."""
    Path(proj.path("in.txt")).write_text("s\n")
    p = proj.roar("run", "--tracer", "preload", BUSYBOX, "sh", "-c", "cp in.txt out.txt; exit 3", check=False)
    assert p.returncode == 3
    j = job(proj)
    assert (j["backend"], j["capture_level"]) == ("preload", "complete"), j["capture_notes"]
    assert names(j["inputs"]) == {"in.txt"} and names(j["outputs"]) == {"out.txt"}
    assert b"partial" not in p.stderr


def test_static_binary_under_preload_is_partial_and_said_when_ptrace_cannot_attach(proj):
    Path(proj.path("in.txt")).write_text("s\n")
    p = proj.roar("run", "--tracer", "preload", BUSYBOX, "cp", "in.txt", "out.txt",
                  env={"ROAR_PTRACE_FAULT": "attach"})
    j = job(proj)
    assert (j["backend"], j["capture_level"]) == ("preload", "partial")
    assert any(f"static binary {BUSYBOX} ran under preload" in n for n in j["capture_notes"])
    line = [ln for ln in p.stderr.decode().splitlines() if "capture partial" in ln]
    assert len(line) == 1 and "static binary" in line[0]
    assert "partial" in proj.roar("show", "@1").stdout.decode()


def test_explicit_ptrace_records_the_same_files(proj):
    Path(proj.path("in.txt")).write_text("x\n")
    proj.roar("run", "--tracer", "ptrace", "sh", "-c", "sort in.txt > s.txt; mv s.txt final.txt")
    j = job(proj)
    assert j["backend"] == "ptrace" and j["capture_level"] == "complete"
    assert names(j["inputs"]) == {"in.txt"} and names(j["outputs"]) == {"final.txt"}


def test_set_default_and_env_override(proj):
    proj.roar("tracer", "set-default", "ptrace")
    proj.roar("run", "true")
    assert job(proj)["backend"] == "ptrace"
    proj.roar("run", "true", env={"ROAR_TRACER": "preload"})
    assert job(proj, "@2")["backend"] == "preload"
    bad = proj.roar("tracer", "set-default", "ebpf", check=False)
    assert bad.returncode == 2 and b"auto, preload, ptrace, none" in bad.stderr


def test_status_says_what_works(proj):
    out = proj.roar("tracer", "status").stdout.decode()
    assert "preload   works" in out
    assert "ptrace    works" in out and "seccomp" in out
    assert "default   auto" in out


def test_ptrace_refused_falls_back_before_the_command_runs(proj):
    p = proj.roar("run", "--tracer", "ptrace", "sh", "-c", "echo once >> count.txt",
                  env={"ROAR_PTRACE_FAULT": "traceme"})
    assert Path(proj.path("count.txt")).read_text() == "once\n"  # ran exactly once
    j = job(proj)
    assert (j["backend"], j["capture_level"]) == ("preload", "partial")
    assert any("ptrace refused" in n and "fell back to preload" in n for n in j["capture_notes"])
    assert names(j["outputs"]) == {"count.txt"}  # preload saw it
    assert b"ptrace refused" in p.stderr


def test_tracer_crash_never_takes_the_program_down(proj):
    p = proj.roar("run", "--tracer", "ptrace", "sh", "-c", "echo hi > a.txt; cat a.txt; exit 5",
                  env={"ROAR_PTRACE_FAULT": "panic"}, check=False)
    assert p.returncode == 5 and p.stdout == b"hi\n"
    assert Path(proj.path("a.txt")).read_text() == "hi\n"
    j = job(proj)
    assert j["capture_level"] == "partial"
    assert any("ptrace tracer error" in n for n in j["capture_notes"])


def test_signals_and_output_pass_through_ptrace(proj):
    p = proj.roar("run", "--tracer", "ptrace", "sh", "-c", "echo out; echo err >&2; kill -SEGV $$", check=False)
    assert p.returncode == -11
    assert p.stdout == b"out\n" and p.stderr.startswith(b"err\n")
    p = proj.roar("run", "--tracer", "ptrace", "sh", "-c", "kill -KILL $$", check=False)
    assert p.returncode == -9


def test_missing_command_under_ptrace_is_127(proj):
    p = proj.roar("run", "--tracer", "ptrace", "no-such-command-xyz", check=False)
    assert p.returncode == 127 and b"command not found" in p.stderr


def test_daemon_outliving_the_command_does_not_block_and_is_reported(proj):
    # The straggler waits for go.txt, which appears only after roar has returned: roar returns
    # like the untraced shell (waiting for the straggler would hang until the timeout).
    script = ("(while [ ! -e go.txt ]; do sleep 0.05; done; echo late > late.txt) >/dev/null 2>&1 & "
              "echo now > now.txt")
    proj.roar("run", "--tracer", "ptrace", "sh", "-c", script, timeout=120)
    assert not Path(proj.path("late.txt")).exists()
    j = job(proj)
    assert names(j["outputs"]) == {"now.txt"}
    assert j["capture_level"] == "partial"
    assert any("outlived the command" in n for n in j["capture_notes"])
    Path(proj.path("go.txt")).write_text("")
    late = Path(proj.path("late.txt"))
    deadline = time.monotonic() + 60
    while not (late.exists() and late.read_text() == "late\n") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert late.read_text() == "late\n"  # the straggler kept working, untouched


def test_ptrace_binary_missing_falls_back(monkeypatch, tmp_path):
    """Selection only (the binary cannot be made to vanish for the real CLI without racing other tests)."""
    from roar_nb.capture import ptrace, select

    monkeypatch.setattr(ptrace, "problem", lambda: "roar-ptrace binary not found (run `make build`)")
    sel = select.select("ptrace", ["true"], dict(os.environ), str(tmp_path / "t"))
    assert sel.backend == "preload" and sel.partial
    assert "fell back to preload before running" in sel.notes[0]
    sel = select.select("auto", [BUSYBOX, "true"], dict(os.environ), str(tmp_path / "t"))
    assert sel.backend == "preload" and any("static binary" in n for n in sel.notes)
