//! Hook on libc's generic `syscall(2)` wrapper.
//!
//! `syscall(SYS_openat2, ...)`, `syscall(SYS_renameat2, ...)` and friends are
//! how programs reach calls that glibc has no wrapper for (or that they want
//! without one). `syscall` is an ordinary interposable libc symbol, so not
//! hooking it would be a blind spot of our own making. Responsible for:
//!
//! * recording the file calls that go through it exactly as the named hooks
//!   do (open, openat, openat2, creat, truncate, rename*, link*, unlink*);
//! * keeping the cached cwd right across `syscall(SYS_chdir/SYS_fchdir)`, so
//!   that later relative paths are never resolved against a stale directory;
//! * `syscall(SYS_execve)`: the same environment propagation as `execve`;
//! * saying what it cannot follow, with an `N` record: `io_uring_setup` (file
//!   operations submitted through the ring never pass through libc),
//!   `openat2` with RESOLVE_IN_ROOT (the path is relative to a root we do not
//!   track), `execveat`, `open_by_handle_at`.
//!
//! It must not change the call: the real `syscall` runs with the caller's six
//! argument words and its result and errno are returned untouched. Every
//! other number is a pass-through. Issued with an inline `syscall`
//! instruction (Go, some static runtimes) these calls never reach libc and
//! no LD_PRELOAD library can see them; ptrace does.
//!
//! The variadic entry point is in `csrc/exec_shim.c` (stable Rust cannot
//! define C-variadic functions): it reads six argument words, as glibc's own
//! `syscall` does, and calls [`roar_internal_syscall`]. Our own raw syscalls
//! (`libc::syscall` inside the tracer) reach this hook too and pass straight
//! through: they run with the per-thread reentrancy flag set.

use libc::{c_char, c_int, c_long, c_uint};
use roar_events::Op;

use crate::exec::roar_internal_execve;
use crate::hooks::{note_delete, note_exchange, note_open, note_pair};
use crate::real;
use crate::state::{tracing, with_state, ErrnoGuard};

/// Record an `N` note for syscall `name` (the subject) with `what`.
fn note(name: &[u8], what: &[u8]) {
    let _errno = ErrnoGuard::save();
    with_state(|st| st.on_note(name, false, what));
}

/// Body of the `syscall` hook (called by the C shim with the six argument
/// words the caller may have passed).
///
/// # Safety
/// Same contract as libc `syscall` for the number `n`.
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the syscall ABI: a number and six words.
pub unsafe extern "C" fn roar_internal_syscall(
    n: c_long,
    a1: c_long,
    a2: c_long,
    a3: c_long,
    a4: c_long,
    a5: c_long,
    a6: c_long,
) -> c_long {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_syscall() else {
            // SAFETY: setting errno.
            *libc::__errno_location() = libc::ENOSYS;
            return -1;
        };
        let Some(_g) = tracing() else {
            return real(n, a1, a2, a3, a4, a5, a6);
        };
        if n == libc::SYS_execve {
            drop(_g); // roar_internal_execve takes its own guard
            return roar_internal_execve(a1 as _, a2 as _, a3 as _) as c_long;
        }
        let r = real(n, a1, a2, a3, a4, a5, a6);
        if r < 0 {
            // Failed calls are never recorded; an io_uring_setup that failed
            // set up nothing.
            return r;
        }
        let p = |a: c_long| a as *const c_char;
        let fd = |a: c_long| a as c_int;
        match n {
            libc::SYS_openat => note_open(
                roar_events::classify_open_flags(a3 as c_int),
                fd(a1),
                p(a2),
                r as c_int,
            ),
            libc::SYS_openat2 => {
                let how = a3 as *const libc::open_how;
                if !how.is_null() && (a4 as usize) >= std::mem::size_of::<u64>() * 3 {
                    // SAFETY: the kernel just read this struct successfully.
                    let how = std::ptr::read_unaligned(how);
                    if how.resolve & libc::RESOLVE_IN_ROOT != 0 {
                        // The path is resolved with dirfd as "/": recording it
                        // as we resolve paths would name the wrong file.
                        note(b"openat2", b"syscall RESOLVE_IN_ROOT");
                    } else {
                        note_open(
                            roar_events::classify_open_flags(how.flags as c_int),
                            fd(a1),
                            p(a2),
                            r as c_int,
                        );
                    }
                }
            }
            libc::SYS_truncate => note_open(Some(Op::Write), libc::AT_FDCWD, p(a1), -1),
            libc::SYS_renameat => note_pair(Op::Move, fd(a1), p(a2), fd(a3), p(a4)),
            libc::SYS_renameat2 => {
                if a5 as c_uint & libc::RENAME_EXCHANGE != 0 {
                    note_exchange(fd(a1), p(a2), fd(a3), p(a4));
                } else {
                    note_pair(Op::Move, fd(a1), p(a2), fd(a3), p(a4));
                }
            }
            libc::SYS_linkat => {
                if a5 as c_int & libc::AT_EMPTY_PATH != 0 {
                    note(b"linkat", b"syscall AT_EMPTY_PATH");
                } else {
                    note_pair(Op::Link, fd(a1), p(a2), fd(a3), p(a4));
                }
            }
            libc::SYS_unlinkat => {
                if a3 as c_int & libc::AT_REMOVEDIR == 0 {
                    note_delete(fd(a1), p(a2));
                }
            }
            libc::SYS_chdir | libc::SYS_fchdir => {
                with_state(|st| st.invalidate_cwd());
            }
            libc::SYS_io_uring_setup => note(b"io_uring_setup", b"io_uring"),
            libc::SYS_execveat => note(b"execveat", b"syscall"),
            libc::SYS_open_by_handle_at => note(b"open_by_handle_at", b"syscall"),
            _ => legacy(n, a1, a2, a3, r),
        }
        r
    }
}

/// The path-based calls x86_64 still has (aarch64 only has the *at forms).
#[cfg(target_arch = "x86_64")]
unsafe fn legacy(n: c_long, a1: c_long, a2: c_long, a3: c_long, r: c_long) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let p = |a: c_long| a as *const c_char;
        let at = libc::AT_FDCWD;
        match n {
            libc::SYS_open => note_open(
                roar_events::classify_open_flags(a2 as c_int),
                at,
                p(a1),
                r as c_int,
            ),
            libc::SYS_creat => note_open(Some(Op::Write), at, p(a1), r as c_int),
            libc::SYS_rename => note_pair(Op::Move, at, p(a1), at, p(a2)),
            libc::SYS_link => note_pair(Op::Link, at, p(a1), at, p(a2)),
            libc::SYS_unlink => note_delete(at, p(a1)),
            _ => {}
        }
        let _ = a3;
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn legacy(_n: c_long, _a1: c_long, _a2: c_long, _a3: c_long, _r: c_long) {}
