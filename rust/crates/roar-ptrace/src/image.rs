//! Per-process-image recording state: the ptrace adapter over the recording
//! core both tracers share (`roar-record`: dedupe, forget, keep and flush
//! rules), held in the tracer rather than inside the traced process.
//!
//! One [`Image`] exists per process image (pid + exec generation): it owns a
//! [`Recorder`] (record buffer and (op, path) dedupe set), the trace file it
//! flushes to, and the cached cwd. Threads of a
//! process share one `Image` (they share the cwd); a fork gets a fresh image
//! with a copy of the parent's cwd; an exec
//! flushes the image and starts a new one (new `<pid>-<t0>.ev` file), exactly
//! as the preload library does, so the Python reader cannot tell backends
//! apart.
//!
//! This module hands resolved paths and what the tracer saw of them to the
//! core, which decides what is recorded; it never talks to the tracee.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use roar_events::{encode_header, Header, Op};
use roar_record::{Found, Recorder, Sink, WriteThrough};

use crate::sys;

pub use roar_record::ignored;

/// Recording state of one process image.
pub struct Image {
    /// Process id (thread-group id).
    pub pid: u32,
    /// Parent process id.
    pub ppid: u32,
    t0_ns: u64,
    /// Dedupe set, buffer and flush policy (the tracer flushes an image when
    /// it exits or execs, whatever killed it, so nothing is written through).
    rec: Recorder,
    header_written: bool,
    /// Cached working directory (`None`: read /proc/<tid>/cwd when needed).
    /// Dropped on chdir/fchdir.
    pub cwd: Option<Vec<u8>>,
    /// chdir/fchdir calls of this process between their entry and exit: the
    /// cwd may change under us, so it is read each time, never cached.
    pub chdirs_in_flight: u32,
    /// Live threads of this image; the image is flushed when it reaches 0.
    pub threads: u32,
    /// Some flush failed: records were lost.
    pub write_failed: bool,
}

/// An image's [`Sink`]: `<dir>/<pid>-<t0_ns>.ev`, opened for each flush.
struct Out<'a> {
    dir: &'a [u8],
    pid: u32,
    ppid: u32,
    t0_ns: u64,
    header_written: &'a mut bool,
    write_failed: &'a mut bool,
}

impl Sink for Out<'_> {
    /// Append to `<dir>/<pid>-<t0_ns>.ev` (header first).
    fn write(&mut self, records: &[u8]) -> bool {
        if self.dir.is_empty() {
            return true;
        }
        let mut name = self.dir.to_vec();
        name.extend_from_slice(format!("/{}-{}.ev", self.pid, self.t0_ns).as_bytes());
        let mut data = Vec::with_capacity(records.len() + roar_events::HEADER_LEN);
        if !*self.header_written {
            encode_header(
                &mut data,
                &Header {
                    pid: self.pid,
                    ppid: self.ppid,
                },
            );
        }
        data.extend_from_slice(records);
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
            *self.header_written = true;
        } else {
            *self.write_failed = true;
        }
        ok
    }
}

impl Image {
    /// A fresh image for `pid` (new process, or after exec).
    pub fn new(pid: u32, ppid: u32) -> Image {
        Image {
            pid,
            ppid,
            t0_ns: sys::now_ns(),
            rec: Recorder::new(WriteThrough::Never),
            header_written: false,
            cwd: None,
            chdirs_in_flight: 0,
            threads: 0,
            write_failed: false,
        }
    }

