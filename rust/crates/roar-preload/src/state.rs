//! Per-process tracer state: activation flag, reentrancy guard, cached cwd,
//! path resolution, and the per-process trace file; the preload adapter over
//! the recording core both tracers share (`roar-record`).
//!
//! Responsible for turning "this call succeeded on this name" into a resolved
//! absolute path and what the call reached, handing them to the core's
//! [`Recorder`] (which decides what is recorded and when it is flushed), and
//! getting the records to disk ([`TraceFile`], the core's sink). It must never
//! change what the traced program observes: it uses raw syscalls (not our own
//! hooked symbols) for its file, keeps its descriptor at a high number and
//! re-checks it (fstat) whenever the program may have closed or replaced it
//! (see [`TraceFd`]), and callers save and restore errno around it.
//!
//! Concurrency: one [`State`] behind a futex [`RawLock`]; a per-thread
//! `IN_HOOK` flag turns nested hook calls (a hook → malloc → open, or a
//! signal handler that opens a file while we hold the lock) into plain
//! pass-throughs, so the lock is never taken recursively.

use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

use libc::c_int;
use roar_events::{encode_header, is_pseudo_fs, normalize_into, Header, Op};
use roar_record::{ignored, Found, Recorder, Sink, WriteThrough};

use crate::lock::RawLock;

/// Fast-path flag read by every hook: `false` means dormant, and the hook
/// does nothing but call the real function. Authoritative state is
/// `State::active` (read under the lock); this is only the cheap hint.
pub static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The lowest number the trace descriptor may ever be given ([`TraceFd`]),
/// fixed by the library constructor ([`init_fd_floor`]); `i32::MAX` (never
/// keep a descriptor) until then. A close/dup hook whose target is below it
/// cannot touch our descriptor: one relaxed load and a compare.
pub static FD_FLOOR: AtomicI32 = AtomicI32::new(i32::MAX);

/// Number of the trace descriptor currently held, -1 if none. Written and
/// read with the state lock held (the fast path of the hooks looks only at
/// [`FD_FLOOR`]).
static HELD_FD: AtomicI32 = AtomicI32::new(-1);

/// Set when the program may have closed or replaced [`HELD_FD`] (a hooked
/// close, dup2, dup3, close_range or closefrom covered it): the next flush
/// checks with fstat that the number still names our file before writing.
static SUSPECT: AtomicBool = AtomicBool::new(false);

/// The descriptor of the trace file created for the child of a fork in
/// progress (see `State::before_fork`), -1 if none.
static FORK_FD: AtomicI32 = AtomicI32::new(-1);

thread_local! {
    // const-initialised, no destructor: compiles to a plain TLS slot, never
    // allocates and never registers a TLS destructor.
    static IN_HOOK: Cell<bool> = const { Cell::new(false) };
    // Whether this thread took the state lock in the atfork prepare handler.
    static FORK_LOCKED: Cell<bool> = const { Cell::new(false) };
}

/// Marks the current thread as "inside the tracer"; dropped on exit.
pub struct HookGuard {
    _private: (),
}

impl HookGuard {
    /// Enter the tracer on this thread, or `None` if it is already inside
    /// (a nested call must just call the real function).
    #[inline]
    pub fn enter() -> Option<HookGuard> {
        IN_HOOK
            .try_with(|c| {
                if c.get() {
                    None
                } else {
                    c.set(true);
                    Some(HookGuard { _private: () })
                }
            })
            .ok()
            .flatten()
    }
}

impl Drop for HookGuard {
    fn drop(&mut self) {
        let _ = IN_HOOK.try_with(|c| c.set(false));
    }
}

/// Guard for a hook while tracing: `None` when dormant (one atomic load) or
/// when this thread is already inside the tracer.
#[inline(always)]
pub fn tracing() -> Option<HookGuard> {
    // A process following a host's control block first catches up with a job
    // that began or ended since its last hooked call (one load when nothing moved).
    if crate::control::moved() {
        crate::control::follow();
    }
    if ACTIVE.load(Ordering::Relaxed) {
        HookGuard::enter()
    } else {
        None
    }
}

/// Saves errno on creation and restores it on drop, so that the tracer's own
/// syscalls never leak into the errno the program sees after a hook.
pub struct ErrnoGuard(c_int);

impl ErrnoGuard {
    /// Snapshot the calling thread's errno.
    pub fn save() -> Self {
        // SAFETY: __errno_location always returns this thread's errno slot.
        ErrnoGuard(unsafe { *libc::__errno_location() })
    }
}

impl Drop for ErrnoGuard {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = self.0 };
    }
}

/// Everything the tracer knows about the current process image.
pub struct State {
    /// Whether records are being collected (authoritative; see [`ACTIVE`]).
    pub active: bool,
    /// Dedupe set, record buffer and flush policy (`roar-record`).
    rec: Recorder,
    /// The trace file the records go to (the recorder's sink).
    pub file: TraceFile,
    cwd: Vec<u8>,
    cwd_valid: bool,
    // Scratch buffers reused across calls so the hot path does not allocate.
    path1: Vec<u8>,
    path2: Vec<u8>,
    tmp: Vec<u8>,
    /// Set by the library destructor: anything recorded afterwards (other
    /// libraries' destructors) is flushed immediately.
    finalized: bool,
    /// This process follows a host's control block (`control.rs`): every record
    /// is written through, since nothing flushes an idle worker when a job ends.
    follower: bool,
    /// posix_spawn file actions remembered per actions object (exec.rs).
    pub spawn_actions: Vec<(usize, Vec<crate::exec::SpawnAction>)>,
}

