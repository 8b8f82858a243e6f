//! Hooks on the libc functions that name files: the open family, fopen
//! family, mkstemp family, truncate, rename/link/unlink, chdir, vfork and
//! `_exit`.
//!
//! Every hook follows the same shape, and must keep it:
//!
//! 1. load the cached real function;
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

macro_rules! open_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int, mode: mode_t) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(path, flags, mode) };
            let fd = real(path, flags, mode);
            if fd >= 0 {
                note_open(classify_flags(flags), libc::AT_FDCWD, path, fd);
            }
            fd
        }}
    };
}

macro_rules! openat_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            dirfd: c_int,
            path: *const c_char,
            flags: c_int,
            mode: mode_t,
        ) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(dirfd, path, flags, mode) };
            let fd = real(dirfd, path, flags, mode);
            if fd >= 0 {
                note_open(classify_flags(flags), dirfd, path, fd);
            }
            fd
        }}
    };
}

open_hook!(
    /// Hook: `open(2)`.
    open, real_open
);
open_hook!(
    /// Hook: `open64(2)`.
    open64, real_open64
);
openat_hook!(
    /// Hook: `openat(2)`.
    openat, real_openat
);
openat_hook!(
    /// Hook: `openat64(2)`.
    openat64, real_openat64
);

macro_rules! open2_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, flags: c_int) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(path, flags) };
            let fd = real(path, flags);
            if fd >= 0 {
                note_open(classify_flags(flags), libc::AT_FDCWD, path, fd);
            }
            fd
        }}
    };
}

macro_rules! openat2_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(dirfd, path, flags) };
            let fd = real(dirfd, path, flags);
            if fd >= 0 {
                note_open(classify_flags(flags), dirfd, path, fd);
            }
            fd
        }}
    };
}

open2_hook!(
    /// Hook: `__open_2` (what `open` compiles to under _FORTIFY_SOURCE).
    __open_2, real_open_2
);
open2_hook!(
    /// Hook: `__open64_2` (fortified open64).
    __open64_2, real_open64_2
);
openat2_hook!(
    /// Hook: `__openat_2` (fortified openat).
    __openat_2, real_openat_2
);
openat2_hook!(
    /// Hook: `__openat64_2` (fortified openat64).
    __openat64_2, real_openat64_2
);

macro_rules! creat_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: mode_t) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(path, mode) };
            let fd = real(path, mode);
            if fd >= 0 {
                note_open(Some(Op::Write), libc::AT_FDCWD, path, fd);
            }
            fd
        }}
    };
}

creat_hook!(
    /// Hook: `creat(2)` (always W).
    creat, real_creat
);
creat_hook!(
    /// Hook: `creat64(2)` (always W).
    creat64, real_creat64
);

macro_rules! fopen_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(path: *const c_char, mode: *const c_char) -> *mut FILE { unsafe {
            let Some(real) = real::$getter() else {
                enosys();
                return std::ptr::null_mut();
            };
            let Some(_g) = tracing() else { return real(path, mode) };
            let fp = real(path, mode);
            if !fp.is_null() && !mode.is_null() {
                // glibc's fopen opens through internal (non-PLT) calls, so
                // this is the only record for the file.
                note_open(classify_mode(cbytes(mode)), libc::AT_FDCWD, path, libc::fileno(fp));
            }
            fp
        }}
    };
}

fopen_hook!(
    /// Hook: `fopen(3)`: "r" is R, "r+" is U, "w"/"a" (with or without "+") are W.
    fopen, real_fopen
);
fopen_hook!(
    /// Hook: `fopen64(3)`.
    fopen64, real_fopen64
);

macro_rules! freopen_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            path: *const c_char,
            mode: *const c_char,
            stream: *mut FILE,
        ) -> *mut FILE { unsafe {
            let Some(real) = real::$getter() else {
                enosys();
                return std::ptr::null_mut();
            };
            let Some(_g) = tracing() else { return real(path, mode, stream) };
            let fp = real(path, mode, stream);
            // A NULL path only changes the mode of the same file: not a new open.
            if !fp.is_null() && !path.is_null() && !mode.is_null() {
                note_open(classify_mode(cbytes(mode)), libc::AT_FDCWD, path, libc::fileno(fp));
            }
            fp
        }}
    };
}

freopen_hook!(
    /// Hook: `freopen(3)`.
    freopen, real_freopen
);
freopen_hook!(
    /// Hook: `freopen64(3)`.
    freopen64, real_freopen64
);

