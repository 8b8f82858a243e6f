//! The ptrace event loop: follows every thread and process of the traced
//! command and turns the syscalls stopped by the seccomp filter into records.
//!
//! Life of an interesting syscall (seccomp mode, the normal one):
//!
//! 1. the filter returns `SECCOMP_RET_TRACE`: the thread stops *before* the
//!    call runs (`PTRACE_EVENT_SECCOMP`); we read its number and arguments
//!    with `PTRACE_GET_SYSCALL_INFO`, copy path arguments out of its memory
//!    with `process_vm_readv`, resolve them against the cwd / dirfd *as they
//!    are now* (before the call could change them), and remember a
//!    [`Pending`] call;
//! 2. we restart it with `PTRACE_SYSCALL`, so it stops once more when the
//!    call returns; only then do we know whether it succeeded and which fd
//!    it returned, and record it (only successful calls are recorded);
//! 3. every other syscall never leaves the kernel's fast path.
//!
//! When seccomp cannot be installed the same code runs with `PTRACE_SYSCALL`
//! on every call ("all-syscalls mode"): slower, same records.
//!
//! Robustness: recording runs under `catch_unwind`. A bug in it switches the
//! tracer to *degraded* mode (a note says from when records are missing), in
//! which it keeps doing the one thing the traced program depends on:
//! restarting every stop with the right signal. The tracer never kills a
//! tracee and never sets `PTRACE_O_EXITKILL`.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use roar_events::{normalize_into, Op};

use crate::image::{ignored, FdEntry, Image};
use crate::sys::{self, Resume, SyscallInfo};

type ImageRef = Rc<RefCell<Image>>;

/// A syscall seen at entry whose result we wait for.
#[derive(Debug)]
enum Pending {
    /// open/openat/openat2/creat (`has_fd`), truncate and nameless linkat (no fd).
    Open { op: Op, path: Vec<u8>, has_fd: bool },
    /// unlink/unlinkat.
    Delete { path: Vec<u8> },
    /// rename*/link*; a side is `None` when it is not recordable.
    Pair {
        op: Op,
        p1: Option<Vec<u8>>,
        p2: Option<Vec<u8>>,
    },
    /// renameat2(RENAME_EXCHANGE).
    Exchange {
        p1: Option<Vec<u8>>,
        p2: Option<Vec<u8>>,
    },
    /// execve/execveat: recorded at the exec event (success), not at exit.
    Exec { path: Vec<u8> },
    /// A write through a descriptor: mmap(PROT_WRITE, MAP_SHARED) or the
    /// destination of copy_file_range/sendfile/splice.
    WriteFd { fd: i32 },
    /// chdir/fchdir: the cached cwd becomes stale.
    Chdir,
}

struct Thread {
    tgid: i32,
    image: ImageRef,
    pending: Option<Pending>,
}

/// What the event loop needs to know from its caller.
pub struct Options {
    /// Normalised absolute trace directory (empty: record nothing).
    pub trace_dir: Vec<u8>,
    /// Seccomp could not be installed: stop on every syscall.
    pub all_syscalls: bool,
    /// Fault injection for tests: panic while recording the first open.
    pub fault_panic: bool,
}

/// The tracer state for one traced command.
pub struct Tracer {
    opts: Options,
    threads: HashMap<i32, Thread>,
    images: HashMap<i32, ImageRef>,
    /// Threads whose initial auto-attach SIGSTOP has been consumed. Kept
    /// outside the recording state on purpose: it must stay right even
    /// after a recording bug, or a new child would stay stopped forever.
    started: HashSet<i32>,
    root: i32,
    /// Set when recording failed; records after this are missing.
    pub degraded: Option<String>,
    buf1: Vec<u8>,
    buf2: Vec<u8>,
}

fn wifexited(s: i32) -> bool {
    libc::WIFEXITED(s)
}