/// This image's trace file, `<dir>/<pid>-<t0_ns>.ev`: the [`Sink`] of the
/// recorder. Written with raw syscalls through a descriptor kept at a high
/// number ([`TraceFd`]); a write that fails leaves a `.lost` marker.
pub struct TraceFile {
    /// Normalised absolute trace directory.
    pub dir: Vec<u8>,
    pid: u32,
    ppid: u32,
    /// CLOCK_MONOTONIC at init (or at fork / roar_begin): names the file.
    t0_ns: u64,
    header_written: bool,
    /// The trace file kept open between flushes, see [`TraceFd`].
    out: TraceFd,
    /// A `.lost` marker was left for this image (see `mark_lost`).
    lost: bool,
    /// Scratch buffer for file names.
    name: Vec<u8>,
    /// Name of the file `before_fork` created for the next child.
    fork_name: Vec<u8>,
}

struct Shared {
    lock: RawLock,
    state: UnsafeCell<State>,
}

// SAFETY: `state` is only accessed with `lock` held (see with_state and the
// fork handlers, which run single-threaded in the child).
unsafe impl Sync for Shared {}

static SHARED: Shared = Shared {
    lock: RawLock::new(),
    state: UnsafeCell::new(State {
        active: false,
        rec: Recorder::new(WriteThrough::Changes),
        file: TraceFile {
            dir: Vec::new(),
            pid: 0,
            ppid: 0,
            t0_ns: 0,
            header_written: false,
            out: TraceFd::NONE,
            lost: false,
            name: Vec::new(),
            fork_name: Vec::new(),
        },
        cwd: Vec::new(),
        cwd_valid: false,
        path1: Vec::new(),
        path2: Vec::new(),
        tmp: Vec::new(),
        finalized: false,
        follower: false,
        spawn_actions: Vec::new(),
    }),
};

/// Run `f` on the state with the lock held. A panic inside `f` is caught,
/// tracing is switched off (degrade, never crash the host program) and
/// `None` is returned. The caller must hold a [`HookGuard`] (or otherwise be
/// sure no hook on this thread can re-enter while the lock is held).
pub fn with_state<R>(f: impl FnOnce(&mut State) -> R) -> Option<R> {
    struct Unlock;
    impl Drop for Unlock {
        fn drop(&mut self) {
            SHARED.lock.unlock();
        }
    }
    SHARED.lock.lock();
    let _unlock = Unlock;
    // SAFETY: we hold the lock.
    let st = unsafe { &mut *SHARED.state.get() };
    match catch_unwind(AssertUnwindSafe(|| f(st))) {
        Ok(r) => Some(r),
        Err(_) => {
            ACTIVE.store(false, Ordering::Relaxed);
            st.active = false;
            let _ = catch_unwind(AssertUnwindSafe(|| st.file.mark_panicked()));
            None
        }
    }
}

/// Fix [`FD_FLOOR`] from the current RLIMIT_NOFILE (called once, by the
/// library constructor): just below the soft limit, capped at 1024 (a higher
/// number would grow the process's fd table for nothing), so 1000 with the
/// usual limit; no kept descriptor at all if that is below 64.
pub fn init_fd_floor() {
    // SAFETY: zeroed rlimit is a valid out-buffer.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return;
    }
    let floor = rl.rlim_cur.min(1024) as c_int - 24;
    if floor >= 64 {
        FD_FLOOR.store(floor, Ordering::Relaxed);
    }
}

/// Run `real`, a call by the program that closes or replaces descriptor
/// numbers at or above [`FD_FLOOR`] (`covers` tells which), with the state
/// lock held: no flush can check our descriptor before the change and write
/// after it (into whatever the number names then), and no new descriptor can
/// be adopted in the middle. If the call covers the number we hold, it is
/// marked suspect: the next flush verifies it with fstat and reopens the
/// trace file if it is no longer ours. A call made while this thread is
/// already inside the tracer (a signal handler that interrupted a flush)
/// cannot take the lock and just marks it. errno is the one `real` left.
#[cold]
#[inline(never)]
pub fn touching_trace_fd<R>(covers: impl Fn(c_int) -> bool, real: impl FnOnce() -> R) -> R {
    let guard = HookGuard::enter();
    if guard.is_some() {
        SHARED.lock.lock();
    }
    let held = HELD_FD.load(Ordering::Relaxed);
    if guard.is_none() || (held >= 0 && covers(held)) {
        SUSPECT.store(true, Ordering::Relaxed);
    }
    let r = real();
    if guard.is_some() {
        // SAFETY: __errno_location always returns this thread's errno slot.
        let errno = unsafe { *libc::__errno_location() };
        SHARED.lock.unlock();
        // SAFETY: as above (unlock may have made a futex syscall).
        unsafe { *libc::__errno_location() = errno };
    }
    r
}

pub use roar_events::now_ns;

fn getpid_u32() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getpid() as u32 }
}

fn getppid_u32() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::getppid() as u32 }
}

impl State {
    /// Start recording into `raw_dir` (relative to the cwd if not absolute).
    /// Any records pending for a previous directory are flushed there first.
    /// Starts a new trace file (fresh t0) and an empty dedupe set.
    pub fn start(&mut self, raw_dir: &[u8]) -> bool {
        if self.active {
            self.flush();
        }
        self.cwd_valid = false;
        let mut d = Vec::new();
        if !self.resolve(libc::AT_FDCWD, raw_dir, &mut d) {
            return false;
        }
        self.file.dir = d;
        self.file.new_image(); // a new file (fresh t0) from now on
        self.rec.reset();
        self.finalized = false;
        self.update_write_through();
        self.active = true;
        self.file.claim();
        true
    }

