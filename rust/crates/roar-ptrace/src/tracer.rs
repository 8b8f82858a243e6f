//! The ptrace event loop: follows every thread and process of the traced
//! command and turns the syscalls stopped by the seccomp filter into records.
//!
//! Life of an interesting syscall (seccomp mode, the normal one):
//!
//! 1. the filter returns `SECCOMP_RET_TRACE`: the thread stops *before* the
//!    call runs (`PTRACE_EVENT_SECCOMP`); we read its number and arguments
//!    with `PTRACE_GET_SYSCALL_INFO`, copy path arguments out of its memory
//!    with `process_vm_readv` and resolve them against the cwd / dirfd *as
//!    they are now* (before the call could change them);
//! 2. opens, by far the most frequent, are settled without a second stop
//!    (each stop is two context switches, often across CPUs, and dominates
//!    the per-file cost): we `stat` the path ourselves, which tells whether
//!    the open can succeed. A read-only open of an existing, readable,
//!    regular file is recorded at once; an open for writing is remembered as
//!    [`Deferred`] and checked (the file exists now, it is regular) at the
//!    thread's next stop of any kind, which comes after the call returned, and
//!    recorded with the entry's time stamp. Only when the cheap permission
//!    rules cannot tell whether the open will be allowed do we fall back to:
//! 3. the exact way, used for the rarer calls (rename, link, unlink,
//!    truncate, chdir, copy_file_range...): remember a [`Pending`] call and
//!    restart with `PTRACE_SYSCALL`, so the thread stops once more when the
//!    call returns; only successful calls are recorded;
//! 4. every other syscall never leaves the kernel's fast path.
//!
//! Settling an open at the thread's next stop is exact for the thread's own
//! order. Another thread or process renaming or deleting the file first is
//! handled by settling every deferred open of that path before such a call.
//!
//! With a seccomp listener (`Options::notify_fd`, Linux >= 6.6) opens do not
//! stop at all: they arrive as notifications and go through the same entry
//! code (step 2) in `run_notify`; the thread waits in the kernel until we
//! answer "continue". Step 3 then never applies to opens: there is no exit to
//! wait for, so an undecidable permission is asked of `faccessat` instead.
//!
//! Without our seccomp filter (refused, or unsafe because it would need
//! no_new_privs: see `filter_refusal` in main.rs) the same code runs with
//! `PTRACE_SYSCALL` on every call ("all-syscalls mode"): slower, same records,
//! and a set-id program can be detached at its exec (`setid_exec`).
//!
//! Robustness: recording runs under `catch_unwind`. A bug in it switches the
//! tracer to *degraded* mode (a note says from when records are missing), in
//! which it keeps doing the one thing the traced program depends on:
//! restarting every stop with the right signal. The tracer never kills a
//! tracee itself; only if the tracer dies does the kernel kill them
//! (`PTRACE_O_EXITKILL`, see `sys::set_options`).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;

use roar_events::{normalize_into, Op};

use crate::image::{ignored, Image};
use crate::sys::{self, Resume, SyscallInfo};

type ImageRef = Rc<RefCell<Image>>;

/// An open for writing seen at entry, checked at the thread's next stop.
#[derive(Debug)]
struct Deferred {
    op: Op,
    path: Vec<u8>,
    /// The file as it was before the open (`None`: it did not exist).
    pre: Option<sys::FileStat>,
    /// When the open was made (the record's time stamp).
    t_ns: u64,
}

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
    /// execve/execveat: recorded at the exec event (success); no exit stop.
    Exec { path: Vec<u8> },
    /// A write through a descriptor: mmap(PROT_WRITE, MAP_SHARED) or the
    /// destination of copy_file_range/sendfile/splice.
    WriteFd { fd: i32 },
    /// chdir/fchdir: the cached cwd becomes stale.
    Chdir,
    /// io_uring_setup: its file I/O never reaches us.
    IoUring,
}

struct Thread {
    tgid: i32,
    image: ImageRef,
    pending: Option<Pending>,
    deferred: Option<Deferred>,
}

/// What the event loop needs to know from its caller.
pub struct Options {
    /// Normalised absolute trace directory (empty: record nothing).
    pub trace_dir: Vec<u8>,
    /// No seccomp filter of ours (refused, or not safe: see `filter_refusal`
    /// in main.rs): stop on every syscall.
    pub all_syscalls: bool,
    /// Fault injection for tests: panic while recording the first open.
    pub fault_panic: bool,
    /// The seccomp listener opens are notified on (-1: opens are ptrace
    /// stops like the other calls). See `run_notify`.
    pub notify_fd: i32,
    /// Called with `Some(t)` when the root process enters a group-stop (the
    /// command was stopped, as a shell job would be; `t`: when its stop
    /// signal was delivered, CLOCK_MONOTONIC) and with `None` when it leaves
    /// it (SIGCONT): the front stops and resumes with it.
    pub on_job_stop: Box<dyn FnMut(Option<u64>)>,
    /// The root is a process we attached to from outside (`--attach`: a
    /// preloaded program about to exec a static one). Its image before that
    /// exec belongs to the preload library (nothing recorded here); if that
    /// exec fails, it is let go; a later exec into an image the library
    /// records itself (dynamic, our LD_PRELOAD and trace dir in its
    /// environment) is let go too, so no image is recorded twice.
    pub attach: bool,
}

