//! roar-record: what the native tracers record, decided once.
//!
//! The LD_PRELOAD library (`roar-preload`, inside every traced process) and
//! the ptrace tracer (`roar-ptrace`, outside it) learn of the same calls by
//! different means. What they make of a call that succeeded on a resolved,
//! absolute path is decided here, so that the Python reader cannot tell the
//! backends apart:
//!
//! * **dedupe**: R, W, U and X are recorded once per (op, path) per process
//!   image ([`SeenSet`]); D, M, L and N every time (their order matters, and
//!   notes are rare);
//! * **forget**: a path deleted, moved away, or replaced (moved or linked
//!   over, exchanged) is forgotten for every op, so a later open of the same
//!   name is a new fact and is recorded again (W a, D a, W a);
//! * **keep**: an open is recorded only if it reached a regular file; when
//!   that cannot be told, a write still is (the reader checks the file at job
//!   end) and a read is not; a read-write open of an empty file is a W (it
//!   most likely created it; an unchanged empty U would read as an input);
//! * **pairs**: a rename or link with one side not recordable records its
//!   visible effect (W at the destination, D at a source moved away);
//! * **ignore**: pseudo file systems and the trace directory ([`ignored`]);
//! * **flush**: records are buffered and written to the adapter's [`Sink`]
//!   when the buffer passes [`FLUSH_AT`], and earlier as [`WriteThrough`]
//!   says.
//!
//! What it must not do: resolve names, stat files or write anything itself.
//! The adapter resolves paths its own way (getcwd and `/proc/self/fd` inside
//! the process, `/proc/<tid>/...` from outside), answers the one question
//! about the opened file ([`Found`], asked only for a new (op, path)), and
//! owns the trace file behind its [`Sink`]. This crate is std-only and calls
//! no libc function: the preload library runs it under its lock inside
//! arbitrary processes, where calling one of its own hooked symbols would
//! re-enter it. On the hot path it allocates nothing: the record buffer is
//! reserved once and reused, and the dedupe set keeps paths in one arena.

pub mod seen;

pub use roar_events::Op;
use roar_events::{encode_record, is_pseudo_fs, is_under};
pub use seen::SeenSet;

/// Write the buffer out once it holds this many bytes (~64 KiB per write()).
pub const FLUSH_AT: usize = 64 * 1024;

/// Bytes reserved for the record buffer at the first record: a buffer at the
/// threshold plus one large record, so filling it never reallocates.
const RESERVE: usize = FLUSH_AT + 8192;

/// When records are written out before the buffer reaches [`FLUSH_AT`]
/// (besides the flushes the adapter asks for: exec, exit, job end).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteThrough {
    /// Never: the ptrace tracer outlives its tracees and flushes an image
    /// when it exits or execs, whatever killed it.
    Never,
    /// Records that change files (everything but R and X), together with the
    /// reads buffered before them: the preload library inside a process that
    /// a signal may kill without any exit path (multiprocessing.Pool
    /// terminates its workers with SIGTERM); losing its outputs would
    /// silently break lineage. The cost is one write per distinct file
    /// written, never per write().
    Changes,
    /// Every record: a preload image whose destructor already ran, or one
    /// following a host's control block (nothing flushes an idle worker when
    /// a job ends).
    Every,
}

/// Where a [`Recorder`]'s records go: the adapter's trace file.
pub trait Sink {
    /// Append `records` (whole encoded records; empty only if the adapter
    /// calls it so itself) to this image's trace file, putting the header
    /// first if the file does not have it yet. Returns false if they could
    /// not be written; the adapter has then said so its own way (a `.lost`
    /// marker, a flag), and the records are dropped either way.
    fn write(&mut self, records: &[u8]) -> bool;
}

/// What an open reached, as the descriptor it returned says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Found {
    /// A regular file; `size` and `mtime_ns` are only read for R and U
    /// ([`Op::has_stat`]) and may be 0 and -1 otherwise.
    Regular {
        /// Size in bytes.
        size: u64,
        /// Modification time, ns since the epoch.
        mtime_ns: i64,
    },
    /// A directory, pipe, socket or device: never recorded.
    Other,
    /// The descriptor could not be examined (stat failed): a write is
    /// recorded, a read is not.
    Unknown,
    /// There is no descriptor (truncate, a name given to an O_TMPFILE file):
    /// the call itself says a file was there; recorded.
    NoDescriptor,
}

