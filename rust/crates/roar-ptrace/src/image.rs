//! Per-process-image recording state: the same semantics as the preload
//! library's `State` (rust/crates/roar-preload/src/state.rs), but held in the
//! tracer rather than inside the traced process.
//!
//! One [`Image`] exists per process image (pid + exec generation): it owns the
//! record buffer, the (op, path) dedupe set and the cached cwd. Threads of a
//! process share one `Image` (they share the cwd); a fork gets a fresh image
//! with a copy of the parent's cwd; an exec
//! flushes the image and starts a new one (new `<pid>-<t0>.ev` file), exactly
//! as the preload library does, so the Python reader cannot tell backends
//! apart.
//!
//! This module decides *what* is recorded; it never talks to the tracee.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use roar_events::{encode_header, encode_record, is_pseudo_fs, is_under, Header, Op};

use crate::sys;

/// Flush a buffer to disk once it passes this size (same as the preload library).
const FLUSH_AT: usize = 64 * 1024;

/// Recording state of one process image.
pub struct Image {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    t0_ns: u64,
    buf: Vec<u8>,
    header_written: bool,
    seen: HashSet<Vec<u8>>,
    key: Vec<u8>,
    /// Cached working directory (`None`: read /proc/<tid>/cwd when needed).
    /// Dropped on chdir/fchdir.
    pub cwd: Option<Vec<u8>>,
    /// chdir/fchdir calls of this process between their entry and exit: the
    /// cwd may change under us, so it is read each time, never cached.
    pub chdirs_in_flight: u32,
    /// Live threads of this image; the image is flushed when it reaches 0.
    pub threads: u32,
    /// Flushed for good (exited or exec'd); later records are dropped.
    pub done: bool,
    /// Some flush failed: records were lost.
    pub write_failed: bool,
}

impl Image {
    /// A fresh image for `pid` (new process, or after exec).
    pub fn new(pid: u32, ppid: u32) -> Image {
        Image {
            pid,
            ppid,
            t0_ns: sys::now_ns(),
            buf: Vec::new(),
            header_written: false,
            seen: HashSet::new(),
            key: Vec::new(),
            cwd: None,
            chdirs_in_flight: 0,
            threads: 0,
            done: false,
            write_failed: false,
        }
    }

    /// Whether (op, path) was already recorded in this image (nothing to do).
    pub fn seen(&mut self, op: Op, p: &[u8]) -> bool {
        self.key.clear();
        self.key.push(op.as_byte());
        self.key.extend_from_slice(p);
        self.seen.contains(self.key.as_slice())
    }

    /// True the first time (op, path) is seen in this image.
    fn first_time(&mut self, op: Op, p: &[u8]) -> bool {
        self.key.clear();
        self.key.push(op.as_byte());
        self.key.extend_from_slice(p);
        if self.seen.contains(self.key.as_slice()) {
            false
        } else {
            self.seen.insert(self.key.clone());
            true
        }
    }

    /// After a path is removed, moved or replaced, a later open of the same
    /// name is a new fact and must be recorded again.
    fn forget(&mut self, p: &[u8]) {
        if self.seen.is_empty() {
            return;
        }
        for op in [Op::Read, Op::Write, Op::Update, Op::Exec] {
            self.key.clear();
            self.key.push(op.as_byte());
            self.key.extend_from_slice(p);
            self.seen.remove(self.key.as_slice());
        }
    }

    fn push(&mut self, dir: &[u8], op: Op, size: u64, mtime_ns: i64, p: &[u8], p2: Option<&[u8]>) {
        self.push_at(dir, sys::now_ns(), op, size, mtime_ns, p, p2)
    }

    #[allow(clippy::too_many_arguments)]
    fn push_at(
        &mut self,
        dir: &[u8],
        t_ns: u64,
        op: Op,
        size: u64,
        mtime_ns: i64,
        p: &[u8],
        p2: Option<&[u8]>,
    ) {
        if self.done {
            return;
        }
        encode_record(&mut self.buf, op, t_ns, size, mtime_ns, p, p2);
        if self.buf.len() >= FLUSH_AT {
            self.flush(dir);
        }
    }

