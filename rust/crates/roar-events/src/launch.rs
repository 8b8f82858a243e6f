//! How `roar run` hands the command to the native side (the preload library's
//! constructor, or roar-ptrace's front), shared so that both follow it alike.
//!
//! roar sets `ROAR_DIE_WITH=<its pid>` in the command's environment. The first
//! native code in the new process takes it out of the environment before the
//! program's `main` ([`take_die_with`]), puts back the signal dispositions a
//! shell would have given ([`default_glibc_internal_signals`]), and asks the
//! kernel for a signal when roar dies ([`die_with`]): SIGKILL of roar cannot
//! be relayed, so without this the command would run on, orphaned.
//!
//! Nothing here allocates or panics; every function is meant for process
//! start-up, before other threads exist.

use std::ffi::CStr;

/// The variable roar sets; never left in the program's environment.
pub const DIE_WITH_VAR: &CStr = c"ROAR_DIE_WITH";

/// Read and remove `ROAR_DIE_WITH`: roar's pid, if roar started us.
///
/// # Safety
/// Reads and changes `environ`: call before other threads exist.
pub unsafe fn take_die_with() -> Option<libc::pid_t> {
    // SAFETY: the caller guarantees no other thread touches `environ`; the key is a
    // NUL-terminated literal and getenv returns NULL or a NUL-terminated string.
    unsafe {
        let v = libc::getenv(DIE_WITH_VAR.as_ptr());
        if v.is_null() {
            return None;
        }
        let pid = CStr::from_ptr(v)
            .to_str()
            .ok()
            .and_then(|s| s.parse::<libc::pid_t>().ok());
        libc::unsetenv(DIE_WITH_VAR.as_ptr());
        pid.filter(|&p| p > 0)
    }
}

/// Ask for `sig` when our parent dies (`PR_SET_PDEATHSIG`, kept across exec);
/// if `parent` is already gone (we were reparented first), raise it now.
///
/// # Safety
/// Changes process-wide state; `sig` must be a valid signal number.
pub unsafe fn die_with(parent: libc::pid_t, sig: libc::c_int) {
    // SAFETY: plain system calls; the caller vouches for `sig`.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, sig as libc::c_ulong, 0, 0, 0);
        if libc::getppid() != parent {
            libc::raise(sig);
        }
    }
}

/// glibc's `posix_spawn` (how roar starts the command) leaves glibc's two
/// internal signals (32, 33) *ignored* in the new process, and an ignored
/// signal stays ignored across exec; a program started by a shell has them
/// at their default. Put them back when they are ignored. glibc's own
/// `sigaction` refuses these numbers, hence the raw system call; the action
/// written is all zeros (SIG_DFL, no flags, empty mask) in every layout of
/// the kernel's `struct sigaction`, whose first field is the handler.
///
/// # Safety
/// Changes process-wide dispositions: call before other threads exist.
pub unsafe fn default_glibc_internal_signals() {
    for sig in [32i64, 33] {
        let mut old = [0u64; 4];
        let none = std::ptr::null::<u64>();
        // SAFETY: `old` and `dfl` are 32-byte buffers, large enough for the kernel's
        // sigaction on every architecture; a null new action only reads the old one.
        unsafe {
            if libc::syscall(libc::SYS_rt_sigaction, sig, none, old.as_mut_ptr(), 8usize) == 0
                && old[0] == libc::SIG_IGN as u64
            {
                let dfl = [0u64; 4];
                libc::syscall(libc::SYS_rt_sigaction, sig, dfl.as_ptr(), none, 8usize);
            }
        }
    }
}
