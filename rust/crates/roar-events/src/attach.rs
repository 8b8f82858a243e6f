//! Handing a process that is about to exec a static executable to the
//! ptrace tracer: LD_PRELOAD cannot enter a program without a loader, so the
//! process (the preload library in a traced program, or roar-ptrace's
//! `--preload-only` launcher) has `roar-ptrace --attach` trace it from
//! outside first.
//!
//! Owns the start-up dance only (called right before the real exec); it
//! records nothing and must not change the program: same pid, same parent,
//! no child it could see or reap, same signal mask and dispositions.
//!
//! ```text
//!   process P (about to exec a static program)
//!     └─ intermediate (clone, exit signal 0: no SIGCHLD, invisible to wait())
//!          └─ tracer (reparented when the intermediate exits; setsid)
//! ```
//!
//! The intermediate writes the tracer's pid and exits; P reaps it, allows
//! the tracer to ptrace it (`PR_SET_PTRACER`, for Yama's ptrace_scope=1),
//! says "go"; the tracer execs `roar-ptrace --attach P`, which
//! `PTRACE_SEIZE`s P and writes one byte back. Only then does P exec. If
//! anything fails (ptrace refused, no answer within [`READY_TIMEOUT_MS`]),
//! P execs untraced and the caller notes it. Everything the children run is
//! a raw syscall on memory prepared before the clone (P may be
//! multithreaded: no allocation, no lock after it).

use std::ffi::{CStr, CString};

use libc::{c_char, c_int, c_long};

/// How long P waits for the tracer to seize it. Normally a few
/// milliseconds; the bound only keeps a wedged start-up from hanging the
/// program (it then runs untraced, with the note).
const READY_TIMEOUT_MS: i64 = 10_000;

fn sys(n: c_long, a: [usize; 4]) -> c_long {
    // SAFETY: raw syscalls on integers and on pointers the callers own.
    unsafe { libc::syscall(n, a[0], a[1], a[2], a[3]) }
}

/// Read exactly `buf.len()` bytes from `fd` before `deadline` (CLOCK_MONOTONIC
/// ms). False on EOF, error or timeout.
fn read_until(fd: c_int, buf: &mut [u8], deadline: i64) -> bool {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline - now_ms();
        if left <= 0 {
            return false;
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd on the stack.
        let r = unsafe { libc::poll(&mut p, 1, left.min(i32::MAX as i64) as c_int) };
        if r < 0 && errno() != libc::EINTR {
            return false;
        }
        if r <= 0 {
            continue;
        }
        let n = sys(
            libc::SYS_read,
            [
                fd as usize,
                buf[got..].as_mut_ptr() as usize,
                buf.len() - got,
                0,
            ],
        );
        if n <= 0 {
            return false;
        }
        got += n as usize;
    }
    true
}

fn errno() -> c_int {
    // SAFETY: __errno_location always returns this thread's errno slot.
    unsafe { *libc::__errno_location() }
}

fn now_ms() -> i64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec * 1000 + ts.tv_nsec / 1_000_000
}

