//! The roar-nb trace event wire format, version 1 (see `rust/EVENTS.md`).
//!
//! This crate is responsible for three things and nothing else:
//!
//! * the record types ([`Op`], [`Header`], [`Record`]),
//! * the byte-exact encoder ([`encode_header`], [`encode_record`]) and decoder
//!   ([`decode`], [`read_trace_dir`]),
//! * lexical path normalisation ([`normalize_into`]), shared by every native
//!   tracer so that all backends agree on what "the same path" means.
//!
//! and, beside the format, [`launch`]: the start-up protocol between `roar
//! run` and the first native code in the command's process (shared by the
//! preload library and roar-ptrace), and [`attach`]: how a process about to
//! exec a static program has roar-ptrace trace it from outside, and [`preload_var`]: the
//! one rule for the `LD_PRELOAD` value that carries the library.
//!
//! It must not do I/O in the encoder path and must not allocate there beyond
//! growing the caller's buffer: the encoder runs inside the LD_PRELOAD hooks of
//! traced processes. Paths are raw bytes everywhere (Linux paths need not be
//! UTF-8); nothing here ever converts them through `str`.

pub mod attach;
pub mod launch;
pub mod preload_var;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

/// File magic: the first 8 bytes of every `.ev` file.
pub const MAGIC: &[u8; 8] = b"ROAREV01";

/// Length of the file header: magic, pid (u32 LE), ppid (u32 LE).
pub const HEADER_LEN: usize = 16;

/// Fixed part of a record: op, t_ns, size, mtime_ns, len.
pub const RECORD_FIXED_LEN: usize = 1 + 8 + 8 + 8 + 4;

/// File name extension of trace files in a trace directory.
pub const FILE_EXTENSION: &str = "ev";

/// What happened to a path. The discriminant is the ASCII byte on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Op {
    /// Opened for reading only (regular file).
    Read = b'R',
    /// Opened for writing: created, truncated, write-only or append.
    Write = b'W',
    /// Opened read-write without create/truncate: the reader decides at job end
    /// whether it changed by comparing (size, mtime) seen at open.
    Update = b'U',
    /// Removed (unlink).
    Delete = b'D',
    /// Renamed `path` -> `path2`.
    Move = b'M',
    /// Hard-linked `path` -> `path2`.
    Link = b'L',
    /// Executed (execve and friends, posix_spawn).
    Exec = b'X',
    /// Something the tracer knows it did not see: `path` names the subject
    /// (a program, a syscall), `path2` the kind and detail as ASCII words
    /// (`static /bin/sh`: see `rust/EVENTS.md`). Never a file the job touched.
    Note = b'N',
}

impl Op {
    /// Every op, in wire-letter order of the EVENTS.md table.
    pub const ALL: [Op; 8] = [
        Op::Read,
        Op::Write,
        Op::Update,
        Op::Delete,
        Op::Move,
        Op::Link,
        Op::Exec,
        Op::Note,
    ];

    /// The op for a wire byte, or `None` for an unknown letter.
    pub fn from_byte(b: u8) -> Option<Op> {
        Some(match b {
            b'R' => Op::Read,
            b'W' => Op::Write,
            b'U' => Op::Update,
            b'D' => Op::Delete,
            b'M' => Op::Move,
            b'L' => Op::Link,
            b'X' => Op::Exec,
            b'N' => Op::Note,
            _ => return None,
        })
    }

    /// The ASCII byte written on the wire.
    pub fn as_byte(self) -> u8 {
        self as u8
    }

    /// Whether records of this op carry a second path (M, L and N).
    pub fn has_path2(self) -> bool {
        matches!(self, Op::Move | Op::Link | Op::Note)
    }

    /// Whether tracers deduplicate this op per process on (op, path).
    /// D, M and L are never deduplicated because their order matters.
    pub fn is_deduplicated(self) -> bool {
        matches!(self, Op::Read | Op::Write | Op::Update | Op::Exec)
    }

