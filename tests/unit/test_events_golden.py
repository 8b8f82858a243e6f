"""The golden event file (tests/golden/events-v1.ev) is written by the Rust encoder and checked
byte for byte by `cargo test -p roar-events --test golden`; here the Python reader must decode it
to exactly these events, and the Python writer (the audit hook's children) must reproduce it.
A format change on one side only fails one of the two tests. Keep EXPECTED in step with
`rust/crates/roar-events/tests/golden.rs`."""

import os
from pathlib import Path

from roar_nb.capture.events import encode_event, encode_header, read_trace_file
from roar_nb.model import Event

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "events-v1.ev"
MT = 1_700_000_000_123_456_789
PID = 4242


def _e(op, t, path, size=0, mtime=-1, path2=None):
    return Event(op, os.fsdecode(path), t, size, mtime, None if path2 is None else os.fsdecode(path2), PID)


EXPECTED = [
    _e("R", 1_000, b"/data/in.csv", 42, MT),
    _e("W", 2_000, b"/data/out.csv"),
    _e("U", 3_000, b"/data/log.txt", 7, MT + 1),
    _e("D", 4_000, b"/data/tmp.bin"),
    _e("M", 5_000, b"/data/a.part", path2=b"/data/a"),
    _e("L", 6_000, b"/data/a", path2=b"/data/a.link"),
    _e("X", 7_000, b"/usr/bin/python3"),
    _e("N", 8_000, b"/bin/busybox", path2=b"static /bin/sh"),
    _e("N", 9_000, b"io_uring_setup", path2=b"io_uring"),
    _e("N", 10_000, b"openat2", path2=b"syscall RESOLVE_IN_ROOT"),
    _e("N", 11_000, b"data/x", path2=b"unresolved 36"),
    _e("N", 12_000, b"0123456789abcdef", path2=b"job"),
    _e("R", 13_000, b"/data/caf\xe9.csv", 3, 0),
    _e("M", 14_000, b"/data/\xff\xfe", path2=b"/data/na\xefve"),
    _e("W", 2**64 - 2, b"/"),
]


def test_python_reader_decodes_the_golden_file():
    events, complete = read_trace_file(str(GOLDEN))
    assert complete
    assert events == EXPECTED
    # Non-UTF-8 bytes survive as surrogates, so the exact bytes can be recovered.
    assert os.fsencode(events[12].path) == b"/data/caf\xe9.csv"
    assert {e.op for e in events} == set("RWUDMLXN")


def test_python_writer_reproduces_the_golden_file():
    body = encode_header(PID, 4241) + b"".join(encode_event(e) for e in EXPECTED)
    assert body == GOLDEN.read_bytes()