/// Paths never recorded: pseudo file systems (/proc, /sys, /dev but not
/// /dev/shm) and anything under the trace directory (our own files).
pub fn ignored(p: &[u8], trace_dir: &[u8]) -> bool {
    is_pseudo_fs(p) || (!trace_dir.is_empty() && is_under(p, trace_dir))
}

/// The dedupe-set bit of an op: its index in the EVENTS.md table. Only R, W,
/// U and X are ever set ([`Op::is_deduplicated`]).
fn op_bit(op: Op) -> u32 {
    match op {
        Op::Read => 0,
        Op::Write => 1,
        Op::Update => 2,
        Op::Delete => 3,
        Op::Move => 4,
        Op::Link => 5,
        Op::Exec | Op::Note => 6,
    }
}

/// The recording state of one process image: the record buffer, the dedupe
/// set and the flush policy. Every `on_*` method takes the image's [`Sink`],
/// which it writes to when the policy says so.
pub struct Recorder {
    buf: Vec<u8>,
    seen: SeenSet,
    write_through: WriteThrough,
    /// Flushed for good ([`Recorder::finish`]): later records are dropped.
    finished: bool,
}

impl Recorder {
    /// An empty recorder (allocates nothing until the first record; `const`,
    /// so it can sit in a static).
    pub const fn new(write_through: WriteThrough) -> Recorder {
        Recorder {
            buf: Vec::new(),
            seen: SeenSet::new(),
            write_through,
            finished: false,
        }
    }

    /// Change when records are written through (takes effect at the next record).
    pub fn set_write_through(&mut self, w: WriteThrough) {
        self.write_through = w;
    }

    /// A new image (fork child, new job): drop buffered records (they belong
    /// to the previous image, which flushes them itself) and every dedupe
    /// entry, and accept records again. Allocations are kept.
    pub fn reset(&mut self) {
        self.buf.clear();
        self.seen.clear();
        self.finished = false;
    }

    /// Whether (op, path) was already recorded in this image: an open that
    /// would add nothing can be let through without examining it.
    pub fn seen(&self, op: Op, p: &[u8]) -> bool {
        self.seen.contains(op_bit(op), p)
    }

    /// Bytes of records waiting for the next flush.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// Whether [`Recorder::finish`] ran.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// True the first time (op, path) is seen in this image.
    fn first_time(&mut self, op: Op, p: &[u8]) -> bool {
        self.seen.insert(op_bit(op), p)
    }

    /// After a path is removed, moved or replaced, a later open of the same
    /// name is a new fact and must be recorded again.
    fn forget(&mut self, p: &[u8]) {
        self.seen.remove(p);
    }

    /// Encode one record (at `t_ns`, else now) and flush if the policy says so.
    #[allow(clippy::too_many_arguments)]
    fn push(
        &mut self,
        out: &mut impl Sink,
        t_ns: Option<u64>,
        op: Op,
        size: u64,
        mtime_ns: i64,
        p: &[u8],
        p2: Option<&[u8]>,
    ) {
        if self.finished {
            return;
        }
        if self.buf.capacity() == 0 {
            self.buf.reserve(RESERVE);
        }
        let t = t_ns.unwrap_or_else(roar_events::now_ns);
        encode_record(&mut self.buf, op, t, size, mtime_ns, p, p2);
        let through = match self.write_through {
            WriteThrough::Never => false,
            WriteThrough::Changes => !matches!(op, Op::Read | Op::Exec),
            WriteThrough::Every => true,
        };
        if through || self.buf.len() >= FLUSH_AT {
            self.flush(out);
        }
    }

