"""Event files and their reduction to inputs/outputs (no tracer needed: files are written by hand)."""

import os
import struct

from roar_nb.capture.events import MAGIC, read_trace_dir, read_trace_file, reduce, settle_updates
from roar_nb.model import Event


def rec(op, path, t, size=0, mtime=-1, path2=None):
    p = os.fsencode(path)
    out = struct.pack("<cQQqI", op.encode(), t, size, mtime, len(p)) + p
    if path2 is not None:
        p2 = os.fsencode(path2)
        out += struct.pack("<I", len(p2)) + p2
    return out


def test_read_file_and_truncation(tmp_path):
    body = MAGIC + struct.pack("<II", 42, 1) + rec("R", "/a", 1, 5, 7) + rec("M", "/t", 2, path2="/m")
    f = tmp_path / "42-1.ev"
    f.write_bytes(body)
    evs, complete = read_trace_file(str(f))
    assert complete
    assert evs == [Event("R", "/a", 1, 5, 7, None, 42), Event("M", "/t", 2, 0, -1, "/m", 42)]
    f.write_bytes(body[:-3])
    evs, complete = read_trace_file(str(f))
    assert not complete and len(evs) == 1


def test_dir_merges_processes_in_time_order(tmp_path):
    (tmp_path / "1-1.ev").write_bytes(MAGIC + struct.pack("<II", 1, 0) + rec("W", "/x", 10))
    (tmp_path / "2-1.ev").write_bytes(MAGIC + struct.pack("<II", 2, 1) + rec("R", "/x", 20, 1, 1))
    evs, problems = read_trace_dir(str(tmp_path))
    assert [e.t_ns for e in evs] == [10, 20] and problems == []
    r = reduce(evs)
    assert list(r.outputs) == ["/x"] and r.inputs == {}  # read after own write is internal


def test_non_utf8_path_roundtrip(tmp_path):
    raw = b"/d/bad\xff"
    (tmp_path / "1-1.ev").write_bytes(MAGIC + struct.pack("<II", 1, 0)
                                      + struct.pack("<cQQqI", b"W", 1, 0, -1, len(raw)) + raw)
    evs, _ = read_trace_dir(str(tmp_path))
    assert os.fsencode(evs[0].path) == raw


def test_rename_moves_output_identity():
    r = reduce([Event("W", "/m.tmp", 1), Event("M", "/m.tmp", 2, path2="/m")])
    assert list(r.outputs) == ["/m"] and "/m.tmp" in r.deleted


def test_delete_removes_output_and_filter_drops_reads():
    r = reduce([Event("R", "/usr/lib/x", 1), Event("R", "/data", 2), Event("W", "/tmpf", 3),
                Event("D", "/tmpf", 4)], ignore_read=lambda p: p.startswith("/usr/"))
    assert list(r.inputs) == ["/data"] and r.outputs == {}


def test_update_settles_on_change(tmp_path):
    same, changed = tmp_path / "same.db", tmp_path / "changed.db"
    same.write_text("a")
    changed.write_text("b")
    st_s, st_c = same.stat(), changed.stat()
    r = reduce([Event("U", str(same), 1, st_s.st_size, st_s.st_mtime_ns),
                Event("U", str(changed), 2, st_c.st_size, st_c.st_mtime_ns)])
    changed.write_text("bb")
    settle_updates(r)
    assert list(r.outputs) == [str(changed)] and list(r.inputs) == [str(same)]


def test_moved_directory_expands_to_its_files_at_job_end(tmp_path):
    """`mv a b` then `mv b c/d` of a directory the job never wrote: its files are outputs under
    the final name; the directory is not; a file moved out of it or deleted in it is handled."""
    base = str(tmp_path)
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "d" / "sub").mkdir(parents=True)
    for name in ("c/d/x.txt", "c/d/sub/y.txt"):
        (tmp_path / name).write_text(name)
    (tmp_path / "c" / "d" / "link").symlink_to("x.txt")
    (tmp_path / "out.txt").write_text("o")
    r = reduce([Event("M", f"{base}/a", 1, path2=f"{base}/b"),
                Event("M", f"{base}/b", 2, path2=f"{base}/c/d"),
                Event("M", f"{base}/c/d/z.txt", 3, path2=f"{base}/out.txt"),
                Event("W", f"{base}/c/d/gone.txt", 4), Event("D", f"{base}/c/d/gone.txt", 5)])
    settle_updates(r)
    assert sorted(r.outputs) == [f"{base}/c/d/sub/y.txt", f"{base}/c/d/x.txt", f"{base}/out.txt"]


def test_moved_file_is_not_expanded(tmp_path):
    (tmp_path / "f").write_text("f")
    r = reduce([Event("M", str(tmp_path / "e"), 1, path2=str(tmp_path / "f"))])
    settle_updates(r)
    assert list(r.outputs) == [str(tmp_path / "f")]


def test_unresolved_names_become_one_note_not_events(tmp_path):
    """`N unresolved ERRNO` records (rust/EVENTS.md): a name the tracer could not make absolute
    is said in one note, never reduced."""
    (tmp_path / "1-1.ev").write_bytes(MAGIC + struct.pack("<II", 1, 0) + rec("W", "/x", 1)
                                      + rec("N", "odd\x1b[31m", 2, path2="unresolved 36")
                                      + rec("N", "deep2.txt", 3, path2="unresolved 36"))
    evs, problems = read_trace_dir(str(tmp_path))
    assert [e.op for e in evs] == ["W"]
    (note,) = problems
    # Terminal escapes in a name are shown escaped, never sent.
    assert "PATH_MAX" in note and "'odd\\x1b[31m' and 1 more" in note and "\x1b" not in note