/// The tracer state for one traced command.
pub struct Tracer {
    opts: Options,
    threads: HashMap<i32, Thread>,
    images: HashMap<i32, ImageRef>,
    /// Threads left in group-stop with `PTRACE_LISTEN` (the program was
    /// stopped: SIGSTOP, ^Z), and whether each belongs to the root process.
    /// Kept outside the recording state on purpose: it must stay right even
    /// after a recording bug, or the front would never learn that the
    /// command was continued.
    listening: HashMap<i32, bool>,
    /// When we last delivered a stop signal to a thread of the root process
    /// (CLOCK_MONOTONIC ns): its group-stop cannot have begun earlier, so a
    /// SIGCONT the front received after that has continued it.
    stop_delivered_at: u64,
    root: i32,
    /// Set when recording failed; records after this are missing.
    pub degraded: Option<String>,
    buf1: Vec<u8>,
    buf2: Vec<u8>,
    scratch: Vec<u8>,
    /// Lexical names of files opened for writing, by identity (dev, ino):
    /// a write through a descriptor (mmap, copy_file_range...) is recorded
    /// under the name the file was opened with rather than the kernel's
    /// (symlink-resolved) one, as the preload library does.
    names: HashMap<(u64, u64), Vec<u8>>,
    /// Threads with a [`Deferred`] open (0: nothing to scan).
    n_deferred: usize,
    euid: u32,
    /// Whether we hold CAP_SYS_PTRACE (asked at the first set-id exec).
    cap_sys_ptrace: Option<bool>,
    /// `partial` notes already written to the notes file.
    noted: HashSet<String>,
    /// `Options::attach` and the root has not exec'd yet.
    attach_waiting: bool,
    /// ... and its last syscall entry was an exec.
    attach_in_exec: bool,
}

fn wifexited(s: i32) -> bool {
    libc::WIFEXITED(s)
}

impl Tracer {
    /// A tracer whose root tracee `root` has just stopped for the first time
    /// (options already set by the caller). `tracer_pid` becomes its ppid
    /// (with `Options::attach`: the root's real parent).
    pub fn new(opts: Options, root: i32, tracer_pid: i32) -> Tracer {
        let mut t = Tracer {
            opts,
            threads: HashMap::new(),
            images: HashMap::new(),
            listening: HashMap::new(),
            stop_delivered_at: 0,
            root,
            degraded: None,
            buf1: Vec::with_capacity(sys::PATH_MAX),
            buf2: Vec::with_capacity(sys::PATH_MAX),
            scratch: Vec::with_capacity(sys::PATH_MAX),
            names: HashMap::new(),
            n_deferred: 0,
            euid: sys::euid(),
            cap_sys_ptrace: None,
            noted: HashSet::new(),
            attach_waiting: false,
            attach_in_exec: false,
        };
        t.attach_waiting = t.opts.attach;
        let img = Rc::new(RefCell::new(Image::new(root as u32, tracer_pid as u32)));
        img.borrow_mut().threads = 1;
        if t.opts.attach {
            // Not ours to record (see `Options::attach`): finished empty, so
            // it writes no file and drops what would be recorded into it.
            img.borrow_mut().finish(&t.opts.trace_dir);
        }
        t.images.insert(root, img.clone());
        t.threads.insert(
            root,
            Thread {
                tgid: root,
                image: img,
                pending: None,
                deferred: None,
            },
        );
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
        if self.opts.notify_fd >= 0 {
            self.run_notify(on_root_exit);
            return;
        }
        loop {
            let mut status = 0;
            let tid = sys::wait_any(&mut status);
            if tid < 0 {
                if sys::errno() == libc::EINTR {
                    continue;
                }
                break; // ECHILD: no tracee left
            }
            self.on_wait(tid, status, &mut on_root_exit);
        }
        self.finish_all();
    }

