"""What a trace directory says was not seen: N records, .lost markers, files still held by a
live process, and nested-job announcements (files written by hand; rust/EVENTS.md)."""

import fcntl
import os
import struct

from roar_nb.capture.events import MAGIC, announce_nested_job, read_trace_dir, reduce


def rec(op, path, t, path2=None):
    p = os.fsencode(path)
    out = struct.pack("<cQQqI", op.encode(), t, 0, -1, len(p)) + p
    if path2 is not None:
        p2 = os.fsencode(path2)
        out += struct.pack("<I", len(p2)) + p2
    return out


def write(d, name, pid, *records):
    (d / name).write_bytes(MAGIC + struct.pack("<II", pid, 1) + b"".join(records))


def test_notes_become_one_line_problems_and_are_not_events(tmp_path):
    write(tmp_path, "7-1.ev", 7, rec("X", "/bin/busybox", 1), rec("N", "/bin/busybox", 2, "static /usr/bin/dash"),
          rec("N", "/bin/busybox", 3, "static /usr/bin/dash"), rec("N", "io_uring_setup", 4, "io_uring"),
          rec("W", "/o", 5))
    evs, problems = read_trace_dir(str(tmp_path))
    assert [e.op for e in evs] == ["X", "W"]
    assert problems == [
        "static binary /bin/busybox started by /usr/bin/dash ran untraced: its file I/O was not seen",
        "process 7 set up io_uring: file operations submitted through the ring were not seen",
    ]


def test_lost_marker_names_the_error(tmp_path):
    write(tmp_path, "9-5.ev", 9, rec("W", "/o", 1))
    (tmp_path / "9-5.28.lost").write_bytes(b"")
    _, problems = read_trace_dir(str(tmp_path))
    assert problems == [f"process 9 could not write its trace records ({os.strerror(28)}; is the trace "
                        "directory's filesystem full?): some of its file I/O was not seen"]


def test_a_file_still_held_is_a_live_process(tmp_path):
    me = os.getpid()  # a live pid (files of dead pids are not even lock-tested)
    write(tmp_path, f"{me}-5.ev", me, rec("W", "/o", 1))
    write(tmp_path, "12-5.ev", 12)
    (tmp_path / "12-6.fork").write_bytes(b"")
    held = [os.open(tmp_path / n, os.O_RDONLY) for n in (f"{me}-5.ev", "12-6.fork")]
    try:
        for fd in held:
            fcntl.flock(fd, fcntl.LOCK_SH)
        _, problems = read_trace_dir(str(tmp_path))
        assert len(problems) == 1
        assert problems[0].startswith(f"2 process(es) were still running when the job ended (pid {me}, "
                                      "a child of 12: ")
    finally:
        for fd in held:
            os.close(fd)
    assert read_trace_dir(str(tmp_path))[1] == []  # released: nothing outlived


def test_nested_job_is_a_child_and_its_roar_process_is_not_our_io(tmp_path):
    write(tmp_path, "20-1.ev", 20, rec("X", "/usr/bin/roar", 10), rec("W", "/shell_out", 5))
    write(tmp_path, "20-2.ev", 20, rec("R", "/site/roar_nb/cli.py", 11), rec("R", "/p/.roar/config.toml", 12))
    announce_nested_job(str(tmp_path), "ab" * 16)
    evs, problems = read_trace_dir(str(tmp_path))
    assert problems == []
    # announce_nested_job writes with this process's pid: make the roar image's pid match it.
    for name in ("20-1.ev", "20-2.ev"):
        data = bytearray((tmp_path / name).read_bytes())
        data[8:12] = struct.pack("<I", os.getpid())
        (tmp_path / name).write_bytes(bytes(data))
    evs, problems = read_trace_dir(str(tmp_path))
    r = reduce(evs)
    assert r.nested_jobs == ["ab" * 16]
    assert r.inputs == {}  # roar's own reads between its exec and its announcement are dropped
    assert list(r.outputs) == ["/shell_out"]  # the shell's own output (before the exec) is kept