// glibc's mkstemp family creates the file through internal calls, so each
// must be hooked itself. On success the template holds the created name.

macro_rules! mkstemp_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(template: *mut c_char) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(template) };
            let fd = real(template);
            if fd >= 0 {
                note_open(Some(Op::Write), libc::AT_FDCWD, template, fd);
            }
            fd
        }}
    };
}

macro_rules! mkstemp2_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(template: *mut c_char, arg: c_int) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(template, arg) };
            let fd = real(template, arg);
            if fd >= 0 {
                note_open(Some(Op::Write), libc::AT_FDCWD, template, fd);
            }
            fd
        }}
    };
}

macro_rules! mkostemps_hook {
    ($(#[$m:meta])* $name:ident, $getter:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[no_mangle]
        pub unsafe extern "C" fn $name(template: *mut c_char, suffixlen: c_int, flags: c_int) -> c_int { unsafe {
            let Some(real) = real::$getter() else { return enosys() };
            let Some(_g) = tracing() else { return real(template, suffixlen, flags) };
            let fd = real(template, suffixlen, flags);
            if fd >= 0 {
                note_open(Some(Op::Write), libc::AT_FDCWD, template, fd);
            }
            fd
        }}
    };
}

mkstemp_hook!(
    /// Hook: `mkstemp(3)` (W of the created file).
    mkstemp, real_mkstemp
);
mkstemp_hook!(
    /// Hook: `mkstemp64(3)`.
    mkstemp64, real_mkstemp64
);
mkstemp2_hook!(
    /// Hook: `mkstemps(3)`.
    mkstemps, real_mkstemps
);
mkstemp2_hook!(
    /// Hook: `mkstemps64(3)`.
    mkstemps64, real_mkstemps64
);
mkstemp2_hook!(
    /// Hook: `mkostemp(3)`.
    mkostemp, real_mkostemp
);
mkstemp2_hook!(
    /// Hook: `mkostemp64(3)`.
    mkostemp64, real_mkostemp64
);
mkostemps_hook!(
    /// Hook: `mkostemps(3)`.
    mkostemps, real_mkostemps
);
mkostemps_hook!(
    /// Hook: `mkostemps64(3)`.
    mkostemps64, real_mkostemps64
);

/// Hook: `truncate(2)` (W; no fd, so no fstat).
///
/// # Safety
/// Same contract as libc `truncate`.
#[no_mangle]
pub unsafe extern "C" fn truncate(path: *const c_char, len: off_t) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_truncate() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path, len);
        };
        let r = real(path, len);
        if r == 0 {
            note_open(Some(Op::Write), libc::AT_FDCWD, path, -1);
        }
        r
    }
}

/// Hook: `truncate64(2)`.
///
/// # Safety
/// Same contract as libc `truncate64`.
#[no_mangle]
pub unsafe extern "C" fn truncate64(path: *const c_char, len: off64_t) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_truncate64() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path, len);
        };
        let r = real(path, len);
        if r == 0 {
            note_open(Some(Op::Write), libc::AT_FDCWD, path, -1);
        }
        r
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

/// Hook: `rename(2)` (M old -> new).
///
/// # Safety
/// Same contract as libc `rename`.
#[no_mangle]
pub unsafe extern "C" fn rename(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_rename() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(old, new);
        };
        let r = real(old, new);
        if r == 0 {
            note_pair(Op::Move, libc::AT_FDCWD, old, libc::AT_FDCWD, new);
        }
        r
    }
}

/// Hook: `renameat(2)`.
///
/// # Safety
/// Same contract as libc `renameat`.
#[no_mangle]
pub unsafe extern "C" fn renameat(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_renameat() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(olddirfd, old, newdirfd, new);
        };
        let r = real(olddirfd, old, newdirfd, new);
        if r == 0 {
            note_pair(Op::Move, olddirfd, old, newdirfd, new);
        }
        r
    }
}

