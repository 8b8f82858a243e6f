//! Hooks on the libc functions that name files: the open family, fopen
//! family, mkstemp family, truncate, rename/link/unlink, chdir, vfork and
//! `_exit`.
//!
//! Every hook has the same shape, and [`hooks!`] generates them all from one
//! line per hook (signature, real function, what success looks like, what to
//! record), so the shape cannot drift between them:
//!
//! 1. load the cached real function (missing: fail with ENOSYS);
//! 2. if dormant (one relaxed atomic load) or already inside the tracer on
//!    this thread, tail-call the real function and return;
//! 3. call the real function, keep its result;
//! 4. on success only, record (errno saved and restored around our work,
//!    panics caught inside `with_state`);
//! 5. return the real result.
//!
//! There are deliberately no hooks on read/write: classification happens at
//! open from the flags, so the tracer costs nothing per I/O syscall (see
//! README.md). close and the dup family are hooked in `fds.rs`, only to
//! protect the trace descriptor (a compare and a tail call).
//!
//! The variadic `open`-style functions take `mode` as a plain third/fourth
//! argument: on x86_64 and aarch64 Linux a variadic integer argument is
//! passed exactly like a named one, and when the caller passed no mode the
//! register holds garbage that the real function ignores (it only reads mode
//! with O_CREAT/O_TMPFILE), just as it would have.

use std::ffi::CStr;

use libc::{c_char, c_int, c_uint, mode_t, off64_t, off_t, pid_t, FILE};
use roar_events::Op;

use crate::real;
use crate::state::{tracing, with_state, ErrnoGuard};

/// Fail like a missing libc function: -1 with errno ENOSYS (the real
/// function could not be found). Shared by every hook module.
pub(crate) fn enosys() -> c_int {
    // SAFETY: setting errno.
    unsafe { *libc::__errno_location() = libc::ENOSYS };
    -1
}

/// Bytes of a C string (empty for NULL).
///
/// # Safety
/// `p` must be NULL or a NUL-terminated string outliving `'a`.
pub(crate) unsafe fn cbytes<'a>(p: *const c_char) -> &'a [u8] {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if p.is_null() {
            b""
        } else {
            CStr::from_ptr(p).to_bytes()
        }
    }
}

/// R, W or U from open(2) flags: the shared rules of `roar_events`.
fn classify_flags(flags: c_int) -> Option<Op> {
    roar_events::classify_open_flags(flags)
}

/// R, W or U from an fopen(3) mode string.
fn classify_mode(mode: &[u8]) -> Option<Op> {
    match mode.first()? {
        b'r' if mode.contains(&b'+') => Some(Op::Update),
        b'r' => Some(Op::Read),
        // O_APPEND: see `roar_events::classify_open_flags`.
        b'a' => Some(Op::Update),
        b'w' => Some(Op::Write),
        _ => None,
    }
}

/// Record an open-like success of `op` on `path` (relative to `dirfd`).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
pub(crate) unsafe fn note_open(op: Option<Op>, dirfd: c_int, path: *const c_char, fd: c_int) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(op) = op else { return };
        if path.is_null() {
            return;
        }
        let _errno = ErrnoGuard::save();
        let raw = cbytes(path);
        with_state(|st| st.on_open(op, dirfd, raw, fd));
    }
}
/// Record a successful rename/link.
///
/// # Safety
/// `p1`, `p2` must be NULL or NUL-terminated strings.
pub(crate) unsafe fn note_pair(op: Op, d1: c_int, p1: *const c_char, d2: c_int, p2: *const c_char) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if p1.is_null() || p2.is_null() {
            return;
        }
        let _errno = ErrnoGuard::save();
        let (a, b) = (cbytes(p1), cbytes(p2));
        with_state(|st| st.on_pair(op, d1, a, d2, b));
    }
}

/// Record renameat2(RENAME_EXCHANGE): both names now hold other content.
///
/// # Safety
/// `p1`, `p2` must be NULL or NUL-terminated strings.
pub(crate) unsafe fn note_exchange(d1: c_int, p1: *const c_char, d2: c_int, p2: *const c_char) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if p1.is_null() || p2.is_null() {
            return;
        }
        let _errno = ErrnoGuard::save();
        let (a, b) = (cbytes(p1), cbytes(p2));
        with_state(|st| st.on_exchange(d1, a, d2, b));
    }
}

/// Record a successful unlink.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
pub(crate) unsafe fn note_delete(dirfd: c_int, path: *const c_char) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if path.is_null() {
            return;
        }
        let _errno = ErrnoGuard::save();
        let raw = cbytes(path);
        with_state(|st| st.on_delete(dirfd, raw));
    }
}