    /// Flush and stop recording.
    pub fn stop(&mut self) {
        self.flush();
        self.file.out.close();
        self.active = false;
    }

    /// Whether this process follows a host's control block (`control.rs`).
    pub fn set_follower(&mut self, on: bool) {
        self.follower = on;
        self.update_write_through();
    }

    /// Records that change files are always written through at once (a
    /// process killed by a signal runs no exit path); a follower's and a
    /// finalised image's every record is.
    fn update_write_through(&mut self) {
        self.rec
            .set_write_through(if self.follower || self.finalized {
                WriteThrough::Every
            } else {
                WriteThrough::Changes
            });
    }

    /// Reset identity after fork in the (single-threaded) child: records
    /// inherited from the parent's buffer belong to the parent, which will
    /// flush them itself.
    fn after_fork_child(&mut self) {
        self.file.new_image();
        self.rec.reset();
        let fd = FORK_FD.swap(-1, Ordering::Relaxed);
        if self.active && fd >= 0 {
            self.file.adopt_fork_file(fd);
        }
        if self.active {
            self.file.claim();
        }
    }

    /// In the parent, before fork: see [`TraceFile::before_fork`].
    fn before_fork(&mut self) {
        if self.active {
            self.file.before_fork();
        }
    }

    /// Forget the cached cwd (after chdir/fchdir).
    pub fn invalidate_cwd(&mut self) {
        self.cwd_valid = false;
    }

    /// Mark the library as finalised (destructor ran): flush and keep
    /// flushing every later record immediately.
    pub fn finalize(&mut self) {
        self.flush();
        self.finalized = true;
        self.update_write_through();
    }

    fn refresh_cwd(&mut self) -> bool {
        if self.cwd_valid {
            return true;
        }
        let mut cap = 4096usize;
        loop {
            self.cwd.clear();
            self.cwd.reserve(cap);
            // SAFETY: buffer of `capacity` bytes; getcwd NUL-terminates.
            let r = unsafe { libc::getcwd(self.cwd.as_mut_ptr().cast(), self.cwd.capacity()) };
            if !r.is_null() {
                // SAFETY: getcwd wrote a NUL-terminated string into cwd.
                let n = unsafe { libc::strlen(r) };
                unsafe { self.cwd.set_len(n) };
                // "(unreachable)/..." when the cwd is outside our root.
                self.cwd_valid = self.cwd.first() == Some(&b'/');
                return self.cwd_valid;
            }
            // SAFETY: reading errno.
            if unsafe { *libc::__errno_location() } != libc::ERANGE || cap >= 1 << 20 {
                return false;
            }
            cap *= 2;
        }
    }

    /// Absolute path of an open directory fd via /proc/self/fd, into `tmp`.
    fn fd_path(&mut self, fd: c_int) -> bool {
        if fd < 0 {
            return false;
        }
        let mut link = [0u8; 40];
        let prefix = b"/proc/self/fd/";
        link[..prefix.len()].copy_from_slice(prefix);
        let n = prefix.len() + write_u64(&mut link[prefix.len()..], fd as u64);
        link[n] = 0;
        let mut cap = 4096usize;
        loop {
            self.tmp.clear();
            self.tmp.reserve(cap);
            // SAFETY: link is NUL-terminated; buffer has `capacity` bytes.
            let r = unsafe {
                libc::readlink(
                    link.as_ptr().cast(),
                    self.tmp.as_mut_ptr().cast(),
                    self.tmp.capacity(),
                )
            };
            if r < 0 {
                return false;
            }
            let r = r as usize;
            if r < self.tmp.capacity() {
                // SAFETY: readlink wrote r bytes.
                unsafe { self.tmp.set_len(r) };
                // Pipes, sockets, anon inodes: not paths.
                return self.tmp.first() == Some(&b'/');
            }
            if cap >= 1 << 20 {
                return false;
            }
            cap *= 2;
        }
    }

    /// Resolve `raw` (as passed to a *at() call with `dirfd`) into an
    /// absolute normalised path in `out`.
    fn resolve(&mut self, dirfd: c_int, raw: &[u8], out: &mut Vec<u8>) -> bool {
        if raw.first() == Some(&b'/') {
            normalize_into(b"/", raw, out);
            return true;
        }
        if dirfd == libc::AT_FDCWD {
            if !self.refresh_cwd() {
                return false;
            }
            normalize_into(&self.cwd, raw, out);
        } else {
            if !self.fd_path(dirfd) {
                return false;
            }
            normalize_into(&self.tmp, raw, out);
        }
        true
    }