/// Hook: `renameat2(2)` (coreutils `mv` uses it). RENAME_EXCHANGE swaps two
/// files, which M cannot express: both names are reported as W.
///
/// # Safety
/// Same contract as libc `renameat2`.
#[no_mangle]
pub unsafe extern "C" fn renameat2(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_uint,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_renameat2() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(olddirfd, old, newdirfd, new, flags);
        };
        let r = real(olddirfd, old, newdirfd, new, flags);
        if r == 0 {
            if flags & libc::RENAME_EXCHANGE != 0 {
                if !old.is_null() && !new.is_null() {
                    let _errno = ErrnoGuard::save();
                    let (a, b) = (cbytes(old), cbytes(new));
                    with_state(|st| st.on_exchange(olddirfd, a, newdirfd, b));
                }
            } else {
                note_pair(Op::Move, olddirfd, old, newdirfd, new);
            }
        }
        r
    }
}

/// Hook: `link(2)` (L old -> new).
///
/// # Safety
/// Same contract as libc `link`.
#[no_mangle]
pub unsafe extern "C" fn link(old: *const c_char, new: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_link() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(old, new);
        };
        let r = real(old, new);
        if r == 0 {
            note_pair(Op::Link, libc::AT_FDCWD, old, libc::AT_FDCWD, new);
        }
        r
    }
}

/// Hook: `linkat(2)`. `AT_EMPTY_PATH` with an empty old path links the file
/// open on `olddirfd` (typically an O_TMPFILE being given a name): the
/// visible effect is a new file at `new`, recorded as W.
///
/// # Safety
/// Same contract as libc `linkat`.
#[no_mangle]
pub unsafe extern "C" fn linkat(
    olddirfd: c_int,
    old: *const c_char,
    newdirfd: c_int,
    new: *const c_char,
    flags: c_int,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_linkat() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(olddirfd, old, newdirfd, new, flags);
        };
        let r = real(olddirfd, old, newdirfd, new, flags);
        if r == 0 {
            if flags & libc::AT_EMPTY_PATH != 0 && cbytes(old).is_empty() {
                note_open(Some(Op::Write), newdirfd, new, -1);
            } else {
                note_pair(Op::Link, olddirfd, old, newdirfd, new);
            }
        }
        r
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

/// Hook: `unlink(2)` (D).
///
/// # Safety
/// Same contract as libc `unlink`.
#[no_mangle]
pub unsafe extern "C" fn unlink(path: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_unlink() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path);
        };
        let r = real(path);
        if r == 0 {
            note_delete(libc::AT_FDCWD, path);
        }
        r
    }
}

/// Hook: `unlinkat(2)` (D unless AT_REMOVEDIR, which removes a directory).
///
/// # Safety
/// Same contract as libc `unlinkat`.
#[no_mangle]
pub unsafe extern "C" fn unlinkat(dirfd: c_int, path: *const c_char, flags: c_int) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_unlinkat() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(dirfd, path, flags);
        };
        let r = real(dirfd, path, flags);
        if r == 0 && flags & libc::AT_REMOVEDIR == 0 {
            note_delete(dirfd, path);
        }
        r
    }
}

/// Hook: `remove(3)`: glibc implements it with internal unlink/rmdir calls,
/// so it needs its own hook. Whether the path is a directory has to be
/// checked before the call (afterwards it is gone).
///
/// # Safety
/// Same contract as libc `remove`.
#[no_mangle]
pub unsafe extern "C" fn remove(path: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_remove() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path);
        };
        let is_dir = {
            let _errno = ErrnoGuard::save();
            let mut st: libc::stat = std::mem::zeroed();
            !path.is_null()
                && libc::lstat(path, &mut st) == 0
                && st.st_mode & libc::S_IFMT == libc::S_IFDIR
        };
        let r = real(path);
        if r == 0 && !is_dir {
            note_delete(libc::AT_FDCWD, path);
        }
        r
    }
}

/// Hook: `chdir(2)`: invalidates the cached cwd used to resolve relative
/// paths. (Even while dormant the cache must not go stale, but dormant mode
/// clears the cache at roar_begin instead, keeping this path one load.)
///
/// # Safety
/// Same contract as libc `chdir`.
#[no_mangle]
pub unsafe extern "C" fn chdir(path: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_chdir() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path);
        };
        let r = real(path);
        if r == 0 {
            with_state(|st| st.invalidate_cwd());
        }
        r
    }
}

/// Hook: `fchdir(2)`: invalidates the cached cwd.
///
/// # Safety
/// Same contract as libc `fchdir`.
#[no_mangle]
pub unsafe extern "C" fn fchdir(fd: c_int) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_fchdir() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(fd);
        };
        let r = real(fd);
        if r == 0 {
            with_state(|st| st.invalidate_cwd());
        }
        r
    }
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