    /// Whether `size`/`mtime_ns` are meaningful for this op (R and U).
    pub fn has_stat(self) -> bool {
        matches!(self, Op::Read | Op::Update)
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_byte() as char)
    }
}

/// The 16-byte header at the start of every trace file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Process id of the image that wrote the file.
    pub pid: u32,
    /// Parent process id at the time the image initialised (or forked).
    pub ppid: u32,
}

/// One decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// What happened.
    pub op: Op,
    /// CLOCK_MONOTONIC ns when the call returned.
    pub t_ns: u64,
    /// `st_size` at open for R/U, else 0.
    pub size: u64,
    /// `st_mtime` in ns at open for R/U, else -1.
    pub mtime_ns: i64,
    /// Absolute, lexically normalised path (raw bytes).
    pub path: Vec<u8>,
    /// Destination path for M and L, `None` otherwise.
    pub path2: Option<Vec<u8>>,
}

impl Record {
    /// Append this record's wire encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        encode_record(
            out,
            self.op,
            self.t_ns,
            self.size,
            self.mtime_ns,
            &self.path,
            self.path2.as_deref(),
        );
    }
}

/// Append the file header to `out`.
pub fn encode_header(out: &mut Vec<u8>, header: &Header) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&header.pid.to_le_bytes());
    out.extend_from_slice(&header.ppid.to_le_bytes());
}

/// Append one record to `out` without building a [`Record`] (the hot path of
/// the tracers: no allocation beyond growing `out`).
///
/// `path2` is written only when `op` has a second path; a missing `path2` for
/// M/L is encoded as an empty path so the stream stays decodable.
/// Paths longer than `u32::MAX` bytes cannot exist on Linux (PATH_MAX is
/// 4096); they are truncated rather than panicking.
pub fn encode_record(
    out: &mut Vec<u8>,
    op: Op,
    t_ns: u64,
    size: u64,
    mtime_ns: i64,
    path: &[u8],
    path2: Option<&[u8]>,
) {
    let p2 = if op.has_path2() {
        Some(path2.unwrap_or(b""))
    } else {
        None
    };
    out.reserve(RECORD_FIXED_LEN + path.len() + p2.map_or(0, |p| 4 + p.len()));
    out.push(op.as_byte());
    out.extend_from_slice(&t_ns.to_le_bytes());
    out.extend_from_slice(&size.to_le_bytes());
    out.extend_from_slice(&mtime_ns.to_le_bytes());
    put_path(out, path);
    if let Some(p) = p2 {
        put_path(out, p);
    }
}

fn put_path(out: &mut Vec<u8>, p: &[u8]) {
    let len = p.len().min(u32::MAX as usize);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&p[..len]);
}

/// Why a byte stream is not (entirely) a valid trace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer than [`HEADER_LEN`] bytes.
    ShortHeader,
    /// The first 8 bytes are not [`MAGIC`].
    BadMagic,
    /// A record starts with a byte that is not a known op letter.
    UnknownOp {
        /// Byte offset of the record in the file.
        offset: usize,
        /// The offending byte.
        byte: u8,
    },
    /// The file ends in the middle of a record (e.g. the process was killed
    /// during a flush).
    Truncated {
        /// Byte offset of the incomplete record.
        offset: usize,
    },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::ShortHeader => write!(f, "file shorter than the 16-byte header"),
            DecodeError::BadMagic => write!(f, "bad magic (not a ROAREV01 file)"),
            DecodeError::UnknownOp { offset, byte } => {
                write!(f, "unknown op byte 0x{byte:02x} at offset {offset}")
            }
            DecodeError::Truncated { offset } => write!(f, "truncated record at offset {offset}"),
        }
    }
}

impl std::error::Error for DecodeError {}

/// A decoded trace file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    /// The file header.
    pub header: Header,
    /// Every complete record, in file order.
    pub records: Vec<Record>,
    /// Set when decoding stopped before the end of the data; `records` then
    /// holds everything before the bad spot (a reader may keep it and warn).
    pub error: Option<DecodeError>,
}