impl Tracer {
    /// A tracer whose root tracee `root` has just stopped for the first time
    /// (options already set by the caller). `tracer_pid` becomes its ppid.
    pub fn new(opts: Options, root: i32, tracer_pid: i32) -> Tracer {
        let mut t = Tracer {
            opts,
            threads: HashMap::new(),
            images: HashMap::new(),
            started: HashSet::new(),
            root,
            degraded: None,
            buf1: Vec::with_capacity(sys::PATH_MAX),
            buf2: Vec::with_capacity(sys::PATH_MAX),
        };
        let img = Rc::new(RefCell::new(Image::new(root as u32, tracer_pid as u32)));
        img.borrow_mut().threads = 1;
        t.images.insert(root, img.clone());
        t.threads.insert(
            root,
            Thread {
                tgid: root,
                image: img,
                pending: None,
            },
        );
        t.started.insert(root);
        t
    }

    fn default_resume(&self) -> Resume {
        if self.opts.all_syscalls {
            Resume::Syscall
        } else {
            Resume::Cont
        }
    }

    /// Run until every tracee is gone. `on_root_exit(status, remaining)` is
    /// called once, when the root process ends, with its wait status and the
    /// number of traced threads still alive (descendants that outlive it).
    pub fn run(&mut self, mut on_root_exit: impl FnMut(&mut Tracer, i32, usize)) {
        loop {
            let mut status = 0;
            let tid = sys::wait_any(&mut status);
            if tid < 0 {
                if sys::errno() == libc::EINTR {
                    continue;
                }
                break; // ECHILD: no tracee left
            }
            if wifexited(status) || libc::WIFSIGNALED(status) {
                self.started.remove(&tid);
                self.guarded(|t| t.thread_gone(tid));
                if tid == self.root {
                    let remaining = self.threads.len();
                    on_root_exit(self, status, remaining);
                }
                continue;
            }
            if !libc::WIFSTOPPED(status) {
                continue;
            }
            let sig = libc::WSTOPSIG(status);
            let event = (status >> 16) & 0xffff;
            if self.started.insert(tid) && sig == libc::SIGSTOP && event == 0 {
                // The auto-attach stop of a new thread/process: swallow it.
                self.guarded(|t| t.ensure_thread(tid, None, 0));
                sys::resume(tid, self.default_resume(), 0);
                continue;
            }
            let syscall_stop = sig == libc::SIGTRAP | 0x80;
            let event_stop = sig == libc::SIGTRAP && event != 0;
            if event == libc::PTRACE_EVENT_EXEC {
                // The exec'ing thread may have had another tid (a non-leader
                // thread execs and takes over the leader's id).
                if let Some(former) = sys::event_msg(tid) {
                    let former = former as i32;
                    if former != tid {
                        self.started.remove(&former);
                    }
                }
            }
            let need_exit = self
                .guarded(|t| t.on_stop(tid, sig, event))
                .unwrap_or(false);
            let how = if need_exit {
                Resume::Syscall
            } else {
                self.default_resume()
            };
            let deliver = if syscall_stop || event_stop { 0 } else { sig };
            sys::resume(tid, how, deliver);
        }
        self.finish_all();
    }

    /// Run recording code; a panic switches to degraded mode instead of
    /// unwinding out of the loop (which would leave tracees stopped).
    fn guarded<R>(&mut self, f: impl FnOnce(&mut Tracer) -> R) -> Option<R> {
        if self.degraded.is_some() {
            return None;
        }
        match catch_unwind(AssertUnwindSafe(|| f(self))) {
            Ok(r) => Some(r),
            Err(e) => {
                let msg = e
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| e.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                self.degraded = Some(format!(
                    "ptrace tracer error ({msg}); file I/O after it was not recorded"
                ));
                // Keep what was recorded so far.
                self.finish_all_flush_only();
                None
            }
        }
    }

    /// Every remaining image is flushed (end of tracing).
    pub fn finish_all(&mut self) {
        let dir = self.opts.trace_dir.clone();
        for img in self.images.values() {
            if let Ok(mut i) = img.try_borrow_mut() {
                i.finish(&dir);
            }
        }
    }

    fn finish_all_flush_only(&mut self) {
        let dir = self.opts.trace_dir.clone();
        for img in self.images.values() {
            if let Ok(mut i) = img.try_borrow_mut() {
                i.flush(&dir);
            }
        }
    }