    /// The loop when opens arrive as seccomp notifications: wait for either
    /// a notification or SIGCHLD (a ptrace stop or exit: fork, exec, rename,
    /// ...), handle everything ready, repeat. The tracer blocks while it
    /// waits (no polling): with same-CPU wake-ups that is what keeps each
    /// open's round trip on one CPU.
    fn run_notify(&mut self, mut on_root_exit: impl FnMut(&mut Tracer, i32, usize)) {
        let fd = self.opts.notify_fd;
        let mask = sys::sigchld_for_ppoll();
        let mut listening = true;
        'outer: loop {
            loop {
                let mut status = 0;
                // SAFETY: plain waitpid with a valid out-pointer.
                let tid = unsafe { libc::waitpid(-1, &mut status, libc::__WALL | libc::WNOHANG) };
                if tid > 0 {
                    self.on_wait(tid, status, &mut on_root_exit);
                } else if tid == 0 {
                    break;
                } else if sys::errno() != libc::EINTR {
                    break 'outer; // ECHILD: no tracee left
                }
            }
            match sys::wait_listener(if listening { fd } else { -1 }, &mask) {
                sys::Ready::Notification => {
                    if let Ok(n) = sys::notif_recv(fd) {
                        self.guarded(|t| t.on_notif(&n));
                        // Always answered, even after a recording bug: the
                        // thread is blocked until we do.
                        sys::notif_continue(fd, n.id);
                    }
                }
                sys::Ready::Hangup => listening = false,
                sys::Ready::Other => {}
            }
        }
        self.finish_all();
    }

    /// An open a thread is blocked in (seccomp notification).
    fn on_notif(&mut self, n: &sys::Notif) {
        self.ensure_thread(n.tid, None, 0);
        self.settle(n.tid);
        self.on_entry(n.tid, n.arch, n.nr, n.args);
        // There is no exit stop to wait for in this mode (opens never ask
        // for one here, see `may_open`).
        if let Some(th) = self.threads.get_mut(&n.tid) {
            th.pending = None;
        }
    }

    /// One `waitpid` report: a thread ended, or stopped (ptrace event,
    /// seccomp stop, syscall exit, signal). Restarts it.
    fn on_wait(
        &mut self,
        tid: i32,
        status: i32,
        on_root_exit: &mut impl FnMut(&mut Tracer, i32, usize),
    ) {
        if wifexited(status) || libc::WIFSIGNALED(status) {
            self.unlisten(tid);
            self.guarded(|t| t.thread_gone(tid));
            if tid == self.root {
                let remaining = self.threads.len();
                on_root_exit(self, status, remaining);
            }
            return;
        }
        if !libc::WIFSTOPPED(status) {
            return;
        }
        let sig = libc::WSTOPSIG(status);
        let event = (status >> 16) & 0xffff;
        if event == libc::PTRACE_EVENT_STOP {
            self.guarded(|t| t.ensure_thread(tid, None, 0));
            if sys::is_stop_signal(sig) {
                // Group-stop (SIGSTOP, SIGTSTP, ^Z...): the program stops as
                // it would untraced; SIGCONT wakes it (PTRACE_LISTEN).
                self.listen(tid);
            } else {
                // A new thread's first stop, our PTRACE_INTERRUPT, or a
                // listening thread woken by SIGCONT (its SIGCONT comes next,
                // as a signal-delivery stop).
                self.unlisten(tid);
                sys::resume(tid, self.default_resume(), 0);
            }
            return;
        }
        let syscall_stop = sig == libc::SIGTRAP | 0x80;
        let event_stop = sig == libc::SIGTRAP && event != 0;
        let need_exit = self
            .guarded(|t| t.on_stop(tid, sig, event))
            .unwrap_or(false);
        let how = if need_exit {
            Resume::Syscall
        } else {
            self.default_resume()
        };
        let deliver = if syscall_stop || event_stop { 0 } else { sig };
        if deliver != 0 && self.opts.notify_fd >= 0 {
            self.guarded(|t| t.restart_interrupted_open(tid));
        }
        if sys::is_stop_signal(deliver) && self.of_root(tid) {
            self.stop_delivered_at = sys::now_ns();
        }
        sys::resume(tid, how, deliver);
    }

    /// `tid` entered a group-stop: leave it stopped, and tell the front when
    /// the root process is the one that stopped (the first of its threads).
    fn listen(&mut self, tid: i32) {
        let of_root = self.of_root(tid);
        let before = self.root_stopped();
        self.listening.insert(tid, of_root);
        sys::listen(tid);
        if !before && self.root_stopped() {
            let since = match self.stop_delivered_at {
                0 => sys::now_ns(),
                t => t,
            };
            (self.opts.on_job_stop)(Some(since));
        }
    }

    /// `tid` left its group-stop (or ended): tell the front when that was
    /// the root process's last stopped thread.
    fn unlisten(&mut self, tid: i32) {
        let before = self.root_stopped();
        if self.listening.remove(&tid).is_some() && before && !self.root_stopped() {
            (self.opts.on_job_stop)(None);
        }
    }

    /// Whether `tid` is a thread of the root process (the command itself).
    fn of_root(&self, tid: i32) -> bool {
        match self.threads.get(&tid) {
            Some(th) => th.tgid == self.root,
            None => sys::tgid_ppid(tid).is_some_and(|(tgid, _)| tgid == self.root),
        }
    }

    fn root_stopped(&self) -> bool {
        self.listening.values().any(|&of_root| of_root)
    }

    /// A signal is about to be delivered to `tid`. If it interrupted an open
    /// while the thread waited for our answer to its notification, make the
    /// open restart after the handler: untraced, an open of a regular file
    /// is never interrupted, and a handler installed without SA_RESTART
    /// would otherwise see EINTR. Opens that block by nature (a FIFO, a
    /// device) keep the kernel's answer.
    fn restart_interrupted_open(&mut self, tid: i32) {
        let Some((nr, a)) = sys::interrupted_open(tid) else {
            return;
        };
        #[cfg(target_arch = "x86_64")]
        let (dirfd, addr) = if nr == libc::SYS_open || nr == libc::SYS_creat {
            (libc::AT_FDCWD, a[0])
        } else {
            (a[0] as i32, a[1])
        };
        #[cfg(not(target_arch = "x86_64"))]
        let (dirfd, addr) = {
            let _ = nr; // only openat/openat2 exist here
            (a[0] as i32, a[1])
        };
        let mut raw = std::mem::take(&mut self.buf1);
        let mut p = Vec::new();
        let ok = sys::read_cstr(tid, addr, &mut raw) && !raw.is_empty() && {
            // Not `resolve`: it refuses ignored paths (/dev...), which are
            // exactly the ones whose opens may block.
            let base = if raw[0] == b'/' {
                Some(b"/".to_vec())
            } else {
                let mut b = Vec::new();
                let link = if dirfd == libc::AT_FDCWD {
                    format!("/proc/{tid}/cwd")
                } else {
                    format!("/proc/{tid}/fd/{dirfd}")
                };
                sys::readlink(&link, &mut b).then_some(b)
            };
            base.is_some_and(|b| {
                normalize_into(&b, &raw, &mut p);
                true
            })
        };
        self.buf1 = raw;
        if !ok {
            return;
        }
        let regular_or_missing = match sys::stat_path(&p, true, &mut self.scratch) {
            None => true,
            Some(st) => st.regular,
        };
        if regular_or_missing {
            sys::restart_after_handler(tid);
        }
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
        self.settle(tid);
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
                if self.opts.attach {
                    self.attach_waiting = false;
                    if sys::has_interpreter(tid) && sys::preloads_into(tid, &self.opts.trace_dir) {
                        // The preload library records this image (and what it
                        // starts) itself: let it go.
                        self.thread_gone(tid);
                        sys::detach(tid);
                    }
                }
                false
            }
            libc::PTRACE_EVENT_EXIT => {
                // Only asked for with `Options::attach`: the parent learns of
                // the exit when we reap it, so the image must be on disk first.
                if let Some(th) = self.threads.get(&tid) {
                    th.image.borrow_mut().flush(&self.opts.trace_dir);
                }
                if tid == self.root && self.threads.values().any(|th| th.tgid != self.root) {
                    // Said now, before the parent can learn of the exit and the job end.
                    self.note_partial(
                        "processes started by a static program outlived it: the ptrace tracer \
                         recorded them until they ended, possibly after the job was read"
                            .into(),
                    );
                }
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
            // arrived: give it the parent's cwd now.
            if let (Some(p), true) = (parent, th.tgid == tid) {
                let child_img = th.image.clone();
                if let Some(pimg) = self.threads.get(&p).map(|t| t.image.clone()) {
                    if !Rc::ptr_eq(&pimg, &child_img) {
                        let pi = pimg.borrow();
                        let mut ci = child_img.borrow_mut();
                        if ci.cwd.is_none() {
                            ci.cwd = pi.cwd.clone();
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
                    img.cwd = p.borrow().cwd.clone();
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
                deferred: None,
            },
        );
    }

    fn thread_gone(&mut self, tid: i32) {
        self.settle(tid);
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
        self.settle(former);
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
            sys::clear_errno();
            let ok = if dirfd == libc::AT_FDCWD {
                let img = self.threads[&tid].image.clone();
                let mut img = img.borrow_mut();
                if let Some(c) = &img.cwd {
                    base.clear();
                    base.extend_from_slice(c);
                    true
                } else if sys::readlink(&format!("/proc/{tid}/cwd"), &mut base) {
                    if img.chdirs_in_flight == 0 {
                        img.cwd = Some(base.clone());
                    }
                    true
                } else {
                    false
                }
            } else {
                sys::readlink(&format!("/proc/{tid}/fd/{dirfd}"), &mut base)
                    && base.first() == Some(&b'/')
            };
            if !ok && sys::errno() == libc::ENAMETOOLONG {
                self.note_long_path();
            }
            if ok {
                normalize_into(&base, raw, out);
            }
            self.buf2 = base;
            if !ok {
                return false;
            }
        }
        if let Some((fd_link, tail)) = fd_magic_link(tid, out) {
            // Reopening a descriptor through /proc/self/fd/N, /dev/fd/N...
            // (typically an O_PATH one, whose own open the filter lets
            // through): the file is the one the descriptor names, or for
            // /proc/self/fd/N/rest, `rest` under the directory it names.
            let tail = tail.to_vec();
            let mut target = std::mem::take(&mut self.buf2);
            let ok = sys::readlink(&fd_link, &mut target)
                && target.first() == Some(&b'/')
                && !target.ends_with(b" (deleted)");
            if ok {
                normalize_into(&target, &tail, out);
            }
            self.buf2 = target;
            if !ok {
                return false;
            }
        }
        if out.len() >= sys::PATH_MAX {
            // The kernel resolves it step by step from the cwd or dirfd, but
            // no call of ours (stat, the reader's hashing) can name it.
            self.note_long_path();
            return false;
        }
        !ignored(out, &self.opts.trace_dir)
    }

    fn note_long_path(&mut self) {
        self.note_partial(format!(
            "a path longer than PATH_MAX ({} bytes) was used: its file I/O was not recorded",
            sys::PATH_MAX
        ));
    }

    /// Read the path argument at `addr` and resolve it; `None` if not recordable.
    fn path_arg(&mut self, tid: i32, dirfd: i32, addr: u64) -> Option<Vec<u8>> {
        let mut raw = std::mem::take(&mut self.buf1);
        let mut out = Vec::new();
        sys::clear_errno();
        let read = sys::read_cstr(tid, addr, &mut raw);
        if !read && sys::errno() == libc::EPERM {
            // The tracee changed its user (su, gosu, setpriv) and we lack
            // CAP_SYS_PTRACE: still its tracer, but its memory is closed to us.
            self.note_partial(
                "the ptrace tracer may not read the memory of a process that changed its user \
                 (it lacks CAP_SYS_PTRACE): that process's file I/O was not recorded"
                    .into(),
            );
        }
        let ok = read && self.resolve(tid, dirfd, &raw, &mut out);
        self.buf1 = raw;
        ok.then_some(out)
    }

    /// Path of descriptor `fd` of `tid` if it is a regular, recordable file:
    /// the lexical name it was opened for writing with when we saw that
    /// open (see `names`), else the kernel's name for it.
    fn fd_target(&mut self, tid: i32, fd: i32) -> Option<Vec<u8>> {
        let st = sys::stat_fd(tid, fd)?;
        if !st.regular {
            return None;
        }
        if let Some(name) = self.names.get(&(st.dev, st.ino)) {
            return Some(name.clone());
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
        if self.attach_waiting && tid == self.root {
            self.attach_in_exec = nr == libc::SYS_execve || nr == libc::SYS_execveat;
        }
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
            libc::SYS_truncate => {
                self.path_arg(tid, libc::AT_FDCWD, a[0])
                    .map(|path| Pending::Open {
                        op: Op::Write,
                        path,
                        has_fd: false,
                    })
            }
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
            libc::SYS_rename => {
                self.pair(tid, Op::Move, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0)
            }
            libc::SYS_renameat => self.pair(tid, Op::Move, fdarg(a[0]), a[1], fdarg(a[2]), a[3], 0),
            libc::SYS_renameat2 => self.pair(
                tid,
                Op::Move,
                fdarg(a[0]),
                a[1],
                fdarg(a[2]),
                a[3],
                a[4] as u32,
            ),
            #[cfg(target_arch = "x86_64")]
            libc::SYS_link => {
                self.pair(tid, Op::Link, libc::AT_FDCWD, a[0], libc::AT_FDCWD, a[1], 0)
            }
            libc::SYS_linkat => {
                let flags = a[4] as i32;
                let mut raw = Vec::new();
                let old_empty = sys::read_cstr(tid, a[1], &mut raw) && raw.is_empty();
                if flags & libc::AT_EMPTY_PATH != 0 && old_empty {
                    // Naming an open (typically O_TMPFILE) file: a new file appears.
                    self.path_arg(tid, fdarg(a[2]), a[3])
                        .map(|path| Pending::Open {
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
            libc::SYS_copy_file_range | libc::SYS_splice => {
                Some(Pending::WriteFd { fd: fdarg(a[2]) })
            }
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
            libc::SYS_chdir | libc::SYS_fchdir => {
                // Another thread's relative open may be resolved while this
                // call runs: from now until its exit, read the real cwd.
                if let Some(th) = self.threads.get(&tid) {
                    let mut img = th.image.borrow_mut();
                    img.cwd = None;
                    img.chdirs_in_flight += 1;
                }
                Some(Pending::Chdir)
            }
            libc::SYS_io_uring_setup => Some(Pending::IoUring),
            _ => None,
        };
        if let Some(Pending::Exec { path }) = &pending {
            if self.setid_exec(tid, path) {
                return false; // detached: no longer ours
            }
        }
        // Renaming, linking or deleting a path another thread has just opened
        // for writing: that write comes first.
        match &pending {
            Some(Pending::Delete { path }) => self.settle_path(path),
            Some(Pending::Pair { p1, p2, .. }) | Some(Pending::Exchange { p1, p2 }) => {
                for p in [p1, p2].into_iter().flatten() {
                    self.settle_path(p);
                }
            }
            _ => {}
        }
        let need = matches!(&pending, Some(p) if !matches!(p, Pending::Exec { .. }));
        if let Some(th) = self.threads.get_mut(&tid) {
            th.pending = pending;
        }
        need
    }

    /// Write a `partial` note (once per text) to the notes file now, so it
    /// survives whatever happens to the tracer later.
    fn note_partial(&mut self, text: String) {
        if self.noted.insert(text.clone()) {
            crate::note(&self.opts.trace_dir, "partial", &text);
        }
    }

    /// `tid` is about to exec `path`. A set-user-ID, set-group-ID or
    /// file-capability program must run with its privileges, but the kernel
    /// withholds them from a traced process unless its tracer holds
    /// CAP_SYS_PTRACE, and from every process under no_new_privs. So:
    /// * no_new_privs is on: it was inherited or set by the program itself
    ///   (we never set it, see `filter_refusal` in main.rs), so no exec
    ///   gains privileges, with or without roar; nothing to do;
    /// * we hold CAP_SYS_PTRACE: it gets its privileges while traced;
    ///   nothing to do;
    /// * our seccomp filter is on (it never is without CAP_SYS_PTRACE or
    ///   no_new_privs; kept as a safety net): it cannot run without us
    ///   (ENOSYS), so it runs traced, without its privileges, and the job
    ///   says so;
    /// * otherwise (no filter, unprivileged tracer): detach `tid` before the
    ///   exec runs, so it runs untraced with its privileges, and say that its
    ///   (and its children's) I/O was not seen.
    ///
    /// Returns true when `tid` was detached.
    fn setid_exec(&mut self, tid: i32, path: &[u8]) -> bool {
        let Some(st) = sys::stat_path(path, true, &mut self.scratch) else {
            return false; // the exec fails
        };
        if !st.regular || st.perm & 0o111 == 0 {
            return false;
        }
        let setuid = st.perm & 0o4000 != 0;
        let setgid = st.perm & 0o2010 == 0o2010; // g+s without g+x is mandatory locking
        let caps = !setuid && !setgid && sys::has_file_caps(path, &mut self.scratch);
        if !setuid && !setgid && !caps {
            return false;
        }
        let Some(ids) = sys::proc_ids(tid) else {
            return false;
        };
        let gains = (setuid && st.uid != ids.euid) || (setgid && st.gid != ids.egid) || caps;
        if !gains || ids.no_new_privs {
            return false;
        }
        let what = if caps {
            "file-capability"
        } else if setuid {
            "setuid"
        } else {
            "setgid"
        };
        let shown = roar_events::display_path(path);
        let capable = *self
            .cap_sys_ptrace
            .get_or_insert_with(sys::have_cap_sys_ptrace);
        if capable {
            return false;
        }
        if !self.opts.all_syscalls {
            self.note_partial(format!(
                "{what} program {shown} ran without its privileges: traced without CAP_SYS_PTRACE, \
                 and its seccomp filter keeps it from running untraced"
            ));
            return false;
        }
        self.note_partial(format!(
            "{what} program {shown} ran untraced (ptrace would drop its privileges): \
             its file I/O and its children's were not recorded"
        ));
        self.thread_gone(tid);
        sys::detach(tid);
        true
    }

    /// An open of some kind: recorded now, deferred to the thread's next
    /// stop, or (rarely) left [`Pending`] for its exit stop. See the module
    /// documentation.
    fn open_like(&mut self, tid: i32, dirfd: i32, addr: u64, flags: i32) -> Option<Pending> {
        let op = classify_flags(flags)?;
        let path = self.path_arg(tid, dirfd, addr)?;
        let img = self.threads.get(&tid)?.image.clone();
        if img.borrow_mut().seen(op, &path) {
            return None; // recorded already: nothing to learn from this one
        }
        let follow = flags & libc::O_NOFOLLOW == 0;
        let pre = sys::stat_path(&path, follow, &mut self.scratch);
        let exact = |path| {
            Some(Pending::Open {
                op,
                path,
                has_fd: true,
            })
        };
        if op == Op::Read {
            // Missing (ENOENT, ENOTDIR, a symlink under O_NOFOLLOW...): the open
            // fails; pipes, devices and directories are never recorded.
            let st = pre.filter(|st| st.regular)?;
            return match self.may_open(&path, &st, flags) {
                Some(true) => {
                    self.fault_point();
                    let t = sys::now_ns();
                    img.borrow_mut()
                        .on_open(&self.opts.trace_dir, t, op, &path, Some(st), true);
                    None
                }
                Some(false) => None,
                None => exact(path),
            };
        }
        let creat = flags & libc::O_CREAT != 0;
        match pre {
            Some(_) if creat && flags & libc::O_EXCL != 0 => return None, // EEXIST
            None if !creat => return None,                                // ENOENT
            Some(st) if !st.regular => return None,
            Some(st) => match self.may_open(&path, &st, flags) {
                Some(true) => {}
                Some(false) => return None,
                None => return exact(path),
            },
            None => {} // created, if the directory allows: checked when settled
        }
        let d = Deferred {
            op,
            path,
            pre,
            t_ns: sys::now_ns(),
        };
        if let Some(th) = self.threads.get_mut(&tid) {
            if th.deferred.replace(d).is_none() {
                self.n_deferred += 1;
            }
        }
        None
    }

    /// Whether the open of existing file `st` with `flags` will be allowed:
    /// `Some` when the cheap rules (root, world or owner permission) or the
    /// kernel (`faccessat`, in notification mode where there is no exit stop
    /// to wait for) can tell, `None` to wait for the call's result.
    fn may_open(&mut self, path: &[u8], st: &sys::FileStat, flags: i32) -> Option<bool> {
        let (bits, acc) = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => (0o4, libc::R_OK),
            libc::O_WRONLY => (0o2, libc::W_OK),
            _ => (0o6, libc::R_OK | libc::W_OK),
        };
        if st.surely_allows(self.euid, bits) {
            Some(true)
        } else if self.opts.notify_fd >= 0 {
            Some(sys::access_ok(path, acc, &mut self.scratch))
        } else {
            None
        }
    }

    /// Test-only fault injection: a bug while recording an open.
    fn fault_point(&self) {
        if self.opts.fault_panic {
            panic!("injected fault (ROAR_PTRACE_FAULT=panic)");
        }
    }

    /// Check and record the deferred open of `tid`, if any. Called at every
    /// stop of the thread (its call has returned by then), when it ends or
    /// execs, and before another thread renames or deletes the same path.
    fn settle(&mut self, tid: i32) {
        if self.n_deferred == 0 {
            return;
        }
        let Some(th) = self.threads.get_mut(&tid) else {
            return;
        };
        let Some(d) = th.deferred.take() else {
            return;
        };
        self.n_deferred -= 1;
        let img = th.image.clone();
        // The open created or found the file iff it is there now (a failed
        // creat leaves nothing behind; O_EXCL on an existing file and opens of
        // missing files without O_CREAT were filtered out at entry).
        let Some(now) = sys::stat_path(&d.path, true, &mut self.scratch) else {
            return;
        };
        if !now.regular {
            return;
        }
        self.fault_point();
        // An update records the file as the open found it (the reader compares
        // it with the end state); a file that did not exist was written.
        let (op, st) = match (d.op, d.pre) {
            (Op::Update, Some(pre)) => (Op::Update, pre),
            (Op::Update, None) => (Op::Write, now),
            (op, _) => (op, now),
        };
        self.names.insert((now.dev, now.ino), d.path.clone());
        img.borrow_mut()
            .on_open(&self.opts.trace_dir, d.t_ns, op, &d.path, Some(st), true);
    }

    /// Settle every deferred open of `path` (any thread): it is about to be
    /// renamed, linked or deleted, which must come after the write.
    fn settle_path(&mut self, path: &[u8]) {
        if self.n_deferred == 0 {
            return;
        }
        let tids: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.deferred.as_ref().is_some_and(|d| d.path == path))
            .map(|(&tid, _)| tid)
            .collect();
        for tid in tids {
            self.settle(tid);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pair(
        &mut self,
        tid: i32,
        op: Op,
        d1: i32,
        a1: u64,
        d2: i32,
        a2: u64,
        flags: u32,
    ) -> Option<Pending> {
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
        if self.attach_waiting && tid == self.root && self.attach_in_exec {
            self.attach_in_exec = false;
            if is_error || rval < 0 {
                // The exec we attached for failed: the program goes on in
                // the preloaded image, which records itself.
                self.attach_waiting = false;
                self.thread_gone(tid);
                sys::detach(tid);
                return;
            }
        }
        let Some(th) = self.threads.get_mut(&tid) else {
            return;
        };
        let Some(pending) = th.pending.take() else {
            return;
        };
        if matches!(pending, Pending::Chdir) {
            let mut img = th.image.borrow_mut();
            img.cwd = None;
            img.chdirs_in_flight = img.chdirs_in_flight.saturating_sub(1);
            return;
        }
        if is_error || rval < 0 {
            return;
        }
        let img = th.image.clone();
        let dir = self.opts.trace_dir.clone();
        match pending {
            Pending::Open { op, path, has_fd } => {
                self.fault_point();
                let st = if has_fd {
                    sys::stat_fd(tid, rval as i32)
                } else {
                    None
                };
                img.borrow_mut()
                    .on_open(&dir, sys::now_ns(), op, &path, st, has_fd);
                if has_fd && op != Op::Read {
                    if let Some(st) = st.filter(|s| s.regular) {
                        self.names.insert((st.dev, st.ino), path);
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
            Pending::Chdir => {} // handled above, success or not
            Pending::IoUring => self.note_partial(
                "io_uring used: its file I/O is not traced (opens, reads and writes submitted \
                 through a ring never pass through a traced syscall)"
                    .into(),
            ),
        }
    }
}

/// If `p` is a descriptor's magic link (`/proc/self/fd/N`,
/// `/proc/thread-self/fd/N`, `/proc/PID/fd/N`, `/dev/fd/N`, `/dev/stdin`,
/// `/dev/stdout`, `/dev/stderr`), possibly followed by `/rest` (a path
/// under a directory descriptor): the link to read in the tracer's view of
/// /proc (`self` meaning thread `tid`), and `rest` (empty if none).
fn fd_magic_link(tid: i32, p: &[u8]) -> Option<(String, &[u8])> {
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let std = [&b"/dev/stdin"[..], b"/dev/stdout", b"/dev/stderr"];
    if let Some(n) = std.iter().position(|s| *s == p) {
        return Some((format!("/proc/{tid}/fd/{n}"), b""));
    }
    let (who, fd_rest) = if let Some(fd) = p.strip_prefix(b"/dev/fd/") {
        (b"self".as_slice(), fd)
    } else {
        let rest = p.strip_prefix(b"/proc/")?;
        let slash = rest.iter().position(|&b| b == b'/')?;
        let (who, tail) = rest.split_at(slash);
        (who, tail.strip_prefix(b"/fd/")?)
    };
    let (fd, rest) = match fd_rest.iter().position(|&b| b == b'/') {
        Some(i) => (&fd_rest[..i], &fd_rest[i + 1..]),
        None => (fd_rest, &b""[..]),
    };
    if !digits(fd) {
        return None;
    }
    let fd = std::str::from_utf8(fd).ok()?;
    let link = match who {
        b"self" | b"thread-self" => format!("/proc/{tid}/fd/{fd}"),
        w if digits(w) => format!("/proc/{}/fd/{fd}", std::str::from_utf8(w).ok()?),
        _ => return None,
    };
    Some((link, rest))
}

/// R, W or U from open(2) flags: the shared rules of `roar_events`.
pub fn classify_flags(flags: i32) -> Option<Op> {
    roar_events::classify_open_flags(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptor_links_are_recognised() {
        let l = |p: &'static [u8]| fd_magic_link(42, p);
        let some = |link: &str, rest: &'static [u8]| Some((link.to_string(), rest));
        assert_eq!(l(b"/proc/self/fd/3"), some("/proc/42/fd/3", b""));
        assert_eq!(l(b"/proc/thread-self/fd/10"), some("/proc/42/fd/10", b""));
        assert_eq!(l(b"/dev/fd/7"), some("/proc/42/fd/7", b""));
        assert_eq!(l(b"/proc/123/fd/4"), some("/proc/123/fd/4", b""));
        assert_eq!(l(b"/dev/stdin"), some("/proc/42/fd/0", b""));
        assert_eq!(l(b"/dev/stderr"), some("/proc/42/fd/2", b""));
        assert_eq!(l(b"/proc/self/fd/3/x"), some("/proc/42/fd/3", b"x"));
        assert_eq!(l(b"/dev/fd/5/a/b.txt"), some("/proc/42/fd/5", b"a/b.txt"));
        for p in [
            &b"/proc/self/fd"[..],
            b"/proc/self/fd/",
            b"/proc/self/fd/3x",
            b"/proc/self/fdinfo/3",
            b"/proc/abc/fd/3",
            b"/proc/self/cwd",
            b"/dev/fd",
            b"/tmp/proc/self/fd/3",
            b"/dev/stdinx",
            b"/dev/stdin/x",
            b"/dev/std",
        ] {
            assert_eq!(l(p), None, "{}", String::from_utf8_lossy(p));
        }
    }

    #[test]
    fn flags_classify_like_preload() {
        assert_eq!(classify_flags(libc::O_RDONLY), Some(Op::Read));
        assert_eq!(classify_flags(libc::O_WRONLY), Some(Op::Write));
        assert_eq!(classify_flags(libc::O_RDWR), Some(Op::Update));
        assert_eq!(
            classify_flags(libc::O_RDWR | libc::O_CREAT),
            Some(Op::Update)
        );
        assert_eq!(
            classify_flags(libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC),
            Some(Op::Write)
        );
        for append in [libc::O_WRONLY, libc::O_RDWR] {
            let f = append | libc::O_APPEND | libc::O_CREAT;
            assert_eq!(classify_flags(f), Some(Op::Update));
            assert_eq!(classify_flags(f | libc::O_TRUNC), Some(Op::Write));
        }
        assert_eq!(
            classify_flags(libc::O_RDONLY | libc::O_APPEND),
            Some(Op::Read)
        );
        assert_eq!(classify_flags(libc::O_RDONLY | libc::O_DIRECTORY), None);
        assert_eq!(classify_flags(libc::O_PATH), None);
        assert_eq!(classify_flags(libc::O_TMPFILE | libc::O_RDWR), None);
    }
}