/// Decode a whole trace file. Fails only if the header is unusable; a bad or
/// truncated tail is reported in [`Trace::error`].
pub fn decode(bytes: &[u8]) -> Result<Trace, DecodeError> {
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::ShortHeader);
    }
    if &bytes[..8] != MAGIC {
        return Err(DecodeError::BadMagic);
    }
    let header = Header {
        pid: u32::from_le_bytes(bytes[8..12].try_into().unwrap()),
        ppid: u32::from_le_bytes(bytes[12..16].try_into().unwrap()),
    };
    let mut records = Vec::new();
    let mut pos = HEADER_LEN;
    let mut error = None;
    while pos < bytes.len() {
        match decode_record(bytes, pos) {
            Ok((rec, next)) => {
                records.push(rec);
                pos = next;
            }
            Err(e) => {
                error = Some(e);
                break;
            }
        }
    }
    Ok(Trace {
        header,
        records,
        error,
    })
}

/// Decode the record starting at `start`; returns it and the next offset.
pub fn decode_record(bytes: &[u8], start: usize) -> Result<(Record, usize), DecodeError> {
    let truncated = DecodeError::Truncated { offset: start };
    // Check the op byte first so that garbage is reported as such even when
    // fewer than a whole record's bytes follow it.
    let first = *bytes.get(start).ok_or(truncated.clone())?;
    let op = Op::from_byte(first).ok_or(DecodeError::UnknownOp {
        offset: start,
        byte: first,
    })?;
    let fixed = bytes
        .get(start..start + RECORD_FIXED_LEN)
        .ok_or(truncated.clone())?;
    let t_ns = u64::from_le_bytes(fixed[1..9].try_into().unwrap());
    let size = u64::from_le_bytes(fixed[9..17].try_into().unwrap());
    let mtime_ns = i64::from_le_bytes(fixed[17..25].try_into().unwrap());
    let len = u32::from_le_bytes(fixed[25..29].try_into().unwrap()) as usize;
    let mut pos = start + RECORD_FIXED_LEN;
    let path = bytes.get(pos..pos + len).ok_or(truncated.clone())?.to_vec();
    pos += len;
    let path2 = if op.has_path2() {
        let l2 = bytes.get(pos..pos + 4).ok_or(truncated.clone())?;
        let l2 = u32::from_le_bytes(l2.try_into().unwrap()) as usize;
        pos += 4;
        let p2 = bytes.get(pos..pos + l2).ok_or(truncated)?.to_vec();
        pos += l2;
        Some(p2)
    } else {
        None
    };
    Ok((
        Record {
            op,
            t_ns,
            size,
            mtime_ns,
            path,
            path2,
        },
        pos,
    ))
}

/// One `.ev` file read from a trace directory.
#[derive(Clone, Debug)]
pub struct TraceFile {
    /// Full path of the file.
    pub file: PathBuf,
    /// Its decoded content.
    pub trace: Trace,
}

/// Read and decode every `*.ev` file in `dir`, sorted by file name.
/// A file whose header cannot be decoded yields an `InvalidData` error.
pub fn read_trace_dir(dir: &Path) -> io::Result<Vec<TraceFile>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == FILE_EXTENSION))
        .collect();
    files.sort();
    let mut out = Vec::with_capacity(files.len());
    for file in files {
        let bytes = std::fs::read(&file)?;
        let trace = decode(&bytes).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {e}", file.display()),
            )
        })?;
        out.push(TraceFile { file, trace });
    }
    Ok(out)
}

/// Lexically normalise `path` into `out` (cleared first): the result is
/// absolute, has no `.` or `..` components, no duplicate or trailing `/`.
///
/// A relative `path` is resolved against `base`, which should be absolute (a
/// relative `base` is treated as if rooted at `/`). `..` at the root stays at
/// the root, as the kernel does. This is purely lexical: symlinks are not
/// resolved, so `a/link/..` becomes `a` (the format's definition of "same
/// path"). Works on raw bytes and never allocates beyond growing `out`.
pub fn normalize_into(base: &[u8], path: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(b'/');
    if path.first() != Some(&b'/') {
        push_components(out, base);
    }
    push_components(out, path);
}

