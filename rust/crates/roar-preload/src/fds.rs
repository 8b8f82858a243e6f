//! Hooks on the calls that take a descriptor number away: close, dup2, dup3,
//! close_range, closefrom (and glibc's exported `__close`, `__dup2`).
//!
//! They exist only to protect the trace file descriptor the tracer keeps
//! open at a high number (`TraceFd` in state.rs): rather than fstat that
//! number before every write-through, the tracer re-checks it only after the
//! program closed or replaced it. The number is never below `FD_FLOOR`
//! (1000 with the usual fd limit), so each hook costs one relaxed load and a
//! compare before the tail call, dormant or not. Only a call reaching that
//! range (a program closing "all" fds, or dup2 onto a high number) takes the
//! slow path: the real call runs under the state lock (so no flush or
//! reopen can interleave with it) and marks our number suspect if it covers
//! it. No record is ever produced here, and read/write stay unhooked.
//!
//! Calls that cannot take a number that is in use (dup, fcntl F_DUPFD, open)
//! need no hook. glibc's own internal closes (fclose, closedir, posix_spawn's
//! child) only close descriptors they opened, which cannot be ours while we
//! hold it.

use libc::{c_int, c_uint};

use crate::hooks::hooks;
use crate::real;
use crate::state::{touching_trace_fd, FD_FLOOR};

/// The lowest number our descriptor can have (`i32::MAX` if none ever).
#[inline(always)]
fn floor() -> c_int {
    FD_FLOOR.load(std::sync::atomic::Ordering::Relaxed)
}

hooks! { descriptor
    /// Hook: `close(2)`.
    fn close(fd: c_int) -> c_int = real_close;
    takes fd;

    /// Hook: `__close` (glibc's exported alias of `close`).
    fn __close(fd: c_int) -> c_int = real_close_alias;
    takes fd;

    /// Hook: `dup2(2)`.
    fn dup2(oldfd: c_int, newfd: c_int) -> c_int = real_dup2;
    takes newfd;

    /// Hook: `__dup2` (glibc's exported alias of `dup2`).
    fn __dup2(oldfd: c_int, newfd: c_int) -> c_int = real_dup2_alias;
    takes newfd;

    /// Hook: `dup3(2)`.
    fn dup3(oldfd: c_int, newfd: c_int, flags: c_int) -> c_int = real_dup3;
    takes newfd;
}

/// Hook: `close_range(2)`. With `CLOSE_RANGE_CLOEXEC` nothing is closed (our
/// descriptor is close-on-exec already). If libc lacks the function (older
/// than 2.34, looked up by a program with dlsym), the system call is made
/// directly, which is what a newer libc does.
///
/// # Safety
/// Same contract as libc `close_range`.
#[no_mangle]
pub unsafe extern "C" fn close_range(first: c_uint, last: c_uint, flags: c_int) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let call = || match real::real_close_range() {
            Some(real) => real(first, last, flags),
            None => libc::syscall(libc::SYS_close_range, first, last, flags) as c_int,
        };
        if (last as u64) < floor() as u64 || flags & libc::CLOSE_RANGE_CLOEXEC as c_int != 0 {
            return call();
        }
        touching_trace_fd(|h| first <= h as c_uint && h as c_uint <= last, call)
    }
}

/// Hook: `closefrom(3)`. If libc lacks the function, the equivalent
/// `close_range(lowfd, ~0, 0)` system call is made directly.
///
/// # Safety
/// Same contract as libc `closefrom`.
#[no_mangle]
pub unsafe extern "C" fn closefrom(lowfd: c_int) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let call = || match real::real_closefrom() {
            Some(real) => real(lowfd),
            None => {
                libc::syscall(
                    libc::SYS_close_range,
                    lowfd.max(0) as c_uint,
                    c_uint::MAX,
                    0,
                );
            }
        };
        if floor() == i32::MAX {
            return call();
        }
        // Closes everything from lowfd up: reaches our range.
        touching_trace_fd(|h| h >= lowfd, call)
    }
}