/// Have `bin` (`roar-ptrace`) run as `--attach` and trace this process
/// (recording into `dir`) from its next exec on. True when it has seized us;
/// false when it could not (the exec then runs untraced, as without this).
/// Call right before the real exec of a static program, from the thread
/// that execs.
pub fn attach_tracer(bin: &CStr, dir: &[u8]) -> bool {
    // SAFETY: plain getters.
    let (pid, tid) = unsafe { (libc::getpid(), libc::gettid()) };
    // An exec from another thread changes the thread's id (it becomes the
    // leader): the tracer follows one thread id; keep the simple case.
    if pid != tid {
        return false;
    }
    // A subreaper would adopt the tracer: a child the program did not make.
    let mut reaper: c_int = 0;
    // SAFETY: PR_GET_CHILD_SUBREAPER writes one int.
    if unsafe { libc::prctl(libc::PR_GET_CHILD_SUBREAPER, &mut reaper as *mut c_int) } != 0
        || reaper != 0
    {
        return false;
    }
    let strs: Vec<CString> = [
        bin.to_bytes(),
        b"--attach",
        pid.to_string().as_bytes(),
        b"--ready-fd",
        b"3",
        b"--trace-dir",
        dir,
    ]
    .iter()
    .filter_map(|s| CString::new(*s).ok())
    .collect();
    if strs.len() != 7 {
        return false;
    }
    let mut argv: Vec<*const c_char> = strs.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    // The tracer's environment: only the test fault switch, if any.
    // SAFETY: getenv on a literal key; the value is copied at once.
    let fault = unsafe { libc::getenv(c"ROAR_PTRACE_FAULT".as_ptr()) };
    let fault = (!fault.is_null()).then(|| {
        // SAFETY: NUL-terminated.
        let v = unsafe { CStr::from_ptr(fault) }.to_bytes();
        CString::new([b"ROAR_PTRACE_FAULT=".as_slice(), v].concat()).ok()
    });
    let fault = fault.flatten();
    let mut envp: Vec<*const c_char> = fault.iter().map(|s| s.as_ptr()).collect();
    envp.push(std::ptr::null());

    let mut rp = [-1 as c_int; 2]; // tracer (and intermediate) -> us
    let mut gp = [-1 as c_int; 2]; // us -> tracer: "go"
                                   // SAFETY: valid out-arrays.
    unsafe {
        if libc::pipe2(rp.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            return false;
        }
        if libc::pipe2(gp.as_mut_ptr(), libc::O_CLOEXEC) != 0 {
            libc::close(rp[0]);
            libc::close(rp[1]);
            return false;
        }
    }
    // No handler of the program may run in our children; restored below.
    // SAFETY: sigset_t is plain data; rt_sigprocmask takes its size.
    let mut full: libc::sigset_t = unsafe { std::mem::zeroed() };
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    let empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: valid sigset pointer.
    unsafe { libc::sigfillset(&mut full) };
    const SIGSET: usize = 8; // the kernel's sigset size
    sys(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as usize,
            &full as *const _ as usize,
            &mut old as *mut _ as usize,
            SIGSET,
        ],
    );
    // Exit signal 0: the intermediate's death sends no SIGCHLD and plain
    // wait()/waitpid(-1) never see it (only __WALL does).
    let inter = sys(libc::SYS_clone, [0, 0, 0, 0]);
    if inter == 0 {
        // The intermediate: raw syscalls only.
        let g = sys(libc::SYS_clone, [libc::SIGCHLD as usize, 0, 0, 0]);
        if g == 0 {
            grandchild(&rp, &gp, bin, &argv, &envp, &empty, SIGSET);
        }
        if g > 0 {
            let b = (g as i32).to_le_bytes();
            sys(libc::SYS_write, [rp[1] as usize, b.as_ptr() as usize, 4, 0]);
        }
        sys(libc::SYS_exit_group, [0, 0, 0, 0]);
    }
    let deadline = now_ms() + READY_TIMEOUT_MS;
    let mut ok = false;
    // SAFETY: closing our copies of the children's ends.
    unsafe {
        libc::close(rp[1]);
        libc::close(gp[0]);
    }
    if inter > 0 {
        loop {
            let mut status: c_int = 0;
            let r = sys(
                libc::SYS_wait4,
                [
                    inter as usize,
                    &mut status as *mut c_int as usize,
                    libc::__WALL as usize,
                    0,
                ],
            );
            if r >= 0 || errno() != libc::EINTR {
                break;
            }
        }
        let mut b = [0u8; 4];
        if read_until(rp[0], &mut b, deadline) {
            let tracer = i32::from_le_bytes(b);
            // Yama ptrace_scope=1: only ancestors may attach, unless we say
            // so (EINVAL without Yama: nothing to allow).
            // SAFETY: integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PTRACER, tracer as libc::c_ulong, 0, 0, 0) };
            sys(
                libc::SYS_write,
                [gp[1] as usize, b"g".as_ptr() as usize, 1, 0],
            );
            let mut k = [0u8; 1];
            ok = read_until(rp[0], &mut k, deadline);
            if !ok {
                // Late or failed: make sure it is gone (a tracer killed after
                // seizing us detaches, and we run on untraced).
                // SAFETY: signalling the tracer we started.
                unsafe { libc::kill(tracer, libc::SIGKILL) };
            }
            // SAFETY: integer arguments.
            unsafe { libc::prctl(libc::PR_SET_PTRACER, 0, 0, 0, 0) };
        }
    }
    // SAFETY: closing our ends; restoring the mask saved above.
    unsafe {
        libc::close(rp[0]);
        libc::close(gp[1]);
    }
    sys(
        libc::SYS_rt_sigprocmask,
        [
            libc::SIG_SETMASK as usize,
            &old as *const _ as usize,
            0,
            SIGSET,
        ],
    );
    ok
}