/// Convenience wrapper around [`normalize_into`] returning a new vector.
pub fn normalize(base: &[u8], path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(base.len() + path.len() + 1);
    normalize_into(base, path, &mut out);
    out
}

fn push_components(out: &mut Vec<u8>, s: &[u8]) {
    for comp in s.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                // `out` always starts with '/', so rposition cannot fail; the
                // root itself is never popped.
                let cut = out.iter().rposition(|&b| b == b'/').unwrap_or(0);
                out.truncate(cut.max(1));
            }
            c => {
                if out.len() > 1 {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
}

/// Whether `path` equals `prefix` or lies below it (component-wise, so
/// `/procfoo` is not under `/proc`). Both must be normalised.
pub fn is_under(path: &[u8], prefix: &[u8]) -> bool {
    if prefix == b"/" {
        return path.first() == Some(&b'/');
    }
    path.starts_with(prefix) && (path.len() == prefix.len() || path[prefix.len()] == b'/')
}

/// CLOCK_MONOTONIC in nanoseconds (vDSO, ~20 ns): the `t_ns` clock of every
/// record, from every backend, so that records of different processes and
/// tracers merge in time order.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000_000)
        .wrapping_add(ts.tv_nsec as u64)
}

/// R, W or U from open(2) flags, or `None` for opens that do not name content
/// (O_PATH, O_DIRECTORY, O_TMPFILE). Shared by every tracer so that they
/// classify alike.
pub fn classify_open_flags(flags: i32) -> Option<Op> {
    use libc::{
        O_ACCMODE, O_APPEND, O_CREAT, O_DIRECTORY, O_PATH, O_RDONLY, O_RDWR, O_TMPFILE, O_TRUNC,
        O_WRONLY,
    };
    if flags & O_PATH != 0 || flags & O_TMPFILE == O_TMPFILE || flags & O_DIRECTORY != 0 {
        return None;
    }
    let acc = flags & O_ACCMODE;
    // An append keeps what was there: a log appended to is updated in place, so the
    // version at open is an input of the job (a tracer makes it W for a new file).
    if acc != O_RDONLY && flags & O_APPEND != 0 && flags & O_TRUNC == 0 {
        return Some(Op::Update);
    }
    // O_RDWR|O_CREAT without O_TRUNC is how SQLite, dbm and friends open a file
    // they may only read: U lets the reader decide by comparing (size, mtime)
    // at job end (a tracer turns it into W when the file turns out to be new).
    if acc == O_RDWR && flags & O_CREAT != 0 && flags & O_TRUNC == 0 {
        return Some(Op::Update);
    }
    if acc == O_WRONLY || flags & (O_CREAT | O_TRUNC) != 0 {
        Some(Op::Write)
    } else if acc == O_RDWR {
        Some(Op::Update)
    } else {
        Some(Op::Read)
    }
}

/// Whether `path` lies on a pseudo file system that holds no data worth tracking:
/// /proc, /sys and /dev, except /dev/shm (a tmpfs where programs keep real files).
/// Shared by every tracer so that they agree on what is never recorded.
pub fn is_pseudo_fs(path: &[u8]) -> bool {
    is_under(path, b"/proc")
        || is_under(path, b"/sys")
        || (is_under(path, b"/dev") && !is_under(path, b"/dev/shm"))
}

