"""Fault injection: a panic inside the preload library (forced with the test-only
ROAR_TEST_PANIC_ON_OPEN, see rust/crates/roar-preload/src/fault.rs) switches tracing off
in that process, leaves the program's exit status, output and files exactly as without
roar, and makes the job `partial` with a note naming the reason."""

from __future__ import annotations

PROGRAM = ("cat in.txt trigger.txt more.txt > out.txt; echo done; "
           "cat out.txt >&2; exit 3")


def test_panic_in_a_hook_switches_tracing_off_and_keeps_the_results(proj):
    for name, text in (("in.txt", "a\n"), ("trigger.txt", "b\n"), ("more.txt", "c\n")):
        (proj.root / name).write_text(text)
    p = proj.roar("run", "--tracer", "preload", "sh", "-c", PROGRAM, check=False,
                  env={"ROAR_TEST_PANIC_ON_OPEN": "trigger.txt"})
    assert p.returncode == 3
    assert p.stdout.decode() == "done\n"
    # The program's stderr is untouched (no panic message), then roar's own lines follow.
    assert p.stderr.decode().startswith("a\nb\nc\n"), p.stderr
    assert "panick" not in p.stderr.decode()
    assert (proj.root / "out.txt").read_text() == "a\nb\nc\n"

    job = proj.dag()["jobs"][0]
    assert (job["backend"], job["capture_level"], job["exit_code"]) == ("preload", "partial", 3)
    assert any("the tracer hit an internal error in process" in n for n in job["capture_notes"]), job
    # The shell, which did not panic, is still traced: its redirection wrote out.txt.
    assert [o["path"] for o in job["outputs"]] == [proj.path("out.txt")]
    # cat stopped tracing at trigger.txt: more.txt, opened after, is not claimed as seen.
    assert proj.path("more.txt") not in [i["path"] for i in job["inputs"]]


def test_without_the_fault_the_same_command_is_complete(proj):
    for name, text in (("in.txt", "a\n"), ("trigger.txt", "b\n"), ("more.txt", "c\n")):
        (proj.root / name).write_text(text)
    p = proj.roar("run", "--tracer", "preload", "sh", "-c", PROGRAM, check=False)
    assert p.returncode == 3
    job = proj.dag()["jobs"][0]
    assert job["capture_level"] == "complete", job
    assert sorted(i["path"] for i in job["inputs"]) == sorted(
        proj.path(n) for n in ("in.txt", "trigger.txt", "more.txt"))