    /// An open-like call succeeded on `raw` (relative to `dirfd`). `fd` is
    /// the resulting descriptor to fstat once, or -1 if there is none
    /// (truncate). Hands the path to the recorder if it is not filtered; the
    /// recorder asks about the descriptor only for a new (op, path).
    pub fn on_open(&mut self, op: Op, dirfd: c_int, raw: &[u8], fd: c_int) {
        if !self.active {
            return;
        }
        if fd >= 0 && fd == self.file.out.fd {
            // The kernel gave our number to the program: our descriptor was
            // closed behind our back (by a raw syscall; hooked calls are
            // seen in fds.rs). It is theirs now, not to be written or closed.
            self.file.out.forget();
        }
        let mut p = std::mem::take(&mut self.path1);
        let resolved = self.resolve(dirfd, raw, &mut p);
        if resolved && crate::fault::panics_on(&p) {
            panic!("injected fault (ROAR_TEST_PANIC_ON_OPEN)");
        }
        if !resolved {
            // Only what would have been recorded: a regular file (or unknown: truncate).
            if fd < 0 || fd_stat(fd, false).is_none_or(|st| st.mode & libc::S_IFMT == libc::S_IFREG)
            {
                self.unresolved(raw);
            }
        } else if (!is_pseudo_fs(&p) || self.through_link(fd, &mut p))
            && !ignored(&p, &self.file.dir)
        {
            self.rec
                .on_open(&mut self.file, None, op, &p, |times| found(fd, times));
        }
        self.path1 = p;
    }

    /// A call succeeded on `raw` but it could not be made absolute (readlink
    /// of its directory descriptor fails when that path is longer than a
    /// page; getcwd of a deleted or unreachable cwd): record N with the name
    /// as given and the errno, so the job says what it did not see instead
    /// of dropping it.
    fn unresolved(&mut self, raw: &[u8]) {
        // SAFETY: reading errno (the hooks restore the program's errno afterwards).
        let e = unsafe { *libc::__errno_location() };
        let mut what = b"unresolved ".to_vec();
        let mut num = [0u8; 20];
        let n = write_u64(&mut num, e.max(0) as u64);
        what.extend_from_slice(&num[..n]);
        self.rec.on_note(&mut self.file, raw, &what);
    }

    /// `p` is under /proc or /dev (not /dev/shm) but may reach a regular file
    /// elsewhere: `/proc/self/fd/N`, `/dev/fd/N`, `/proc/<pid>/fd/N` (an
    /// O_PATH descriptor reopened for reading or writing), `/proc/self/cwd/x`.
    /// Replace `p` with the file's own path and return true, or false if it
    /// names no regular file outside the pseudo filesystems (/proc/self/status,
    /// /dev/null, a pipe, a deleted file). `fd` is the descriptor the open
    /// returned (the kernel's name for what was opened, race-free), or -1
    /// (truncate): then the kernel resolves the name again (realpath).
    fn through_link(&mut self, fd: c_int, p: &mut Vec<u8>) -> bool {
        if fd >= 0 {
            // Regular files only: /dev/null and ttys cost no readlink.
            match fd_stat(fd, false) {
                Some(st) if st.mode & libc::S_IFMT == libc::S_IFREG => {}
                _ => return false,
            }
            if !self.fd_path(fd) {
                return false;
            }
            // An unlinked file (O_TMPFILE, deleted since) has no name to record.
            if self.tmp.ends_with(b" (deleted)") {
                // SAFETY: zeroed stat is a valid out-buffer; fstat only writes it.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st) } != 0 || st.st_nlink == 0 {
                    return false;
                }
            }
        } else {
            self.tmp.clear();
            self.tmp.extend_from_slice(p);
            self.tmp.push(0);
            // SAFETY: NUL-terminated input; realpath mallocs the result, freed below.
            let r = unsafe { libc::realpath(self.tmp.as_ptr().cast(), std::ptr::null_mut()) };
            if r.is_null() {
                return false;
            }
            // SAFETY: realpath returned a NUL-terminated string.
            let n = unsafe { libc::strlen(r) };
            self.tmp.clear();
            // SAFETY: n bytes of r are initialised.
            self.tmp
                .extend_from_slice(unsafe { std::slice::from_raw_parts(r as *const u8, n) });
            // SAFETY: allocated by realpath with malloc.
            unsafe { libc::free(r.cast()) };
        }
        if self.tmp.first() != Some(&b'/') || is_pseudo_fs(&self.tmp) {
            return false;
        }
        p.clear();
        p.extend_from_slice(&self.tmp);
        true
    }

    /// unlink/unlinkat/remove succeeded on a non-directory.
    pub fn on_delete(&mut self, dirfd: c_int, raw: &[u8]) {
        if !self.active {
            return;
        }
        let mut p = std::mem::take(&mut self.path1);
        if !self.resolve(dirfd, raw, &mut p) {
            self.unresolved(raw);
        } else if !ignored(&p, &self.file.dir) {
            self.rec.on_delete(&mut self.file, &p);
        }
        self.path1 = p;
    }

    /// rename*/link* succeeded: `op` is [`Op::Move`] or [`Op::Link`]. A side
    /// that cannot be resolved is a note; one that is not recordable (under
    /// /proc, /dev, the trace dir...) is left to the recorder's rule for
    /// pairs seen from one side.
    pub fn on_pair(&mut self, op: Op, d1: c_int, raw1: &[u8], d2: c_int, raw2: &[u8]) {
        if !self.active {
            return;
        }
        let mut p1 = std::mem::take(&mut self.path1);
        let mut p2 = std::mem::take(&mut self.path2);
        let (r1, r2) = (
            self.resolve(d1, raw1, &mut p1),
            self.resolve(d2, raw2, &mut p2),
        );
        for (resolved, raw) in [(r1, raw1), (r2, raw2)] {
            if !resolved {
                self.unresolved(raw);
            }
        }
        let ok1 = r1 && !ignored(&p1, &self.file.dir);
        let ok2 = r2 && !ignored(&p2, &self.file.dir);
        self.rec.on_pair(
            &mut self.file,
            op,
            ok1.then_some(p1.as_slice()),
            ok2.then_some(p2.as_slice()),
        );
        self.path1 = p1;
        self.path2 = p2;
    }

    /// renameat2(RENAME_EXCHANGE): both names now hold other content; M
    /// cannot express a swap, so both are reported as written.
    pub fn on_exchange(&mut self, d1: c_int, raw1: &[u8], d2: c_int, raw2: &[u8]) {
        for (d, raw) in [(d1, raw1), (d2, raw2)] {
            let mut p = std::mem::take(&mut self.path1);
            if self.active && self.resolve(d, raw, &mut p) && !ignored(&p, &self.file.dir) {
                self.rec.on_exchange(&mut self.file, &p);
            }
            self.path1 = p;
        }
    }

    /// A program is about to be executed / was spawned: `raw` is the path
    /// actually executed (after PATH search), relative to the cwd if not
    /// absolute.
    pub fn on_exec(&mut self, raw: &[u8]) {
        if !self.active {
            return;
        }
        let mut p = std::mem::take(&mut self.path1);
        if self.resolve(libc::AT_FDCWD, raw, &mut p) && !ignored(&p, &self.file.dir) {
            self.rec.on_exec(&mut self.file, &p);
        }
        self.path1 = p;
    }

    /// Something this process is about to do (or did) that the tracer cannot
    /// see: `subject` (a program path, relative to the cwd if `is_path` and
    /// not absolute, or a syscall name) and `what` (kind and detail, ASCII
    /// words; EVENTS.md). Written through at once, never deduplicated.
    pub fn on_note(&mut self, subject: &[u8], is_path: bool, what: &[u8]) {
        if !self.active {
            return;
        }
        let mut p = std::mem::take(&mut self.path1);
        if !is_path || !self.resolve(libc::AT_FDCWD, subject, &mut p) {
            p.clear();
            p.extend_from_slice(subject);
        }
        self.rec.on_note(&mut self.file, &p, what);
        self.path1 = p;
    }

    /// Write buffered records to this image's trace file ([`TraceFile`]).
    /// Returns false if records had to be dropped.
    pub fn flush(&mut self) -> bool {
        self.rec.flush(&mut self.file)
    }
}