/// What a hook returns when libc lacks the real function: what the function
/// returns on failure, with errno ENOSYS.
pub(crate) trait Missing {
    /// The failure value (errno set to ENOSYS).
    fn missing() -> Self;
}

impl Missing for c_int {
    fn missing() -> c_int {
        enosys()
    }
}

impl Missing for *mut FILE {
    fn missing() -> *mut FILE {
        enosys();
        std::ptr::null_mut()
    }
}

/// The hook generator. Each entry of the first form reads
///
/// ```text
/// /// docs
/// fn NAME(ARGS) -> RET = REAL_GETTER;
/// [before NAME = EXPR;]     evaluated while tracing, before the real call
/// record |R| if SUCCESS => RECORD;
/// ```
///
/// and becomes `#[no_mangle] pub unsafe extern "C" fn NAME(ARGS) -> RET`
/// with the five steps of the module documentation: `R` names the real
/// call's result in `SUCCESS` and `RECORD`.
///
/// The second form, `hooks! { descriptor ... }`, makes the hooks of calls
/// that take descriptor number `N` away (`fds.rs`): an entry
/// `fn NAME(ARGS) -> RET = REAL_GETTER; takes N;` tail-calls the real
/// function unless `N` reaches the range where the trace descriptor is kept,
/// and then runs it through `state::touching_trace_fd`. They record nothing
/// and run dormant or not.
macro_rules! hooks {
    (descriptor $(
        $(#[$m:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $getter:ident;
        takes $n:ident;
    )*) => {$(
        hooks!(@fn $(#[$m])* $name($($arg: $ty),*) -> $ret = $getter, |real| {
            if $n < $crate::state::FD_FLOOR.load(std::sync::atomic::Ordering::Relaxed) {
                return real($($arg),*);
            }
            $crate::state::touching_trace_fd(|h| h == $n, || real($($arg),*))
        });
    )*};
    ($(
        $(#[$m:meta])*
        fn $name:ident($($arg:ident: $ty:ty),* $(,)?) -> $ret:ty = $getter:ident;
        $(before $pre:ident = $pre_e:expr;)?
        record |$r:ident| if $ok:expr => $rec:expr;
    )*) => {$(
        hooks!(@fn $(#[$m])* $name($($arg: $ty),*) -> $ret = $getter, |real| {
            let Some(_g) = $crate::state::tracing() else {
                return real($($arg),*);
            };
            $(let $pre = $pre_e;)?
            let $r = real($($arg),*);
            if $ok {
                $rec;
            }
            $r
        });
    )*};
    // The part every hook shares: the exported signature, and the real
    // function (ENOSYS if libc lacks it) bound to `$real` for `$body`.
    (@fn $(#[$m:meta])* $name:ident($($arg:ident: $ty:ty),*) -> $ret:ty = $getter:ident,
     |$real:ident| $body:block) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name($($arg: $ty),*) -> $ret {
            // SAFETY: the caller upholds this function's contract (its `# Safety` section).
            unsafe {
                let Some($real) = $crate::real::$getter() else {
                    return <$ret as $crate::hooks::Missing>::missing();
                };
                $body
            }
        }
    };
}
pub(crate) use hooks;

/// Whether `path` is a directory (checked before `remove`, which leaves
/// nothing to check afterwards).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
unsafe fn is_dir(path: *const c_char) -> bool {
    let _errno = ErrnoGuard::save();
    // SAFETY: zeroed stat is a valid out-buffer; lstat only reads the path.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        !path.is_null()
            && libc::lstat(path, &mut st) == 0
            && st.st_mode & libc::S_IFMT == libc::S_IFDIR
    }
}

const AT: c_int = libc::AT_FDCWD;

hooks! {
    /// Hook: `open(2)`.
    fn open(path: *const c_char, flags: c_int, mode: mode_t) -> c_int = real_open;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), AT, path, fd);

    /// Hook: `open64(2)`.
    fn open64(path: *const c_char, flags: c_int, mode: mode_t) -> c_int = real_open64;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), AT, path, fd);

    /// Hook: `openat(2)`.
    fn openat(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int = real_openat;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), dirfd, path, fd);

    /// Hook: `openat64(2)`.
    fn openat64(dirfd: c_int, path: *const c_char, flags: c_int, mode: mode_t) -> c_int = real_openat64;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), dirfd, path, fd);

    /// Hook: `__open_2` (what `open` compiles to under _FORTIFY_SOURCE).
    fn __open_2(path: *const c_char, flags: c_int) -> c_int = real_open_2;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), AT, path, fd);

    /// Hook: `__open64_2` (fortified open64).
    fn __open64_2(path: *const c_char, flags: c_int) -> c_int = real_open64_2;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), AT, path, fd);

    /// Hook: `__openat_2` (fortified openat).
    fn __openat_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = real_openat_2;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), dirfd, path, fd);

    /// Hook: `__openat64_2` (fortified openat64).
    fn __openat64_2(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = real_openat64_2;
    record |fd| if fd >= 0 => note_open(classify_flags(flags), dirfd, path, fd);

    /// Hook: `creat(2)` (always W).
    fn creat(path: *const c_char, mode: mode_t) -> c_int = real_creat;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, path, fd);

    /// Hook: `creat64(2)` (always W).
    fn creat64(path: *const c_char, mode: mode_t) -> c_int = real_creat64;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, path, fd);

    /// Hook: `fopen(3)`: "r" is R, "r+" is U, "w"/"a" (with or without "+") are W.
    /// glibc's fopen opens through internal (non-PLT) calls, so this is the
    /// only record for the file.
    fn fopen(path: *const c_char, mode: *const c_char) -> *mut FILE = real_fopen;
    record |fp| if !fp.is_null() && !mode.is_null()
        => note_open(classify_mode(cbytes(mode)), AT, path, libc::fileno(fp));

    /// Hook: `fopen64(3)`.
    fn fopen64(path: *const c_char, mode: *const c_char) -> *mut FILE = real_fopen64;
    record |fp| if !fp.is_null() && !mode.is_null()
        => note_open(classify_mode(cbytes(mode)), AT, path, libc::fileno(fp));

    /// Hook: `freopen(3)`. A NULL path only changes the mode of the same
    /// file: not a new open.
    fn freopen(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE = real_freopen;
    record |fp| if !fp.is_null() && !path.is_null() && !mode.is_null()
        => note_open(classify_mode(cbytes(mode)), AT, path, libc::fileno(fp));

    /// Hook: `freopen64(3)`.
    fn freopen64(path: *const c_char, mode: *const c_char, stream: *mut FILE) -> *mut FILE = real_freopen64;
    record |fp| if !fp.is_null() && !path.is_null() && !mode.is_null()
        => note_open(classify_mode(cbytes(mode)), AT, path, libc::fileno(fp));

    // glibc's mkstemp family creates the file through internal calls, so each
    // must be hooked itself. On success the template holds the created name.

    /// Hook: `mkstemp(3)` (W of the created file).
    fn mkstemp(template: *mut c_char) -> c_int = real_mkstemp;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkstemp64(3)`.
    fn mkstemp64(template: *mut c_char) -> c_int = real_mkstemp64;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkstemps(3)`.
    fn mkstemps(template: *mut c_char, suffixlen: c_int) -> c_int = real_mkstemps;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkstemps64(3)`.
    fn mkstemps64(template: *mut c_char, suffixlen: c_int) -> c_int = real_mkstemps64;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkostemp(3)`.
    fn mkostemp(template: *mut c_char, flags: c_int) -> c_int = real_mkostemp;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkostemp64(3)`.
    fn mkostemp64(template: *mut c_char, flags: c_int) -> c_int = real_mkostemp64;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkostemps(3)`.
    fn mkostemps(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int = real_mkostemps;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `mkostemps64(3)`.
    fn mkostemps64(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int = real_mkostemps64;
    record |fd| if fd >= 0 => note_open(Some(Op::Write), AT, template, fd);

    /// Hook: `truncate(2)` (W; no fd, so no fstat).
    fn truncate(path: *const c_char, len: off_t) -> c_int = real_truncate;
    record |r| if r == 0 => note_open(Some(Op::Write), AT, path, -1);

    /// Hook: `truncate64(2)`.
    fn truncate64(path: *const c_char, len: off64_t) -> c_int = real_truncate64;
    record |r| if r == 0 => note_open(Some(Op::Write), AT, path, -1);

    /// Hook: `rename(2)` (M old -> new).
    fn rename(old: *const c_char, new: *const c_char) -> c_int = real_rename;
    record |r| if r == 0 => note_pair(Op::Move, AT, old, AT, new);

    /// Hook: `renameat(2)`.
    fn renameat(olddirfd: c_int, old: *const c_char, newdirfd: c_int, new: *const c_char) -> c_int
        = real_renameat;
    record |r| if r == 0 => note_pair(Op::Move, olddirfd, old, newdirfd, new);

    /// Hook: `renameat2(2)` (coreutils `mv` uses it). RENAME_EXCHANGE swaps two
    /// files, which M cannot express: both names are reported as W.
    fn renameat2(
        olddirfd: c_int,
        old: *const c_char,
        newdirfd: c_int,
        new: *const c_char,
        flags: c_uint,
    ) -> c_int = real_renameat2;
    record |r| if r == 0 => if flags & libc::RENAME_EXCHANGE != 0 {
        note_exchange(olddirfd, old, newdirfd, new)
    } else {
        note_pair(Op::Move, olddirfd, old, newdirfd, new)
    };

    /// Hook: `link(2)` (L old -> new).
    fn link(old: *const c_char, new: *const c_char) -> c_int = real_link;
    record |r| if r == 0 => note_pair(Op::Link, AT, old, AT, new);

    /// Hook: `linkat(2)`. `AT_EMPTY_PATH` with an empty old path links the file
    /// open on `olddirfd` (typically an O_TMPFILE being given a name): the
    /// visible effect is a new file at `new`, recorded as W.
    fn linkat(
        olddirfd: c_int,
        old: *const c_char,
        newdirfd: c_int,
        new: *const c_char,
        flags: c_int,
    ) -> c_int = real_linkat;
    record |r| if r == 0 => if flags & libc::AT_EMPTY_PATH != 0 && cbytes(old).is_empty() {
        note_open(Some(Op::Write), newdirfd, new, -1)
    } else {
        note_pair(Op::Link, olddirfd, old, newdirfd, new)
    };

    /// Hook: `unlink(2)` (D).
    fn unlink(path: *const c_char) -> c_int = real_unlink;
    record |r| if r == 0 => note_delete(AT, path);

    /// Hook: `unlinkat(2)` (D unless AT_REMOVEDIR, which removes a directory).
    fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int = real_unlinkat;
    record |r| if r == 0 && flags & libc::AT_REMOVEDIR == 0 => note_delete(dirfd, path);

    /// Hook: `remove(3)`: glibc implements it with internal unlink/rmdir calls,
    /// so it needs its own hook. Whether the path is a directory has to be
    /// checked before the call (afterwards it is gone).
    fn remove(path: *const c_char) -> c_int = real_remove;
    before dir = is_dir(path);
    record |r| if r == 0 && !dir => note_delete(AT, path);

    /// Hook: `chdir(2)`: invalidates the cached cwd used to resolve relative
    /// paths. (Even while dormant the cache must not go stale, but dormant mode
    /// clears the cache at roar_begin instead, keeping this path one load.)
    fn chdir(path: *const c_char) -> c_int = real_chdir;
    record |r| if r == 0 => with_state(|st| st.invalidate_cwd());

    /// Hook: `fchdir(2)`: invalidates the cached cwd.
    fn fchdir(fd: c_int) -> c_int = real_fchdir;
    record |r| if r == 0 => with_state(|st| st.invalidate_cwd());
}

/// Hook: `vfork(2)`, implemented as the real `fork()`.
///
/// A vfork child shares the parent's memory (our buffer, dedupe set and
/// lock) and runs on the parent's stack until it execs; if it ran our hooks
/// (exec, open for redirections...) it would corrupt the parent's tracer
/// state, and wrapping a real vfork in a function is itself unsound (the
/// child returning from the wrapper clobbers the frame the parent resumes
/// in). fork gives the same observable behaviour for every correct vfork
/// user (the child may only exec or _exit), runs our atfork handlers, and
/// costs a page-table copy. Done even while dormant: a concurrent
/// `roar_begin` could otherwise activate hooks inside a live vfork child.
///
/// # Safety
/// Same contract as libc `fork`.
#[no_mangle]
pub unsafe extern "C" fn vfork() -> pid_t {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        match real::real_fork() {
            Some(f) => f(),
            None => enosys(),
        }
    }
}

/// Flush before the process ends without running destructors.
fn flush_before_exit() {
    if let Some(_g) = tracing() {
        let _errno = ErrnoGuard::save();
        with_state(|st| st.flush());
    }
}

/// Hook: `_exit(2)`: flush pending records first (no destructors run).
///
/// # Safety
/// Same contract as libc `_exit`.
#[no_mangle]
pub unsafe extern "C" fn _exit(status: c_int) -> ! {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        flush_before_exit();
        match real::real_exit() {
            Some(f) => f(status),
            None => {
                libc::syscall(libc::SYS_exit_group, status);
                loop {
                    std::hint::spin_loop();
                }
            }
        }
    }
}

/// Hook: `_Exit(2)`: same as `_exit`.
///
/// # Safety
/// Same contract as libc `_Exit`.
#[no_mangle]
pub unsafe extern "C" fn _Exit(status: c_int) -> ! {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        flush_before_exit();
        match real::real_exit2() {
            Some(f) => f(status),
            None => {
                libc::syscall(libc::SYS_exit_group, status);
                loop {
                    std::hint::spin_loop();
                }
            }
        }
    }
}