    /// Whether any image lost records because its trace file could not be written.
    pub fn write_failed(&self) -> bool {
        self.images
            .values()
            .any(|i| i.try_borrow().map(|i| i.write_failed).unwrap_or(false))
    }

    fn on_stop(&mut self, tid: i32, sig: i32, event: i32) -> bool {
        self.ensure_thread(tid, None, 0);
        if sig == libc::SIGTRAP | 0x80 {
            return match sys::syscall_info(tid) {
                Ok(SyscallInfo::Entry { arch, nr, args }) => self.on_entry(tid, arch, nr, args),
                Ok(SyscallInfo::Exit { rval, is_error }) => {
                    self.on_exit(tid, rval, is_error);
                    false
                }
                _ => false,
            };
        }
        if sig != libc::SIGTRAP {
            return false; // signal-delivery stop
        }
        match event {
            libc::PTRACE_EVENT_SECCOMP => match sys::syscall_info(tid) {
                Ok(SyscallInfo::Entry { arch, nr, args }) => self.on_entry(tid, arch, nr, args),
                _ => false,
            },
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK | libc::PTRACE_EVENT_CLONE => {
                if let Some(new) = sys::event_msg(tid) {
                    self.ensure_thread(new as i32, Some(tid), event);
                }
                false
            }
            libc::PTRACE_EVENT_EXEC => {
                let former = sys::event_msg(tid).map(|f| f as i32).unwrap_or(tid);
                self.on_exec(tid, former);
                false
            }
            _ => false,
        }
    }

    /// Make sure `tid` is known: a new process gets a fresh image (with a
    /// copy of its parent's cwd and fd table), a new thread joins its
    /// process's image.
    fn ensure_thread(&mut self, tid: i32, parent: Option<i32>, event: i32) {
        if let Some(th) = self.threads.get(&tid) {
            // Adopted from its own first stop before the parent's fork event
            // arrived: give it the parent's cwd and fds now.
            if let (Some(p), true) = (parent, th.tgid == tid) {
                let child_img = th.image.clone();
                if let Some(pimg) = self.threads.get(&p).map(|t| t.image.clone()) {
                    if !Rc::ptr_eq(&pimg, &child_img) {
                        let pi = pimg.borrow();
                        let mut ci = child_img.borrow_mut();
                        if ci.cwd.is_none() {
                            ci.cwd = pi.cwd.clone();
                        }
                        if ci.fds.is_empty() {
                            ci.fds = pi.fds.clone();
                        }
                    }
                }
            }
            return;
        }
        let parent_img = parent.and_then(|p| self.threads.get(&p).map(|t| t.image.clone()));
        let (tgid, ppid) = if event == libc::PTRACE_EVENT_FORK || event == libc::PTRACE_EVENT_VFORK
        {
            let ppid = parent
                .and_then(|p| self.threads.get(&p).map(|t| t.tgid))
                .unwrap_or(0);
            (tid, ppid)
        } else {
            sys::tgid_ppid(tid).unwrap_or((tid, 0))
        };
        let image = match self.images.get(&tgid) {
            Some(img) if tgid != tid => img.clone(),
            _ => {
                let mut img = Image::new(tgid as u32, ppid as u32);
                if let Some(p) = &parent_img {
                    let p = p.borrow();
                    img.cwd = p.cwd.clone();
                    img.fds = p.fds.clone();
                }
                let img = Rc::new(RefCell::new(img));
                self.images.insert(tgid, img.clone());
                img
            }
        };
        image.borrow_mut().threads += 1;
        self.threads.insert(
            tid,
            Thread {
                tgid,
                image,
                pending: None,
            },
        );
    }

    fn thread_gone(&mut self, tid: i32) {
        let Some(th) = self.threads.remove(&tid) else {
            return;
        };
        let mut img = th.image.borrow_mut();
        img.threads = img.threads.saturating_sub(1);
        if img.threads == 0 {
            img.finish(&self.opts.trace_dir);
            drop(img);
            if self
                .images
                .get(&th.tgid)
                .is_some_and(|i| Rc::ptr_eq(i, &th.image))
            {
                self.images.remove(&th.tgid);
            }
        }
    }