/// What the open that returned `fd` reached (see [`Found`]); `times`: with
/// size and mtime.
fn found(fd: c_int, times: bool) -> Found {
    if fd < 0 {
        return Found::NoDescriptor;
    }
    match fd_stat(fd, times) {
        Some(st) if st.mode & libc::S_IFMT == libc::S_IFREG => Found::Regular {
            size: st.size,
            mtime_ns: st.mtime_ns,
        },
        Some(_) => Found::Other,
        None => Found::Unknown,
    }
}

impl TraceFile {
    /// A new image (this process after roar_begin, or a fork child): its own
    /// pid, t0 and file from now on. The inherited descriptor, if any, is
    /// the previous image's file (the parent's, after fork): not written.
    fn new_image(&mut self) {
        self.pid = getpid_u32();
        self.ppid = getppid_u32();
        self.t0_ns = now_ns();
        self.header_written = false;
        self.out.close();
        self.lost = false;
    }

    /// In the parent, before fork: create and flock the child's trace file
    /// (`<ppid>-<t>.fork`), so the child holds a lock from its first
    /// instant. Claiming in the child alone leaves a window in which a
    /// daemon forked just before the command exits has no file yet.
    fn before_fork(&mut self) {
        if self.dir.is_empty() {
            return;
        }
        let mut name = std::mem::take(&mut self.fork_name);
        self.file_name(&mut name, now_ns(), b".fork\0");
        let fd = create(&name);
        if fd >= 0 {
            // SAFETY: flock on the descriptor just opened.
            unsafe { libc::syscall(libc::SYS_flock, fd, libc::LOCK_SH | libc::LOCK_NB) };
            FORK_FD.store(fd, Ordering::Relaxed);
        }
        self.fork_name = name;
    }

    /// In the child: make the file `before_fork` claimed this image's trace
    /// file (`<pid>-<t0>.ev`, at a high number); else remove it.
    fn adopt_fork_file(&mut self, fd: c_int) {
        let mut name = std::mem::take(&mut self.name);
        self.file_name(&mut name, self.t0_ns, b".ev\0");
        let from = self.fork_name.as_ptr();
        // SAFETY: both names are NUL-terminated.
        let renamed = unsafe {
            libc::syscall(
                libc::SYS_renameat,
                libc::AT_FDCWD,
                from,
                libc::AT_FDCWD,
                name.as_ptr(),
            )
        } == 0;
        self.name = name;
        if !renamed || self.out.adopt(fd, self.pid).is_none() {
            // SAFETY: our own descriptor and file.
            unsafe {
                libc::syscall(libc::SYS_close, fd);
                if !renamed {
                    libc::syscall(libc::SYS_unlinkat, libc::AT_FDCWD, from, 0);
                }
            }
        }
    }

    /// Create this image's trace file now (header only) and hold it, with a
    /// shared flock, until the process exits or execs (O_CLOEXEC): the
    /// reader takes a process whose file is still locked when the job is
    /// read for one that outlived the command (a daemon, a background job),
    /// even if it has recorded nothing yet. One open per process image.
    fn claim(&mut self) {
        if !self.write_out(&[]) {
            self.mark_lost();
        }
    }