    /// A successful open-like call on normalised path `p`, classified `op`,
    /// recorded as happening at `t_ns`. `st` is the file's state as the open
    /// found it (None for truncate, or if it could not be read).
    pub fn on_open(
        &mut self,
        dir: &[u8],
        t_ns: u64,
        op: Op,
        p: &[u8],
        st: Option<sys::FileStat>,
        has_fd: bool,
    ) {
        if !self.first_time(op, p) {
            return;
        }
        let (mut size, mut mtime) = (0u64, -1i64);
        let keep = match st {
            Some(st) => {
                if st.regular && op.has_stat() {
                    size = st.size;
                    mtime = st.mtime_ns;
                }
                st.regular
            }
            // No descriptor (truncate) or stat failed: a write is still worth
            // reporting (the reader checks the file at job end), a read is not.
            None => !has_fd || op == Op::Write,
        };
        if keep {
            // A read-write open that found an empty file most likely created
            // it: report a write (an unchanged empty U would read as an input).
            let op = if op == Op::Update && size == 0 {
                Op::Write
            } else {
                op
            };
            self.push_at(dir, t_ns, op, size, mtime, p, None);
        }
    }

    /// A write through a descriptor whose open we may not have classified as
    /// a write (mmap shared+writable, copy_file_range/sendfile/splice target).
    pub fn on_write_fd(&mut self, dir: &[u8], p: &[u8]) {
        if self.first_time(Op::Write, p) {
            self.push(dir, Op::Write, 0, -1, p, None);
        }
    }

    /// unlink/unlinkat succeeded on a non-directory.
    pub fn on_delete(&mut self, dir: &[u8], p: &[u8]) {
        self.forget(p);
        self.push(dir, Op::Delete, 0, -1, p, None);
    }

    /// rename*/link* succeeded. `p1`/`p2` are `None` when that side is not
    /// recordable (under /proc, /dev, the trace dir...): the visible effect
    /// is then recorded instead (W at the destination, D at the source).
    pub fn on_pair(&mut self, dir: &[u8], op: Op, p1: Option<&[u8]>, p2: Option<&[u8]>) {
        match (p1, p2) {
            (Some(a), Some(b)) => {
                if op == Op::Move {
                    self.forget(a);
                }
                self.forget(b);
                self.push(dir, op, 0, -1, a, Some(b));
            }
            (None, Some(b)) => {
                self.forget(b);
                if self.first_time(Op::Write, b) {
                    self.push(dir, Op::Write, 0, -1, b, None);
                }
            }
            (Some(a), None) if op == Op::Move => {
                self.forget(a);
                self.push(dir, Op::Delete, 0, -1, a, None);
            }
            _ => {}
        }
    }

    /// renameat2(RENAME_EXCHANGE): both names now hold other content.
    pub fn on_exchange(&mut self, dir: &[u8], p: &[u8]) {
        self.forget(p);
        if self.first_time(Op::Write, p) {
            self.push(dir, Op::Write, 0, -1, p, None);
        }
    }

    /// A successful exec of `p` (recorded in the image that called exec).
    pub fn on_exec(&mut self, dir: &[u8], p: &[u8]) {
        if self.first_time(Op::Exec, p) {
            self.push(dir, Op::Exec, 0, -1, p, None);
        }
    }

    /// Append buffered records to `<dir>/<pid>-<t0_ns>.ev` (header first).
    pub fn flush(&mut self, dir: &[u8]) {
        if self.buf.is_empty() || dir.is_empty() {
            self.buf.clear();
            return;
        }
        let mut name = dir.to_vec();
        name.extend_from_slice(format!("/{}-{}.ev", self.pid, self.t0_ns).as_bytes());
        let mut data = Vec::with_capacity(self.buf.len() + roar_events::HEADER_LEN);
        if !self.header_written {
            encode_header(
                &mut data,
                &Header {
                    pid: self.pid,
                    ppid: self.ppid,
                },
            );
        }
        data.extend_from_slice(&self.buf);
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let ok = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(Path::new(std::ffi::OsStr::from_bytes(&name)))
            .and_then(|mut f| f.write_all(&data))
            .is_ok();
        if ok {
            self.header_written = true;
        } else {
            self.write_failed = true;
        }
        self.buf.clear();
    }

    /// Flush and stop recording into this image.
    pub fn finish(&mut self, dir: &[u8]) {
        if !self.done {
            self.flush(dir);
            self.done = true;
        }
    }
}

/// Paths never recorded: pseudo file systems and the trace directory itself.
pub fn ignored(p: &[u8], trace_dir: &[u8]) -> bool {
    is_pseudo_fs(p) || (!trace_dir.is_empty() && is_under(p, trace_dir))
}