/// The tracer-to-be, before its exec: wait for "go", leave the program's
/// session, terminal and descriptors (its stdio becomes /dev/null, its
/// ready pipe fd 3), exec roar-ptrace. Raw syscalls only; never returns.
fn grandchild(
    rp: &[c_int; 2],
    gp: &[c_int; 2],
    bin: &CStr,
    argv: &[*const c_char],
    envp: &[*const c_char],
    empty: &libc::sigset_t,
    sigset: usize,
) -> ! {
    let mut go = 0u8;
    let n = sys(
        libc::SYS_read,
        [gp[0] as usize, &mut go as *mut u8 as usize, 1, 0],
    );
    if n == 1 {
        sys(libc::SYS_setsid, [0; 4]);
        let keep = sys(
            libc::SYS_fcntl,
            [rp[1] as usize, libc::F_DUPFD_CLOEXEC as usize, 10, 0],
        );
        let null = sys(
            libc::SYS_openat,
            [
                libc::AT_FDCWD as usize,
                c"/dev/null".as_ptr() as usize,
                libc::O_RDWR as usize,
                0,
            ],
        );
        if keep >= 0 && null >= 0 {
            for fd in 0..3usize {
                sys(libc::SYS_dup3, [null as usize, fd, 0, 0]); // EINVAL if null is fd: fine
            }
            sys(libc::SYS_dup3, [keep as usize, 3, 0, 0]); // keep >= 10, clears CLOEXEC
            sys(libc::SYS_close_range, [4, u32::MAX as usize, 0, 0]);
            sys(
                libc::SYS_rt_sigprocmask,
                [
                    libc::SIG_SETMASK as usize,
                    empty as *const _ as usize,
                    0,
                    sigset,
                ],
            );
            sys(
                libc::SYS_execve,
                [
                    bin.as_ptr() as usize,
                    argv.as_ptr() as usize,
                    envp.as_ptr() as usize,
                    0,
                ],
            );
        }
    }
    loop {
        sys(libc::SYS_exit_group, [127, 0, 0, 0]);
    }
}

/// Little-endian field of `n` bytes at `off` in `b` (None past the end).
fn le(b: &[u8], off: usize, n: usize) -> Option<u64> {
    let s = b.get(off..off.checked_add(n)?)?;
    Some(s.iter().rev().fold(0u64, |acc, &x| (acc << 8) | x as u64))
}

/// Whether an ELF image (its first bytes in `head`) is an executable
/// without PT_INTERP: the kernel starts it directly, ld.so never runs, so
/// LD_PRELOAD cannot enter it. `None` when it cannot tell (not ELF, program
/// headers beyond `head`): no note rather than a wrong one.
pub fn elf_is_static(head: &[u8]) -> Option<bool> {
    if head.get(..4)? != b"\x7fELF" || head.get(5) != Some(&1) {
        return None; // not ELF, or big-endian (not a Linux x86_64/aarch64 host)
    }
    let (phoff, phentsize, phnum) = match head.get(4)? {
        2 => (le(head, 0x20, 8)?, le(head, 0x36, 2)?, le(head, 0x38, 2)?),
        1 => (le(head, 0x1c, 4)?, le(head, 0x2a, 2)?, le(head, 0x2c, 2)?),
        _ => return None,
    };
    for i in 0..phnum {
        let off = usize::try_from(phoff.checked_add(i.checked_mul(phentsize)?)?).ok()?;
        if le(head, off, 4)? == 3 {
            return Some(false); // PT_INTERP
        }
    }
    Some(true)
}