    /// Records could not be written (the trace directory's filesystem is
    /// full, or gone): leave an empty `<pid>-<t0>.<errno>.lost` marker next
    /// to where the file should be, once per image, so the reader marks the
    /// job partial with the reason instead of silently missing the records.
    /// An empty file needs no data blocks, so it can still be created on a
    /// full tmpfs.
    fn mark_lost(&mut self) {
        // SAFETY: reading errno.
        let err = unsafe { *libc::__errno_location() };
        let mut num = [0u8; 21];
        num[0] = b'.';
        let n = 1 + write_u64(&mut num[1..], err.max(0) as u64);
        self.leave_lost_marker(&num[..n]);
    }

    /// A panic inside the library switched tracing off in this image (see
    /// [`with_state`]): leave `<pid>-<t0>.panic.lost`, so the reader marks the
    /// job partial (the records of this image from then on, and those still
    /// buffered, are not seen).
    fn mark_panicked(&mut self) {
        self.leave_lost_marker(b".panic");
    }

    fn leave_lost_marker(&mut self, why: &[u8]) {
        if self.lost || self.dir.is_empty() {
            return;
        }
        self.lost = true;
        let mut name = std::mem::take(&mut self.name);
        self.file_name(&mut name, self.t0_ns, why);
        name.extend_from_slice(b".lost\0");
        let fd = create(&name);
        if fd >= 0 {
            // SAFETY: closing the fd we just opened.
            unsafe { libc::syscall(libc::SYS_close, fd) };
        }
        self.name = name;
    }

    /// Append `records` to `<dir>/<pid>-<t0_ns>.ev` (header first the first
    /// time). The file is opened with raw syscalls the first time and then
    /// kept open at a high descriptor number ([`TraceFd`]); a program that
    /// closes or dup2s over "all" fds makes us reopen, never write into its
    /// file. False if it could not be written.
    fn write_out(&mut self, records: &[u8]) -> bool {
        // A second attempt only if the held descriptor turned out to be
        // closed (EBADF before anything was written): closed by a raw
        // syscall that no hook saw. The file is reopened by name (O_APPEND).
        for attempt in 0..2 {
            let mut fd = self.out.get(self.pid);
            let mut close_after = false;
            if fd < 0 {
                fd = self.open_trace_file();
                if fd < 0 {
                    return false;
                }
                match self.out.adopt(fd, self.pid) {
                    Some((high, size)) => {
                        fd = high;
                        // Held while this image lives (see `claim`).
                        // SAFETY: flock on our own descriptor.
                        unsafe {
                            libc::syscall(libc::SYS_flock, fd, libc::LOCK_SH | libc::LOCK_NB)
                        };
                        // A new (or emptied) file needs its header.
                        if size == 0 {
                            self.header_written = false;
                        }
                    }
                    // No high number free: the old way, open for this flush only.
                    None => close_after = true,
                }
            }
            let mut res = Ok(());
            if !self.header_written {
                let mut hdr = Vec::with_capacity(roar_events::HEADER_LEN);
                encode_header(
                    &mut hdr,
                    &Header {
                        pid: self.pid,
                        ppid: self.ppid,
                    },
                );
                res = write_all(fd, &hdr);
                self.header_written = res.is_ok();
            }
            if res.is_ok() {
                res = write_all(fd, records);
            }
            if close_after {
                // SAFETY: closing the fd we just opened.
                unsafe { libc::syscall(libc::SYS_close, fd) };
            }
            match res {
                Ok(()) => return true,
                Err(WriteError::Unwritten(libc::EBADF)) if attempt == 0 && !close_after => {
                    self.out.forget();
                }
                Err(_) => return false,
            }
        }
        false
    }

    /// Open (create) this image's trace file with a raw syscall, so that our
    /// own open hooks (and anyone else's) are bypassed; -1 on failure.
    fn open_trace_file(&mut self) -> c_int {
        let mut name = std::mem::take(&mut self.name);
        self.file_name(&mut name, self.t0_ns, b".ev\0");
        let fd = create(&name);
        self.name = name;
        fd
    }

    /// `<dir>/<pid>-<t><suffix>` into `name` (cleared first); `suffix` ends
    /// with the NUL when the name is complete.
    fn file_name(&self, name: &mut Vec<u8>, t: u64, suffix: &[u8]) {
        name.clear();
        name.extend_from_slice(&self.dir);
        name.push(b'/');
        let mut num = [0u8; 20];
        let n = write_u64(&mut num, self.pid as u64);
        name.extend_from_slice(&num[..n]);
        name.push(b'-');
        let n = write_u64(&mut num, t);
        name.extend_from_slice(&num[..n]);
        name.extend_from_slice(suffix);
    }
}

impl Sink for TraceFile {
    /// [`TraceFile::write_out`], leaving a `.lost` marker if it fails.
    /// Without a trace directory the records are dropped.
    fn write(&mut self, records: &[u8]) -> bool {
        if self.dir.is_empty() {
            return true;
        }
        let ok = self.write_out(records);
        if !ok {
            self.mark_lost();
        }
        ok
    }
}

/// Create (or open for appending) a file of ours with a raw syscall, so that
/// our own open hooks (and anyone else's) are bypassed; -1 on failure.
fn create(name_nul: &[u8]) -> c_int {
    debug_assert_eq!(name_nul.last(), Some(&0));
    // SAFETY: the name is NUL-terminated.
    unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            name_nul.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND | libc::O_CLOEXEC,
            0o600 as libc::c_uint,
        ) as c_int
    }
}