    fn on_exec(&mut self, tid: i32, former: i32) {
        let dir = self.opts.trace_dir.clone();
        let mut pending = None;
        if former != tid {
            // A non-leader thread exec'd: it now runs as `tid` (the leader's
            // id), whose own death is never reported.
            if let Some(ft) = self.threads.remove(&former) {
                pending = ft.pending;
            }
        }
        let Some(th) = self.threads.get_mut(&tid) else {
            return;
        };
        if pending.is_none() {
            pending = th.pending.take();
        }
        th.pending = None;
        let old = th.image.clone();
        let mut new_img = {
            let mut o = old.borrow_mut();
            if let Some(Pending::Exec { path }) = &pending {
                o.on_exec(&dir, path);
            }
            o.finish(&dir);
            let mut n = Image::new(o.pid, o.ppid);
            n.cwd = o.cwd.clone();
            n.fds = o.fds.clone(); // fds without O_CLOEXEC survive exec
            n
        };
        new_img.threads = 1;
        let new_img = Rc::new(RefCell::new(new_img));
        th.image = new_img.clone();
        let tgid = th.tgid;
        self.images.insert(tgid, new_img);
    }

    /// Absolute normalised form of `raw` for thread `tid`, relative to
    /// `dirfd`; `None` if it cannot be resolved or is never recorded.
    fn resolve(&mut self, tid: i32, dirfd: i32, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if raw.is_empty() {
            return false;
        }
        if raw[0] == b'/' {
            normalize_into(b"/", raw, out);
        } else {
            let mut base = std::mem::take(&mut self.buf2);
            let ok = if dirfd == libc::AT_FDCWD {
                let img = self.threads[&tid].image.clone();
                let mut img = img.borrow_mut();
                if let Some(c) = &img.cwd {
                    base.clear();
                    base.extend_from_slice(c);
                    true
                } else if sys::readlink(&format!("/proc/{tid}/cwd"), &mut base) {
                    img.cwd = Some(base.clone());
                    true
                } else {
                    false
                }
            } else {
                sys::readlink(&format!("/proc/{tid}/fd/{dirfd}"), &mut base)
                    && base.first() == Some(&b'/')
            };
            if ok {
                normalize_into(&base, raw, out);
            }
            self.buf2 = base;
            if !ok {
                return false;
            }
        }
        !ignored(out, &self.opts.trace_dir)
    }

    /// Read the path argument at `addr` and resolve it; `None` if not recordable.
    fn path_arg(&mut self, tid: i32, dirfd: i32, addr: u64) -> Option<Vec<u8>> {
        let mut raw = std::mem::take(&mut self.buf1);
        let mut out = Vec::new();
        let ok = sys::read_cstr(tid, addr, &mut raw) && self.resolve(tid, dirfd, &raw, &mut out);
        self.buf1 = raw;
        ok.then_some(out)
    }

    /// Path of descriptor `fd` of `tid` if it is a regular, recordable file:
    /// the lexical path from our fd table when the inode still matches,
    /// else the kernel's name for it.
    fn fd_target(&mut self, tid: i32, fd: i32) -> Option<Vec<u8>> {
        let st = sys::stat_fd(tid, fd)?;
        if !st.regular {
            return None;
        }
        let img = self.threads.get(&tid)?.image.clone();
        if let Some(e) = img.borrow().fds.get(&fd) {
            if e.dev == st.dev && e.ino == st.ino {
                return Some(e.path.clone());
            }
        }
        let mut link = Vec::new();
        if !sys::readlink(&format!("/proc/{tid}/fd/{fd}"), &mut link)
            || link.first() != Some(&b'/')
            || link.ends_with(b" (deleted)")
        {
            return None;
        }
        let mut out = Vec::new();
        normalize_into(b"/", &link, &mut out);
        (!ignored(&out, &self.opts.trace_dir)).then_some(out)
    }

