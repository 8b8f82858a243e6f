//! The committed golden event file `tests/golden/events-v1.ev` pins wire format v1: the
//! encoder must reproduce it byte for byte and the decoder must read it back. pytest reads
//! the same file with the Python reader (`tests/unit/test_events_golden.py`), so a change on
//! either side that the other does not share fails a test. After a deliberate format change
//! (which also bumps the version: readers in the wild expect v1), regenerate it with
//! `ROAR_BLESS_GOLDEN=1 cargo test -p roar-events --test golden -- --test-threads=1`.

use roar_events::{decode, encode_header, Header, Op, Record};
use std::path::PathBuf;

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../tests/golden/events-v1.ev")
}

fn rec(op: Op, t_ns: u64, size: u64, mtime_ns: i64, path: &[u8], path2: Option<&[u8]>) -> Record {
    Record {
        op,
        t_ns,
        size,
        mtime_ns,
        path: path.to_vec(),
        path2: path2.map(<[u8]>::to_vec),
    }
}

/// Every op, notes of each documented kind, two-path records, non-UTF-8 bytes in both
/// paths and an extreme timestamp. Keep in step with `tests/unit/test_events_golden.py`.
fn golden_records() -> Vec<Record> {
    const MT: i64 = 1_700_000_000_123_456_789;
    vec![
        rec(Op::Read, 1_000, 42, MT, b"/data/in.csv", None),
        rec(Op::Write, 2_000, 0, -1, b"/data/out.csv", None),
        rec(Op::Update, 3_000, 7, MT + 1, b"/data/log.txt", None),
        rec(Op::Delete, 4_000, 0, -1, b"/data/tmp.bin", None),
        rec(Op::Move, 5_000, 0, -1, b"/data/a.part", Some(b"/data/a")),
        rec(Op::Link, 6_000, 0, -1, b"/data/a", Some(b"/data/a.link")),
        rec(Op::Exec, 7_000, 0, -1, b"/usr/bin/python3", None),
        rec(
            Op::Note,
            8_000,
            0,
            -1,
            b"/bin/busybox",
            Some(b"static /bin/sh"),
        ),
        rec(Op::Note, 9_000, 0, -1, b"io_uring_setup", Some(b"io_uring")),
        rec(
            Op::Note,
            10_000,
            0,
            -1,
            b"openat2",
            Some(b"syscall RESOLVE_IN_ROOT"),
        ),
        rec(Op::Note, 11_000, 0, -1, b"data/x", Some(b"unresolved 36")),
        rec(Op::Note, 12_000, 0, -1, b"0123456789abcdef", Some(b"job")),
        rec(Op::Read, 13_000, 3, 0, b"/data/caf\xe9.csv", None),
        rec(
            Op::Move,
            14_000,
            0,
            -1,
            b"/data/\xff\xfe",
            Some(b"/data/na\xefve"),
        ),
        rec(Op::Write, u64::MAX - 1, 0, -1, b"/", None),
    ]
}

fn encode_golden() -> Vec<u8> {
    let mut out = Vec::new();
    encode_header(
        &mut out,
        &Header {
            pid: 4242,
            ppid: 4241,
        },
    );
    for r in golden_records() {
        r.encode(&mut out);
    }
    out
}

#[test]
fn encoder_reproduces_the_golden_file() {
    let bytes = encode_golden();
    if std::env::var_os("ROAR_BLESS_GOLDEN").is_some() {
        std::fs::write(golden_path(), &bytes).unwrap();
    }
    let golden = std::fs::read(golden_path()).expect("tests/golden/events-v1.ev is committed");
    assert_eq!(bytes, golden, "the encoder no longer writes wire format v1");
}

#[test]
fn decoder_reads_the_golden_file() {
    let golden = std::fs::read(golden_path()).expect("tests/golden/events-v1.ev is committed");
    let trace = decode(&golden).unwrap();
    assert_eq!(
        trace.header,
        Header {
            pid: 4242,
            ppid: 4241
        }
    );
    assert_eq!(trace.error, None);
    assert_eq!(trace.records, golden_records());
    let ops: Vec<Op> = trace.records.iter().map(|r| r.op).collect();
    for op in Op::ALL {
        assert!(ops.contains(&op), "{op} missing from the golden file");
    }
}