/// What [`fd_stat`] reports about a descriptor.
struct FdStat {
    mode: u32,
    size: u64,
    mtime_ns: i64,
}

/// Set once statx turned out to be unavailable (kernel older than 4.11, or a
/// seccomp policy that refuses it): fstat from then on.
static NO_STATX: AtomicBool = AtomicBool::new(false);

/// File type of the open descriptor `fd`, and with `times` its size and
/// mtime (else 0 and -1). None if it cannot be stat'ed.
///
/// statx with only the fields we need, not fstat: since Linux 6.13 (tmpfs,
/// ext4, xfs, btrfs...) asking for a file's mtime or ctime marks the inode's
/// timestamps as queried, and the kernel must then give the file's next
/// change a fine-grained timestamp; for a freshly written file, even the
/// program's next read() updates atime under relatime. An fstat per open
/// made every written file pay that (about as much as the fstat itself).
/// Writes only need the type (is it a regular file?); reads and updates
/// report size and mtime, so they ask for them.
fn fd_stat(fd: c_int, times: bool) -> Option<FdStat> {
    if !NO_STATX.load(Ordering::Relaxed) {
        let mask = if times {
            libc::STATX_TYPE | libc::STATX_SIZE | libc::STATX_MTIME
        } else {
            libc::STATX_TYPE
        };
        // SAFETY: zeroed statx is a valid out-buffer.
        let mut sx: libc::statx = unsafe { std::mem::zeroed() };
        // SAFETY: empty NUL-terminated path with AT_EMPTY_PATH: the call
        // only reads the path and writes `sx`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_statx,
                fd,
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_STATX_SYNC_AS_STAT,
                mask,
                &mut sx,
            )
        };
        if r == 0 && sx.stx_mask & mask == mask {
            return Some(FdStat {
                mode: sx.stx_mode as u32,
                size: if times { sx.stx_size } else { 0 },
                mtime_ns: if times {
                    sx.stx_mtime
                        .tv_sec
                        .wrapping_mul(1_000_000_000)
                        .wrapping_add(sx.stx_mtime.tv_nsec as i64)
                } else {
                    -1
                },
            });
        }
        // SAFETY: reading errno.
        let e = unsafe { *libc::__errno_location() };
        if r != 0 && matches!(e, libc::ENOSYS | libc::EPERM | libc::EINVAL) {
            NO_STATX.store(true, Ordering::Relaxed);
        }
        // Otherwise (EBADF, or fields not reported): fstat decides.
    }
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of any number only writes `st`. A raw fstat: glibc's is
    // fstatat(fd, "", AT_EMPTY_PATH), which also reads an empty path.
    if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st) } != 0 {
        return None;
    }
    Some(FdStat {
        mode: st.st_mode,
        size: if times { st.st_size as u64 } else { 0 },
        mtime_ns: if times {
            (st.st_mtime as i64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(st.st_mtime_nsec as i64)
        } else {
            -1
        },
    })
}

/// The trace file descriptor kept open between flushes, with the identity
/// of the file it was opened on. Opening the file once per flush (records
/// that change files are written through at once) cost an openat + close
/// per written file; keeping it open must not let the program's own fd
/// handling make us write elsewhere, hence: a high number (out of the way of
/// programs that use low fds or dup2 to fixed numbers), O_CLOEXEC, and a
/// check that the number still names our file whenever the program may have
/// changed it.
///
/// That check used to be an fstat before every write. Now the calls that can
/// take a number away from us (close, dup2, dup3, close_range, closefrom and
/// their `__` aliases) are hooked (`fds.rs`): when they reach the range where
/// we keep our number ([`FD_FLOOR`] and up) they run under the state lock,
/// and mark it suspect if they cover it; only then is it re-checked (fstat:
/// dev/ino, still linked). A raw `syscall(SYS_close, n)`
/// bypasses the hooks; the next write then fails with EBADF and the file is
/// reopened, and an open hook that gets our number back from the kernel
/// drops it. Not covered: our number closed by a raw syscall *and* reused by
/// something other than a hooked open (a socket, a raw openat...) before our
/// next write.
pub struct TraceFd {
    fd: c_int,
    dev: u64,
    ino: u64,
    /// Process that opened it: a child of fork must never write through it.
    pid: u32,
}

impl TraceFd {
    /// No descriptor held.
    pub const NONE: TraceFd = TraceFd {
        fd: -1,
        dev: 0,
        ino: 0,
        pid: 0,
    };

    fn set(&mut self, v: TraceFd) {
        *self = v;
        HELD_FD.store(self.fd, Ordering::Relaxed);
    }

    /// Stop using the held number without closing it (it is not ours).
    fn forget(&mut self) {
        if self.fd >= 0 {
            self.set(TraceFd::NONE);
        }
    }

    /// The held descriptor if it is usable in process `pid`: not touched by
    /// the program since we last knew it was ours, or verified again now;
    /// else forget it and -1.
    fn get(&mut self, pid: u32) -> c_int {
        if self.fd < 0 {
            return -1;
        }
        if self.pid == pid && (!SUSPECT.swap(false, Ordering::Relaxed) || self.verified()) {
            return self.fd;
        }
        self.forget();
        -1
    }