/// Render a raw path for humans: valid UTF-8 as is, other bytes as `\xNN`.
pub fn display_path(p: &[u8]) -> String {
    let mut s = String::with_capacity(p.len());
    for chunk in p.utf8_chunks() {
        s.push_str(chunk.valid());
        for b in chunk.invalid() {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_fs_keeps_dev_shm() {
        for p in [
            &b"/proc/self/maps"[..],
            b"/sys/kernel",
            b"/dev/null",
            b"/dev",
            b"/dev/pts/0",
        ] {
            assert!(is_pseudo_fs(p), "{:?}", display_path(p));
        }
        for p in [
            &b"/dev/shm/data.bin"[..],
            b"/dev/shm",
            b"/devices/x",
            b"/procfoo",
            b"/home/u/a",
        ] {
            assert!(!is_pseudo_fs(p), "{:?}", display_path(p));
        }
    }

    fn rec(op: Op, path: &[u8], path2: Option<&[u8]>) -> Record {
        Record {
            op,
            t_ns: 123_456_789_012,
            size: if op.has_stat() { 42 } else { 0 },
            mtime_ns: if op.has_stat() {
                1_700_000_000_123_456_789
            } else {
                -1
            },
            path: path.to_vec(),
            path2: path2.map(|p| p.to_vec()),
        }
    }

    #[test]
    fn roundtrip_all_ops() {
        let header = Header { pid: 4242, ppid: 1 };
        let records: Vec<Record> = vec![
            rec(Op::Read, b"/data/in.csv", None),
            rec(Op::Write, b"/data/out.csv", None),
            rec(Op::Update, b"/data/db", None),
            rec(Op::Delete, b"/data/tmp", None),
            rec(Op::Move, b"/data/ckpt.tmp", Some(b"/data/ckpt")),
            rec(Op::Link, b"/a", Some(b"/b")),
            rec(Op::Exec, b"/usr/bin/sort", None),
            rec(Op::Read, b"/caf\xe9/\xff\xfe", None),
        ];
        let mut buf = Vec::new();
        encode_header(&mut buf, &header);
        for r in &records {
            r.encode(&mut buf);
        }
        let t = decode(&buf).unwrap();
        assert_eq!(t.header, header);
        assert_eq!(t.records, records);
        assert_eq!(t.error, None);
    }

    #[test]
    fn exact_bytes() {
        let mut buf = Vec::new();
        encode_header(&mut buf, &Header { pid: 1, ppid: 2 });
        encode_record(&mut buf, Op::Move, 3, 0, -1, b"/a", Some(b"/bc"));
        let mut want = b"ROAREV01".to_vec();
        want.extend_from_slice(&[1, 0, 0, 0, 2, 0, 0, 0]);
        want.push(b'M');
        want.extend_from_slice(&3u64.to_le_bytes());
        want.extend_from_slice(&0u64.to_le_bytes());
        want.extend_from_slice(&(-1i64).to_le_bytes());
        want.extend_from_slice(&[2, 0, 0, 0, b'/', b'a', 3, 0, 0, 0, b'/', b'b', b'c']);
        assert_eq!(buf, want);
    }

    #[test]
    fn path2_only_for_m_and_l() {
        let mut buf = Vec::new();
        // A stray path2 on a non-M/L op must not reach the wire.
        encode_record(&mut buf, Op::Read, 0, 0, -1, b"/x", Some(b"/y"));
        assert_eq!(buf.len(), RECORD_FIXED_LEN + 2);
    }

    #[test]
    fn truncated_and_bad_tail() {
        let mut buf = Vec::new();
        encode_header(&mut buf, &Header { pid: 7, ppid: 6 });
        encode_record(&mut buf, Op::Write, 1, 0, -1, b"/ok", None);
        let good = buf.len();
        encode_record(&mut buf, Op::Move, 2, 0, -1, b"/from", Some(b"/to"));
        for cut in good + 1..buf.len() {
            let t = decode(&buf[..cut]).unwrap();
            assert_eq!(t.records.len(), 1);
            assert_eq!(t.error, Some(DecodeError::Truncated { offset: good }));
        }
        let mut bad = buf[..good].to_vec();
        bad.push(b'?');
        let t = decode(&bad).unwrap();
        assert_eq!(
            t.error,
            Some(DecodeError::UnknownOp {
                offset: good,
                byte: b'?'
            })
        );
        assert_eq!(decode(b"ROAREV0"), Err(DecodeError::ShortHeader));
        assert_eq!(
            decode(b"XXXXXXXX\0\0\0\0\0\0\0\0"),
            Err(DecodeError::BadMagic)
        );
    }

    #[test]
    fn normalisation() {
        let n =
            |b: &str, p: &str| String::from_utf8(normalize(b.as_bytes(), p.as_bytes())).unwrap();
        assert_eq!(n("/home/u", "a.txt"), "/home/u/a.txt");
        assert_eq!(n("/home/u", "./a/../b//c/."), "/home/u/b/c");
        assert_eq!(n("/home/u", "/etc//passwd"), "/etc/passwd");
        assert_eq!(n("/home/u", "../../../../x"), "/x");
        assert_eq!(n("/", ".."), "/");
        assert_eq!(n("/a/b/", ""), "/a/b");
        assert_eq!(n("/a/b", "c/"), "/a/b/c");
        assert_eq!(n("//a//./b/..", "..."), "/a/...");
        assert_eq!(n("rel/base", "f"), "/rel/base/f");
        assert_eq!(n("/a", "/"), "/");
        assert_eq!(n("/", "/../.."), "/");
        // ".." only pops whole components.
        assert_eq!(n("/ab", "..c/d"), "/ab/..c/d");
    }

    #[test]
    fn normalisation_non_utf8() {
        let p = normalize(b"/d\xff", b"./\xc3\x28/../\xfe\xfe//x");
        assert_eq!(p, b"/d\xff/\xfe\xfe/x".to_vec());
        assert_eq!(display_path(&p), "/d\\xff/\\xfe\\xfe/x");
    }

    #[test]
    fn normalisation_long_paths() {
        // 4000-byte paths (near PATH_MAX) with noise that must collapse.
        let comp = "c".repeat(99);
        let mut raw = String::new();
        let mut want = String::new();
        while want.len() < 4000 {
            raw.push_str(&format!("/{comp}/./x/..//"));
            want.push_str(&format!("/{comp}"));
        }
        let got = normalize(b"/", raw.as_bytes());
        assert_eq!(got, want.as_bytes());
        assert!(got.len() >= 4000);
        // And a single 4000-byte component survives intact and roundtrips.
        let long = format!("/{}", "z".repeat(3999));
        assert_eq!(normalize(b"/", long.as_bytes()), long.as_bytes());
        let mut buf = Vec::new();
        encode_header(&mut buf, &Header { pid: 1, ppid: 0 });
        encode_record(&mut buf, Op::Move, 5, 0, -1, &got, Some(long.as_bytes()));
        let t = decode(&buf).unwrap();
        assert_eq!(t.records[0].path, got);
        assert_eq!(t.records[0].path2.as_deref(), Some(long.as_bytes()));
    }

    #[test]
    fn under() {
        assert!(is_under(b"/proc", b"/proc"));
        assert!(is_under(b"/proc/self/fd", b"/proc"));
        assert!(!is_under(b"/procfoo", b"/proc"));
        assert!(!is_under(b"/pro", b"/proc"));
        assert!(is_under(b"/x", b"/"));
    }

    #[test]
    fn op_table() {
        for op in Op::ALL {
            assert_eq!(Op::from_byte(op.as_byte()), Some(op));
        }
        assert_eq!(Op::from_byte(b'Z'), None);
        assert!(Op::Move.has_path2() && Op::Link.has_path2() && !Op::Read.has_path2());
        assert!(!Op::Delete.is_deduplicated() && Op::Exec.is_deduplicated());
    }

    #[test]
    fn read_dir_sorted() {
        let dir = std::env::temp_dir().join(format!("roar-events-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, pid) in [("2-5.ev", 2u32), ("1-9.ev", 1)] {
            let mut buf = Vec::new();
            encode_header(&mut buf, &Header { pid, ppid: 0 });
            encode_record(&mut buf, Op::Read, 1, 2, 3, b"/f", None);
            std::fs::write(dir.join(name), buf).unwrap();
        }
        std::fs::write(dir.join("ignore.txt"), b"x").unwrap();
        let files = read_trace_dir(&dir).unwrap();
        assert_eq!(files.len(), 2);
        assert_eq!(files[0].trace.header.pid, 1);
        assert_eq!(files[1].trace.header.pid, 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