    /// A successful open-like call of kind `op` (R, W or U) on path `p`, at
    /// `t_ns` (None: now). `found` is asked what the open reached (its
    /// argument: whether size and mtime are wanted) only when (op, path) is
    /// new in this image, so a repeated open costs the adapter nothing more.
    pub fn on_open(
        &mut self,
        out: &mut impl Sink,
        t_ns: Option<u64>,
        op: Op,
        p: &[u8],
        found: impl FnOnce(bool) -> Found,
    ) {
        if !self.first_time(op, p) {
            return;
        }
        let (keep, size, mtime) = match found(op.has_stat()) {
            Found::Regular { size, mtime_ns } if op.has_stat() => (true, size, mtime_ns),
            Found::Regular { .. } | Found::NoDescriptor => (true, 0, -1),
            Found::Other => (false, 0, -1),
            Found::Unknown => (op == Op::Write, 0, -1),
        };
        if keep {
            let op = if op == Op::Update && size == 0 {
                Op::Write
            } else {
                op
            };
            self.push(out, t_ns, op, size, mtime, p, None);
        }
    }

    /// A write to `p` through a descriptor whose open was not classified as
    /// one (a shared writable mmap, a copy_file_range/sendfile/splice
    /// target), or a name that now holds other content: W once.
    pub fn on_written(&mut self, out: &mut impl Sink, p: &[u8]) {
        if self.first_time(Op::Write, p) {
            self.push(out, None, Op::Write, 0, -1, p, None);
        }
    }

    /// unlink/unlinkat/remove succeeded on a non-directory.
    pub fn on_delete(&mut self, out: &mut impl Sink, p: &[u8]) {
        self.forget(p);
        self.push(out, None, Op::Delete, 0, -1, p, None);
    }

    /// rename*/link* succeeded (`op` is [`Op::Move`] or [`Op::Link`]). `p1`,
    /// `p2` are `None` for a side that is not recordable (ignored, or not
    /// resolved): the visible effect is recorded instead, a file appearing at
    /// the destination as W, one vanishing from the source as D. This also
    /// covers `linkat("/proc/self/fd/N", dst)` for O_TMPFILE files.
    pub fn on_pair(&mut self, out: &mut impl Sink, op: Op, p1: Option<&[u8]>, p2: Option<&[u8]>) {
        match (p1, p2) {
            (Some(a), Some(b)) => {
                if op == Op::Move {
                    self.forget(a);
                }
                self.forget(b);
                self.push(out, None, op, 0, -1, a, Some(b));
            }
            (None, Some(b)) => {
                self.forget(b);
                self.on_written(out, b);
            }
            (Some(a), None) if op == Op::Move => {
                self.forget(a);
                self.push(out, None, Op::Delete, 0, -1, a, None);
            }
            _ => {}
        }
    }

    /// One side of renameat2(RENAME_EXCHANGE): the name now holds other
    /// content. M cannot express a swap, so each side is a W.
    pub fn on_exchange(&mut self, out: &mut impl Sink, p: &[u8]) {
        self.forget(p);
        self.on_written(out, p);
    }

    /// A program `p` was executed or spawned (X once).
    pub fn on_exec(&mut self, out: &mut impl Sink, p: &[u8]) {
        if self.first_time(Op::Exec, p) {
            self.push(out, None, Op::Exec, 0, -1, p, None);
        }
    }

    /// Something the tracer knows it did not see: `subject` (a path, a
    /// syscall name) and `what` (kind and detail; EVENTS.md). Never
    /// deduplicated: notes are rare and the reader merges them.
    pub fn on_note(&mut self, out: &mut impl Sink, subject: &[u8], what: &[u8]) {
        self.push(out, None, Op::Note, 0, -1, subject, Some(what));
    }