    /// The recorder and the sink of this image's trace file in `dir`.
    fn parts<'a>(&'a mut self, dir: &'a [u8]) -> (&'a mut Recorder, Out<'a>) {
        let out = Out {
            dir,
            pid: self.pid,
            ppid: self.ppid,
            t0_ns: self.t0_ns,
            header_written: &mut self.header_written,
            write_failed: &mut self.write_failed,
        };
        (&mut self.rec, out)
    }

    /// Whether (op, path) was already recorded in this image (nothing to do).
    pub fn seen(&mut self, op: Op, p: &[u8]) -> bool {
        self.rec.seen(op, p)
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
        let found = match st {
            Some(st) if st.regular => Found::Regular {
                size: st.size,
                mtime_ns: st.mtime_ns,
            },
            Some(_) => Found::Other,
            None if has_fd => Found::Unknown,
            None => Found::NoDescriptor,
        };
        let (rec, mut out) = self.parts(dir);
        rec.on_open(&mut out, Some(t_ns), op, p, |_| found);
    }

    /// A write through a descriptor whose open we may not have classified as
    /// a write (mmap shared+writable, copy_file_range/sendfile/splice target).
    pub fn on_write_fd(&mut self, dir: &[u8], p: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.on_written(&mut out, p);
    }

    /// unlink/unlinkat succeeded on a non-directory.
    pub fn on_delete(&mut self, dir: &[u8], p: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.on_delete(&mut out, p);
    }

    /// rename*/link* succeeded. `p1`/`p2` are `None` when that side is not
    /// recordable (under /proc, /dev, the trace dir...): the visible effect
    /// is then recorded instead (W at the destination, D at the source).
    pub fn on_pair(&mut self, dir: &[u8], op: Op, p1: Option<&[u8]>, p2: Option<&[u8]>) {
        let (rec, mut out) = self.parts(dir);
        rec.on_pair(&mut out, op, p1, p2);
    }

    /// renameat2(RENAME_EXCHANGE): both names now hold other content.
    pub fn on_exchange(&mut self, dir: &[u8], p: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.on_exchange(&mut out, p);
    }

    /// A successful exec of `p` (recorded in the image that called exec).
    pub fn on_exec(&mut self, dir: &[u8], p: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.on_exec(&mut out, p);
    }

    /// Append buffered records to `<dir>/<pid>-<t0_ns>.ev` (header first).
    pub fn flush(&mut self, dir: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.flush(&mut out);
    }

    /// Flush and stop recording into this image (exited or exec'd): later
    /// records are dropped.
    pub fn finish(&mut self, dir: &[u8]) {
        let (rec, mut out) = self.parts(dir);
        rec.finish(&mut out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(std::path::PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir().join(format!(
                "roar-image-{tag}-{}-{}",
                std::process::id(),
                sys::now_ns()
            ));
            std::fs::create_dir(&p).unwrap();
            TempDir(p)
        }
        fn bytes(&self) -> Vec<u8> {
            self.0.as_os_str().as_bytes().to_vec()
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn regular(size: u64) -> Option<sys::FileStat> {
        Some(sys::FileStat {
            regular: true,
            size,
            mtime_ns: 7,
            dev: 1,
            ino: 2,
            perm: 0o644,
            uid: 0,
            gid: 0,
        })
    }

    #[test]
    fn an_image_writes_one_file_with_one_header_through_the_core() {
        let d = TempDir::new("file");
        let dir = d.bytes();
        let mut img = Image::new(4242, 1);
        img.on_open(&dir, 10, Op::Read, b"/in", regular(3), true);
        img.on_open(&dir, 11, Op::Read, b"/in", regular(3), true); // deduplicated
        img.on_open(&dir, 12, Op::Update, b"/new", regular(0), true); // empty: W
        img.on_open(&dir, 13, Op::Write, b"/t", None, false); // truncate: kept
        img.on_open(&dir, 14, Op::Read, b"/gone", None, true); // unknown read: dropped
        assert!(
            std::fs::read_dir(&d.0).unwrap().next().is_none(),
            "nothing written through"
        );
        img.flush(&dir);
        img.on_pair(&dir, Op::Move, Some(b"/new"), Some(b"/out"));
        img.finish(&dir);
        img.on_delete(&dir, b"/late"); // after finish: dropped
        img.finish(&dir);
        let files: Vec<_> = std::fs::read_dir(&d.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1);
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(name, format!("4242-{}.ev", img.t0_ns));
        let t = roar_events::decode(&std::fs::read(&files[0]).unwrap()).unwrap();
        assert!(t.error.is_none());
        assert_eq!((t.header.pid, t.header.ppid), (4242, 1));
        let got: Vec<(Op, &[u8])> = t.records.iter().map(|r| (r.op, &r.path[..])).collect();
        assert_eq!(
            got,
            [
                (Op::Read, &b"/in"[..]),
                (Op::Write, b"/new"),
                (Op::Write, b"/t"),
                (Op::Move, b"/new")
            ]
        );
        assert_eq!((t.records[0].t_ns, t.records[0].size), (10, 3));
        assert!(!img.write_failed);
    }

    #[test]
    fn a_flush_that_cannot_write_says_so() {
        let d = TempDir::new("gone");
        let mut dir = d.bytes();
        dir.extend_from_slice(b"/missing");
        let mut img = Image::new(1, 0);
        img.on_open(&dir, 1, Op::Read, b"/in", regular(1), true);
        assert!(!img.write_failed);
        img.finish(&dir);
        assert!(img.write_failed);
    }
}