    /// A syscall is about to run. Returns whether to stop again at its exit.
    fn on_entry(&mut self, tid: i32, arch: u32, nr: i64, a: [u64; 6]) -> bool {
        if arch != sys::NATIVE_AUDIT_ARCH {
            return false;
        }
        let fdarg = |x: u64| x as i32;
        let pending = match nr {
            #[cfg(target_arch = "x86_64")]
            libc::SYS_open => self.open_like(tid, libc::AT_FDCWD, a[0], a[1] as i32),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_creat => self.open_like(
                tid,
                libc::AT_FDCWD,
                a[0],
                libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC,
            ),
            libc::SYS_openat => self.open_like(tid, fdarg(a[0]), a[1], a[2] as i32),
            libc::SYS_openat2 => {
                // struct open_how { u64 flags; u64 mode; u64 resolve; }
                let mut how = [0u8; 8];
                if a[3] < 8 || sys::read_mem(tid, a[2], &mut how) != 8 {
                    None
                } else {
                    let flags = u64::from_le_bytes(how) as i32;
                    self.open_like(tid, fdarg(a[0]), a[1], flags)
                }
            }
            libc::SYS_truncate => self
                .path_arg(tid, libc::AT_FDCWD, a[0])
                .map(|path| Pending::Open {
                    op: Op::Write,
                    path,
                    has_fd: false,
                }),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_unlink => self
                .path_arg(tid, libc::AT_FDCWD, a[0])
                .map(|path| Pending::Delete { path }),
            libc::SYS_unlinkat => {
                if a[2] as i32 & libc::AT_REMOVEDIR != 0 {
                    None
                } else {
                    self.path_arg(tid, fdarg(a[0]), a[1])
                        .map(|path| Pending::Delete { path })
                }
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_rename => self.pair(tid, Op::Move, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0),
            libc::SYS_renameat => self.pair(tid, Op::Move, fdarg(a[0]), a[1], fdarg(a[2]), a[3], 0),
            libc::SYS_renameat2 => {
                self.pair(tid, Op::Move, fdarg(a[0]), a[1], fdarg(a[2]), a[3], a[4] as u32)
            }
            #[cfg(target_arch = "x86_64")]
            libc::SYS_link => self.pair(tid, Op::Link, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0),
            libc::SYS_linkat => {
                let flags = a[4] as i32;
                let mut raw = Vec::new();
                let old_empty = sys::read_cstr(tid, a[1], &mut raw) && raw.is_empty();
                if flags & libc::AT_EMPTY_PATH != 0 && old_empty {
                    // Naming an open (typically O_TMPFILE) file: a new file appears.
                    self.path_arg(tid, fdarg(a[2]), a[3]).map(|path| Pending::Open {
                        op: Op::Write,
                        path,
                        has_fd: false,
                    })
                } else {
                    self.pair(tid, Op::Link, fdarg(a[0]), a[1], fdarg(a[2]), a[3], 0)
                }
            }
            libc::SYS_execve => self
                .path_arg(tid, libc::AT_FDCWD, a[0])
                .map(|path| Pending::Exec { path }),
            libc::SYS_execveat => {
                let mut raw = Vec::new();
                let empty = sys::read_cstr(tid, a[1], &mut raw) && raw.is_empty();
                if a[4] as i32 & libc::AT_EMPTY_PATH != 0 && empty {
                    self.fd_target(tid, fdarg(a[0]))
                        .map(|path| Pending::Exec { path })
                } else {
                    self.path_arg(tid, fdarg(a[0]), a[1])
                        .map(|path| Pending::Exec { path })
                }
            }
            libc::SYS_copy_file_range | libc::SYS_splice => Some(Pending::WriteFd { fd: fdarg(a[2]) }),
            libc::SYS_sendfile => Some(Pending::WriteFd { fd: fdarg(a[0]) }),
            libc::SYS_mmap => {
                let prot = a[2] as i32;
                let flags = a[3] as i32;
                if prot & libc::PROT_WRITE != 0
                    && flags & libc::MAP_SHARED != 0
                    && flags & libc::MAP_ANONYMOUS == 0
                {
                    Some(Pending::WriteFd { fd: fdarg(a[4]) })
                } else {
                    None
                }
            }
            libc::SYS_chdir | libc::SYS_fchdir => Some(Pending::Chdir),
            _ => None,
        };
        let need = pending.is_some();
        if let Some(th) = self.threads.get_mut(&tid) {
            th.pending = pending;
        }
        need
    }

    fn open_like(&mut self, tid: i32, dirfd: i32, addr: u64, flags: i32) -> Option<Pending> {
        let op = classify_flags(flags)?;
        let path = self.path_arg(tid, dirfd, addr)?;
        Some(Pending::Open {
            op,
            path,
            has_fd: true,
        })
    }

    #[allow(clippy::too_many_arguments)]
    fn pair(&mut self, tid: i32, op: Op, d1: i32, a1: u64, d2: i32, a2: u64, flags: u32) -> Option<Pending> {
        let p1 = self.path_arg(tid, d1, a1);
        let p2 = self.path_arg(tid, d2, a2);
        if op == Op::Move && flags & libc::RENAME_EXCHANGE != 0 {
            return Some(Pending::Exchange { p1, p2 });
        }
        if p1.is_none() && p2.is_none() {
            return None;
        }
        Some(Pending::Pair { op, p1, p2 })
    }

    /// The pending syscall of `tid` returned.
    fn on_exit(&mut self, tid: i32, rval: i64, is_error: bool) {
        let Some(th) = self.threads.get_mut(&tid) else {
            return;
        };
        let Some(pending) = th.pending.take() else {
            return;
        };
        if is_error || rval < 0 {
            return;
        }
        let img = th.image.clone();
        let dir = self.opts.trace_dir.clone();
        match pending {
            Pending::Open { op, path, has_fd } => {
                if self.opts.fault_panic {
                    panic!("injected fault (ROAR_PTRACE_FAULT=panic)");
                }
                let fd = rval as i32;
                let st = if has_fd { sys::stat_fd(tid, fd) } else { None };
                let mut i = img.borrow_mut();
                i.on_open(&dir, op, &path, st, has_fd);
                if has_fd && op != Op::Read {
                    if let Some(st) = st.filter(|s| s.regular) {
                        i.fds.insert(
                            fd,
                            FdEntry {
                                path,
                                dev: st.dev,
                                ino: st.ino,
                            },
                        );
                    }
                }
            }
            Pending::Delete { path } => img.borrow_mut().on_delete(&dir, &path),
            Pending::Pair { op, p1, p2 } => {
                img.borrow_mut()
                    .on_pair(&dir, op, p1.as_deref(), p2.as_deref())
            }
            Pending::Exchange { p1, p2 } => {
                let mut i = img.borrow_mut();
                for p in [p1, p2].into_iter().flatten() {
                    i.on_exchange(&dir, &p);
                }
            }
            Pending::Exec { .. } => {} // recorded at PTRACE_EVENT_EXEC
            Pending::WriteFd { fd } => {
                if let Some(p) = self.fd_target(tid, fd) {
                    img.borrow_mut().on_write_fd(&dir, &p);
                }
            }
            Pending::Chdir => img.borrow_mut().cwd = None,
        }
    }
}

/// R, W or U from open(2) flags: the shared rules of `roar_events`.
pub fn classify_flags(flags: i32) -> Option<Op> {
    roar_events::classify_open_flags(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_classify_like_preload() {
        assert_eq!(classify_flags(libc::O_RDONLY), Some(Op::Read));
        assert_eq!(classify_flags(libc::O_WRONLY), Some(Op::Write));
        assert_eq!(classify_flags(libc::O_RDWR), Some(Op::Update));
        assert_eq!(classify_flags(libc::O_RDWR | libc::O_CREAT), Some(Op::Update));
        assert_eq!(
            classify_flags(libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC),
            Some(Op::Write)
        );
        assert_eq!(classify_flags(libc::O_RDONLY | libc::O_DIRECTORY), None);
        assert_eq!(classify_flags(libc::O_PATH), None);
        assert_eq!(classify_flags(libc::O_TMPFILE | libc::O_RDWR), None);
    }
}