    /// Write the buffered records to `out` (nothing to do if none). Returns
    /// false if they had to be dropped. A buffer grown far past the
    /// threshold (one huge record) gives its memory back.
    pub fn flush(&mut self, out: &mut impl Sink) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let ok = out.write(&self.buf);
        self.buf.clear();
        if self.buf.capacity() > 4 * FLUSH_AT {
            self.buf.shrink_to(RESERVE);
        }
        ok
    }

    /// Flush for good (the image exited or exec'd): later records are
    /// dropped until [`Recorder::reset`]. Returns what the flush returned.
    pub fn finish(&mut self, out: &mut impl Sink) -> bool {
        if self.finished {
            return true;
        }
        let ok = self.flush(out);
        self.finished = true;
        ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use roar_events::{decode, encode_header, Header, Record};

    /// A trace file in memory: what reached the sink, write by write.
    #[derive(Default)]
    struct Mem {
        writes: Vec<Vec<u8>>,
        fail: bool,
    }

    impl Sink for Mem {
        fn write(&mut self, records: &[u8]) -> bool {
            if self.fail {
                return false;
            }
            self.writes.push(records.to_vec());
            true
        }
    }

    impl Mem {
        fn records(&self) -> Vec<Record> {
            let mut file = Vec::new();
            encode_header(&mut file, &Header { pid: 1, ppid: 0 });
            for w in &self.writes {
                file.extend_from_slice(w);
            }
            let t = decode(&file).expect("decodes");
            assert!(t.error.is_none());
            t.records
        }

        /// `op path[>path2]` per record, for compact assertions.
        fn ops(&self) -> Vec<String> {
            self.records()
                .iter()
                .map(|r| {
                    let mut s = format!("{} {}", r.op, String::from_utf8_lossy(&r.path));
                    if let Some(p2) = &r.path2 {
                        s.push('>');
                        s.push_str(&String::from_utf8_lossy(p2));
                    }
                    s
                })
                .collect()
        }
    }

    fn reg(size: u64, mtime_ns: i64) -> impl FnOnce(bool) -> Found {
        move |_| Found::Regular { size, mtime_ns }
    }

    /// Everything buffered, then flushed at once (the ptrace policy).
    fn batched() -> (Recorder, Mem) {
        (Recorder::new(WriteThrough::Never), Mem::default())
    }

    #[test]
    fn opens_are_recorded_once_per_op_and_path() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, Some(5), Op::Read, b"/a", reg(3, 7));
        r.on_open(&mut m, None, Op::Read, b"/a", |_| panic!("asked again"));
        r.on_open(&mut m, None, Op::Write, b"/a", reg(0, -1));
        r.on_open(&mut m, None, Op::Write, b"/a", |_| panic!("asked again"));
        r.on_exec(&mut m, b"/bin/x");
        r.on_exec(&mut m, b"/bin/x");
        assert!(r.seen(Op::Read, b"/a") && r.seen(Op::Exec, b"/bin/x"));
        assert!(!r.seen(Op::Update, b"/a"));
        r.flush(&mut m);
        assert_eq!(m.ops(), ["R /a", "W /a", "X /bin/x"]);
        let rec = m.records();
        assert_eq!((rec[0].t_ns, rec[0].size, rec[0].mtime_ns), (5, 3, 7));
        // W carries no stat even when the adapter reported one.
        assert_eq!((rec[1].size, rec[1].mtime_ns), (0, -1));
    }

    #[test]
    fn the_stat_is_asked_only_for_what_the_op_reports() {
        let (mut r, mut m) = batched();
        let mut asked = Vec::new();
        for (op, p) in [(Op::Read, b"/r"), (Op::Write, b"/w"), (Op::Update, b"/u")] {
            r.on_open(&mut m, None, op, p, |times| {
                asked.push(times);
                Found::Regular {
                    size: 1,
                    mtime_ns: 1,
                }
            });
        }
        assert_eq!(asked, [true, false, true]);
    }

    #[test]
    fn what_an_open_reached_decides_whether_it_is_kept() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Read, b"/dir", |_| Found::Other);
        r.on_open(&mut m, None, Op::Write, b"/fifo", |_| Found::Other);
        r.on_open(&mut m, None, Op::Read, b"/r?", |_| Found::Unknown);
        r.on_open(&mut m, None, Op::Update, b"/u?", |_| Found::Unknown);
        r.on_open(&mut m, None, Op::Write, b"/w?", |_| Found::Unknown);
        r.on_open(&mut m, None, Op::Write, b"/trunc", |_| Found::NoDescriptor);
        r.on_open(&mut m, None, Op::Read, b"/nofd", |_| Found::NoDescriptor);
        r.flush(&mut m);
        assert_eq!(m.ops(), ["W /w?", "W /trunc", "R /nofd"]);
        // A dropped open still counts as seen: it is not examined again.
        assert!(r.seen(Op::Read, b"/dir"));
    }

    #[test]
    fn an_update_of_an_empty_file_is_a_write() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Update, b"/new", reg(0, 9));
        r.on_open(&mut m, None, Op::Update, b"/old", reg(4, 9));
        r.flush(&mut m);
        assert_eq!(m.ops(), ["W /new", "U /old"]);
        assert_eq!(m.records()[1].size, 4);
    }

    #[test]
    fn deletes_moves_and_links_forget_the_names_they_replace() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Write, b"/a", reg(0, -1));
        r.on_delete(&mut m, b"/a");
        r.on_delete(&mut m, b"/a"); // never deduplicated
        r.on_open(&mut m, None, Op::Write, b"/a", reg(0, -1)); // W a, D a, W a
        r.on_open(&mut m, None, Op::Read, b"/b", reg(1, 1));
        r.on_open(&mut m, None, Op::Read, b"/c", reg(1, 1));
        r.on_pair(&mut m, Op::Move, Some(b"/a"), Some(b"/b"));
        r.on_open(&mut m, None, Op::Write, b"/a", reg(0, -1)); // moved away: new
        r.on_open(&mut m, None, Op::Read, b"/b", reg(1, 1)); // moved over: new
        r.on_pair(&mut m, Op::Link, Some(b"/b"), Some(b"/c"));
        r.on_open(&mut m, None, Op::Read, b"/b", reg(1, 1)); // a link source stays
        r.on_open(&mut m, None, Op::Read, b"/c", reg(1, 1)); // linked over: new
        r.flush(&mut m);
        assert_eq!(
            m.ops(),
            [
                "W /a", "D /a", "D /a", "W /a", "R /b", "R /c", "M /a>/b", "W /a", "R /b",
                "L /b>/c", "R /c"
            ]
        );
    }

    #[test]
    fn a_pair_with_one_side_out_of_sight_records_its_visible_effect() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Write, b"/dst", reg(0, -1));
        r.on_pair(&mut m, Op::Move, None, Some(b"/dst")); // replaced: W again
        r.on_pair(&mut m, Op::Link, None, Some(b"/dst2")); // O_TMPFILE given a name
        r.on_pair(&mut m, Op::Move, Some(b"/src"), None); // moved out of sight
        r.on_pair(&mut m, Op::Link, Some(b"/src2"), None); // the source is unchanged
        r.on_pair(&mut m, Op::Move, None, None);
        r.flush(&mut m);
        assert_eq!(m.ops(), ["W /dst", "W /dst", "W /dst2", "D /src"]);
    }

    #[test]
    fn an_exchange_makes_both_names_written() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Write, b"/x", reg(0, -1));
        r.on_exchange(&mut m, b"/x");
        r.on_exchange(&mut m, b"/y");
        r.on_written(&mut m, b"/y"); // already written since the exchange
        r.flush(&mut m);
        assert_eq!(m.ops(), ["W /x", "W /x", "W /y"]);
    }

    #[test]
    fn notes_are_never_deduplicated() {
        let (mut r, mut m) = batched();
        r.on_note(&mut m, b"/bin/static", b"static /bin/sh");
        r.on_note(&mut m, b"/bin/static", b"static /bin/sh");
        r.flush(&mut m);
        assert_eq!(
            m.ops(),
            [
                "N /bin/static>static /bin/sh",
                "N /bin/static>static /bin/sh"
            ]
        );
    }

    #[test]
    fn write_through_changes_flushes_with_every_record_that_changes_a_file() {
        let mut r = Recorder::new(WriteThrough::Changes);
        let mut m = Mem::default();
        r.on_open(&mut m, None, Op::Read, b"/in", reg(1, 1));
        r.on_exec(&mut m, b"/bin/x");
        assert!(m.writes.is_empty(), "reads and execs stay buffered");
        r.on_open(&mut m, None, Op::Write, b"/out", reg(0, -1));
        assert_eq!(
            m.writes.len(),
            1,
            "an output goes out at once, with the reads before it"
        );
        assert_eq!(m.ops(), ["R /in", "X /bin/x", "W /out"]);
        type Change<'a> = &'a dyn Fn(&mut Recorder, &mut Mem);
        let changes: [Change; 4] = [
            &|r, m| r.on_delete(m, b"/d"),
            &|r, m| r.on_pair(m, Op::Move, Some(b"/a"), Some(b"/b")),
            &|r, m| r.on_note(m, b"io_uring_setup", b"io_uring"),
            &|r, m| r.on_open(m, None, Op::Update, b"/u", reg(2, 2)),
        ];
        for (i, f) in changes.into_iter().enumerate() {
            f(&mut r, &mut m);
            assert_eq!(m.writes.len(), 2 + i);
            assert_eq!(r.buffered(), 0);
        }
    }

    #[test]
    fn write_through_every_and_never() {
        let mut r = Recorder::new(WriteThrough::Every);
        let mut m = Mem::default();
        r.on_open(&mut m, None, Op::Read, b"/in", reg(1, 1));
        assert_eq!(m.writes.len(), 1);
        r.set_write_through(WriteThrough::Never);
        r.on_delete(&mut m, b"/gone");
        r.on_open(&mut m, None, Op::Write, b"/out", reg(0, -1));
        assert_eq!(m.writes.len(), 1);
        assert!(r.buffered() > 0);
    }

    #[test]
    fn a_full_buffer_is_flushed_in_one_write() {
        let (mut r, mut m) = batched();
        let mut n = 0;
        while m.writes.is_empty() {
            let p = format!("/data/file-{n:06}");
            r.on_open(&mut m, None, Op::Read, p.as_bytes(), reg(1, 1));
            n += 1;
        }
        assert!(m.writes[0].len() >= FLUSH_AT && m.writes[0].len() < FLUSH_AT + 100);
        assert_eq!(r.buffered(), 0);
        assert_eq!(m.records().len(), n);
    }

    #[test]
    fn finish_flushes_once_and_drops_later_records_until_reset() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Read, b"/a", reg(1, 1));
        assert!(r.finish(&mut m));
        assert!(r.is_finished());
        r.on_delete(&mut m, b"/late");
        assert_eq!(r.buffered(), 0, "a finished image takes no records");
        assert!(r.finish(&mut m));
        assert!(r.flush(&mut m));
        assert_eq!(m.ops(), ["R /a"]);
        r.reset();
        assert!(!r.is_finished() && !r.seen(Op::Read, b"/a"));
        r.on_open(&mut m, None, Op::Read, b"/a", reg(1, 1));
        r.flush(&mut m);
        assert_eq!(m.ops(), ["R /a", "R /a"]);
    }

    #[test]
    fn reset_drops_what_was_buffered_for_the_previous_image() {
        let (mut r, mut m) = batched();
        r.on_open(&mut m, None, Op::Read, b"/parent", reg(1, 1));
        r.reset();
        assert_eq!(r.buffered(), 0);
        assert!(r.flush(&mut m));
        assert!(m.writes.is_empty());
    }

    #[test]
    fn a_failed_write_is_reported_and_the_records_dropped() {
        let (mut r, mut m) = batched();
        m.fail = true;
        r.on_open(&mut m, None, Op::Read, b"/a", reg(1, 1));
        assert!(!r.flush(&mut m));
        assert_eq!(r.buffered(), 0);
        m.fail = false;
        assert!(r.flush(&mut m), "nothing left to write");
        assert!(m.writes.is_empty());
    }

    #[test]
    fn ignored_paths() {
        // Pseudo file systems are roar_events::is_pseudo_fs (tested there);
        // here: that they and the trace directory are both ignored.
        let dir = b"/dev/shm/roar-traces-1/job";
        for p in [
            &b"/proc/self/status"[..],
            b"/dev/shm/roar-traces-1/job/1-2.ev",
            b"/dev/shm/roar-traces-1/job",
        ] {
            assert!(ignored(p, dir), "{}", String::from_utf8_lossy(p));
        }
        for p in [
            &b"/dev/shm/data.bin"[..],
            b"/dev/shm/roar-traces-1/job2/x",
            b"/procfs/x",
            b"/work/a",
        ] {
            assert!(!ignored(p, dir), "{}", String::from_utf8_lossy(p));
        }
        assert!(!ignored(b"/work/a", b""));
    }
}