    /// Whether the held number still refers to our file (same dev/ino, still
    /// linked).
    fn verified(&self) -> bool {
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat of any number only writes `st` (EBADF if not open).
        if unsafe { libc::syscall(libc::SYS_fstat, self.fd, &mut st) } != 0 {
            return false;
        }
        // (dev, ino) is sufficient; no F_GETFL check of the access mode. The
        // inode is the trace file we created under a name private to this
        // image (`<pid>-<t0>.ev` in the trace dir), so if the number now holds
        // any other file, socket or pipe, the identity differs and we reopen.
        // The only way for it to hold a description of the same inode that is
        // not ours is for the program to have opened our trace file by name
        // (and put it at this number): writing through that can at worst
        // misplace or lose our own records, never touch a file of the program.
        st.st_dev as u64 == self.dev && st.st_ino as u64 == self.ino && st.st_nlink != 0
    }

    /// Move the freshly opened `fd` to a high number and hold it there.
    /// Returns the number to write to and the file's current size, or `None`
    /// (and `fd` is left as is for the caller to close) when no high number
    /// is available.
    fn adopt(&mut self, fd: c_int, pid: u32) -> Option<(c_int, u64)> {
        // SAFETY: zeroed stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat only writes `st`.
        if unsafe { libc::syscall(libc::SYS_fstat, fd, &mut st) } != 0 {
            return None;
        }
        // Never below the floor the hooks rely on. (If the program lowered
        // its limit under it since, F_DUPFD fails and we fall back.)
        let min = FD_FLOOR.load(Ordering::Relaxed);
        if min == i32::MAX {
            return None;
        }
        // SAFETY: F_DUPFD_CLOEXEC takes an integer.
        let high =
            unsafe { libc::syscall(libc::SYS_fcntl, fd, libc::F_DUPFD_CLOEXEC, min) } as c_int;
        if high < 0 {
            return None;
        }
        // SAFETY: closing the low fd we opened ourselves; `high` stays.
        unsafe { libc::syscall(libc::SYS_close, fd) };
        self.set(TraceFd {
            fd: high,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            pid,
        });
        // Nothing touched the new number yet (we hold the state lock, and the
        // hooks only look at it from now on).
        SUSPECT.store(false, Ordering::Relaxed);
        Some((high, st.st_size as u64))
    }

    /// Close the held descriptor if it is still ours; forget it either way.
    fn close(&mut self) {
        if self.fd >= 0 && self.verified() {
            // SAFETY: verified above to be the descriptor we opened.
            unsafe { libc::syscall(libc::SYS_close, self.fd) };
        }
        self.forget();
    }
}

/// Why [`write_all`] stopped.
enum WriteError {
    /// Nothing was written; the errno of the first write.
    Unwritten(c_int),
    /// Part of the data was written.
    Partial,
}

fn write_all(fd: c_int, mut data: &[u8]) -> Result<(), WriteError> {
    let mut written = false;
    while !data.is_empty() {
        // SAFETY: valid buffer; write() is not hooked by this library.
        let r = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if r < 0 {
            // SAFETY: reading errno.
            let e = unsafe { *libc::__errno_location() };
            if e == libc::EINTR {
                continue;
            }
            return Err(if written {
                WriteError::Partial
            } else {
                WriteError::Unwritten(e)
            });
        }
        written = true;
        data = &data[r as usize..];
    }
    Ok(())
}

/// Decimal digits of `v` into `out`; returns the length (out must hold 20).
fn write_u64(out: &mut [u8], mut v: u64) -> usize {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let n = tmp.len() - i;
    out[..n].copy_from_slice(&tmp[i..]);
    n
}

/// atfork prepare: take the state lock so the child never inherits it held
/// by a thread that does not exist there (and never sees a half-written
/// buffer). Skipped if this thread is already inside the tracer (fork from a
/// signal handler that interrupted us): taking the lock would self-deadlock.
pub extern "C" fn atfork_prepare() {
    if IN_HOOK.try_with(|c| c.get()).unwrap_or(true) {
        return;
    }
    SHARED.lock.lock();
    let _ = FORK_LOCKED.try_with(|c| c.set(true));
    // Our raw syscalls below reach our own syscall() hook: it must pass them
    // through (the state lock is held), not record them.
    let _g = HookGuard::enter();
    let _errno = ErrnoGuard::save();
    let _ = catch_unwind(|| {
        // SAFETY: we hold the lock.
        let st = unsafe { &mut *SHARED.state.get() };
        st.before_fork();
    });
}

/// atfork parent: release what prepare took (and the parent's copy of the
/// child's claimed trace file).
pub extern "C" fn atfork_parent() {
    let fd = FORK_FD.swap(-1, Ordering::Relaxed);
    if fd >= 0 {
        let _g = HookGuard::enter();
        let _errno = ErrnoGuard::save();
        // SAFETY: the descriptor before_fork opened; the child keeps its copy.
        unsafe { libc::syscall(libc::SYS_close, fd) };
    }
    if FORK_LOCKED.try_with(|c| c.replace(false)).unwrap_or(false) {
        SHARED.lock.unlock();
    }
}

/// atfork child: single-threaded; reset the lock and start a fresh
/// per-process state (new pid, new file, empty buffer and dedupe set).
pub extern "C" fn atfork_child() {
    let _ = FORK_LOCKED.try_with(|c| c.set(false));
    SHARED.lock.reset();
    let _g = HookGuard::enter();
    let _ = catch_unwind(|| {
        // SAFETY: only one thread exists in the child and the lock was reset.
        let st = unsafe { &mut *SHARED.state.get() };
        st.after_fork_child();
        crate::control::after_fork_child(st);
    });
}
