//! The seccomp-BPF filter that makes ptrace affordable.
//!
//! Without it, a ptrace tracer stops the tracee twice on *every* syscall
//! (read, write, mmap of libraries, futex...), which is where the ~86 us per
//! read/write of a naive ptrace tracer comes from. The filter returns
//! `SECCOMP_RET_TRACE` only for the calls that name or create files (see
//! [`TRACED`]; also `io_uring_setup`, only so the job can say that a ring's
//! I/O was not seen), for `open`/`openat` unless they open a directory or an
//! `O_PATH` handle (which name no content: `opendir`, `os.scandir`, `fchdir`
//! targets...), and for `mmap` calls that map a file shared and writable;
//! every other syscall runs at full speed with no tracer involvement.
//!
//! The filter is installed in the command child before the tracer seizes it
//! and before its `execve`, and is inherited by every descendant, which is
//! exactly the set of processes the tracer follows.

use std::io;

/// Syscalls that always stop the tracee (at entry, as a seccomp stop).
#[cfg(target_arch = "x86_64")]
pub const TRACED: &[i64] = &[
    libc::SYS_truncate,
    libc::SYS_rename,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_link,
    libc::SYS_linkat,
    libc::SYS_unlink,
    libc::SYS_unlinkat,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_io_uring_setup,
];

/// Syscalls that always stop the tracee (at entry, as a seccomp stop).
#[cfg(target_arch = "aarch64")]
pub const TRACED: &[i64] = &[
    libc::SYS_truncate,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_unlinkat,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_splice,
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_io_uring_setup,
];

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;

// Offsets in `struct seccomp_data`: nr (i32), arch (u32), ip (u64), args[6].
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn off_arg_lo(i: u32) -> u32 {
    // Low 32 bits of args[i] (little-endian).
    16 + 8 * i
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_TRACE: u32 = libc::SECCOMP_RET_TRACE;

fn stmt(code: u16, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Opens handed to the tracer whatever their flags (`openat2` keeps its
/// flags in memory, out of the filter's reach), with the open action.
#[cfg(target_arch = "x86_64")]
const OPENS: &[i64] = &[libc::SYS_openat2, libc::SYS_creat];
/// Opens handed to the tracer whatever their flags.
#[cfg(target_arch = "aarch64")]
const OPENS: &[i64] = &[libc::SYS_openat2];

/// Opens whose flags are checked by the filter: (syscall, index of the
/// flags argument). Opening a directory or an `O_PATH` handle names no
/// content (see `roar_events::classify_open_flags`), so those never stop.
#[cfg(target_arch = "x86_64")]
const FLAG_CHECKED: &[(i64, u32)] = &[(libc::SYS_openat, 2), (libc::SYS_open, 1)];
/// Opens whose flags are checked by the filter.
#[cfg(target_arch = "aarch64")]
const FLAG_CHECKED: &[(i64, u32)] = &[(libc::SYS_openat, 2)];

/// Flags of an open that never needs a stop (`O_TMPFILE` contains
/// `O_DIRECTORY`; its file is named later by `linkat`, which is traced).
const NO_CONTENT: u32 = (libc::O_DIRECTORY | libc::O_PATH) as u32;

/// How the filter hands opens to the tracer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpenAction {
    /// `SECCOMP_RET_TRACE`: a ptrace stop, like every other traced call.
    Trace,
    /// `SECCOMP_RET_USER_NOTIF`: a notification on the listener fd, answered
    /// with "continue". Cheaper than a ptrace stop, and with
    /// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` the tracer and the thread wake
    /// each other on the same CPU instead of waking an idle one.
    Notify,
}

/// The filter program. Layout (`OPEN` is `TRACE` or `NOTIFY`, see [`OpenAction`]):
///
/// ```text
///   0  ld arch;  jeq NATIVE ? 2 : ALLOW
///   2  ld nr
///   3  jeq TRACED[0] ? TRACE : next ... (one per traced call)
///      jeq OPENS[0] ? OPEN : next ...
///      jeq mmap ? MMAP : next
///      jeq FLAG_CHECKED[i] ? OPEN_i : next ...
///      ret ALLOW
///      ret TRACE
///      ret OPEN
///   MMAP:   ld prot; jset PROT_WRITE ? next : ALLOW
///           ld flags; jset MAP_SHARED ? next : ALLOW
///           jset MAP_ANONYMOUS ? ALLOW : TRACE
///   OPEN_i: ld flags; jset O_DIRECTORY|O_PATH ? ALLOW : OPEN
/// ```
///
/// Compat-ABI calls (another audit arch) are allowed untraced: their numbers
/// mean different syscalls, and the tracer documents the gap.
pub fn program(open: OpenAction) -> Vec<libc::sock_filter> {
    let ret_open = match open {
        OpenAction::Trace => RET_TRACE,
        OpenAction::Notify => libc::SECCOMP_RET_USER_NOTIF,
    };
    let n = TRACED.len();
    let o = OPENS.len();
    let k = FLAG_CHECKED.len();
    // Index of the instructions after the per-syscall checks.
    let idx_opens = 3 + n;
    let idx_mmap_check = idx_opens + o; // jeq mmap
    let idx_open_checks = idx_mmap_check + 1;
    let idx_allow = idx_open_checks + k;
    let idx_trace = idx_allow + 1;
    let idx_ret_open = idx_trace + 1;
    let idx_mmap = idx_ret_open + 1;
    const MMAP_LEN: usize = 7;
    const OPEN_LEN: usize = 4;
    let idx_open = |i: usize| idx_mmap + MMAP_LEN + OPEN_LEN * i;
    let mut p = Vec::with_capacity(idx_open(k));
    p.push(stmt(BPF_LD_W_ABS, OFF_ARCH));
    p.push(jump(
        BPF_JEQ_K,
        crate::sys::NATIVE_AUDIT_ARCH,
        0,
        (idx_allow - 2) as u8,
    ));
    p.push(stmt(BPF_LD_W_ABS, OFF_NR));
    for (i, &nr) in TRACED.iter().enumerate() {
        let here = 3 + i;
        p.push(jump(BPF_JEQ_K, nr as u32, (idx_trace - here - 1) as u8, 0));
    }
    for (i, &nr) in OPENS.iter().enumerate() {
        let here = idx_opens + i;
        p.push(jump(
            BPF_JEQ_K,
            nr as u32,
            (idx_ret_open - here - 1) as u8,
            0,
        ));
    }
    p.push(jump(
        BPF_JEQ_K,
        libc::SYS_mmap as u32,
        (idx_mmap - idx_mmap_check - 1) as u8,
        0,
    ));
    for (i, &(nr, _)) in FLAG_CHECKED.iter().enumerate() {
        let here = idx_open_checks + i;
        p.push(jump(
            BPF_JEQ_K,
            nr as u32,
            (idx_open(i) - here - 1) as u8,
            0,
        ));
    }
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    p.push(stmt(BPF_RET_K, RET_TRACE));
    p.push(stmt(BPF_RET_K, ret_open));
    // MMAP block: every "no" jumps back to idx_allow, which is behind us; BPF
    // only jumps forward, so the block carries its own ALLOW/TRACE returns.
    p.push(stmt(BPF_LD_W_ABS, off_arg_lo(2))); // prot
    p.push(jump(BPF_JSET_K, libc::PROT_WRITE as u32, 0, 4));
    p.push(stmt(BPF_LD_W_ABS, off_arg_lo(3))); // flags
    p.push(jump(BPF_JSET_K, libc::MAP_SHARED as u32, 0, 2));
    p.push(jump(BPF_JSET_K, libc::MAP_ANONYMOUS as u32, 1, 0));
    p.push(stmt(BPF_RET_K, RET_TRACE));
    p.push(stmt(BPF_RET_K, RET_ALLOW));
    debug_assert_eq!(p.len(), idx_mmap + MMAP_LEN);
    for &(_, arg) in FLAG_CHECKED {
        p.push(stmt(BPF_LD_W_ABS, off_arg_lo(arg)));
        p.push(jump(BPF_JSET_K, NO_CONTENT, 1, 0));
        p.push(stmt(BPF_RET_K, ret_open));
        p.push(stmt(BPF_RET_K, RET_ALLOW));
    }
    debug_assert_eq!(p.len(), idx_open(k));
    debug_assert!(p.len() < 255);
    p
}

/// Install [`program`] in the calling thread (and so in its future
/// descendants). Never sets `PR_SET_NO_NEW_PRIVS`: the kernel accepts a
/// filter without it only from a caller with CAP_SYS_ADMIN (or one already
/// under no_new_privs), and setting it ourselves would make every set-id
/// program the command runs later lose its privileges, i.e. change the
/// program. An unprivileged caller gets EACCES, and the tracer then stops on
/// every syscall instead (see `filter_refusal` in main.rs).
///
/// Must be called in the forked child before exec; it allocates nothing after
/// the filter vector is built.
pub fn install(prog: &[libc::sock_filter]) -> io::Result<()> {
    install_with(prog, 0).map(|_| ())
}

/// Like [`install`], for a program built with [`OpenAction::Notify`]: also
/// creates the notification listener and returns its fd (close-on-exec).
/// Fails with EBUSY when a filter already installed above us has a listener
/// (the kernel allows one per filter tree), e.g. inside another roar run.
///
/// Asks for `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19): once the
/// tracer has picked a notification up, only a fatal signal interrupts the
/// thread's wait, so an open is not failed with EINTR while we record it
/// (the tracer also restarts opens interrupted before that, see
/// `Tracer::on_wait`).
pub fn install_listener(prog: &[libc::sock_filter]) -> io::Result<i32> {
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
    match install_with(prog, flags | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV) {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => install_with(prog, flags),
        r => r,
    }
}

fn install_with(prog: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<i32> {
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `fprog` points at a live, correctly sized filter array; the
    // kernel copies it during the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &fprog as *const libc::sock_fprog,
        )
    };
    if r >= 0 {
        Ok(r as i32)
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jumps_stay_inside_the_program() {
        for open in [OpenAction::Trace, OpenAction::Notify] {
            check_jumps(&program(open));
        }
    }

    fn check_jumps(p: &[libc::sock_filter]) {
        for (i, ins) in p.iter().enumerate() {
            if ins.code & (libc::BPF_JMP as u16) == libc::BPF_JMP as u16
                && ins.code & 0x07 == libc::BPF_JMP as u16
            {
                assert!(i + 1 + (ins.jt as usize) < p.len());
                assert!(i + 1 + (ins.jf as usize) < p.len());
            }
        }
        // The last instruction is a return.
        assert_eq!(p.last().unwrap().code, BPF_RET_K);
    }

    /// Run the program on (arch, nr, args) with a minimal interpreter of the
    /// four instructions it uses.
    fn verdict(open: OpenAction, arch: u32, nr: i64, args: [u64; 6]) -> u32 {
        let p = program(open);
        let word = |off: u32| -> u32 {
            match off {
                OFF_NR => nr as u32,
                OFF_ARCH => arch,
                o => args[((o - 16) / 8) as usize] as u32,
            }
        };
        let (mut pc, mut acc) = (0usize, 0u32);
        loop {
            let ins = p[pc];
            match ins.code {
                BPF_LD_W_ABS => acc = word(ins.k),
                BPF_JEQ_K | BPF_JSET_K => {
                    let yes = if ins.code == BPF_JEQ_K {
                        acc == ins.k
                    } else {
                        acc & ins.k != 0
                    };
                    pc += if yes { ins.jt } else { ins.jf } as usize;
                }
                BPF_RET_K => return ins.k,
                c => panic!("unexpected BPF opcode {c:#x}"),
            }
            pc += 1;
        }
    }

    #[test]
    fn filter_stops_exactly_the_calls_that_name_content() {
        for (open_action, ret_open) in [
            (OpenAction::Trace, RET_TRACE),
            (OpenAction::Notify, libc::SECCOMP_RET_USER_NOTIF),
        ] {
            let native = crate::sys::NATIVE_AUDIT_ARCH;
            let v = |nr: i64, args: [u64; 6]| verdict(open_action, native, nr, args);
            let at = libc::AT_FDCWD as u64;
            let openat = |flags: i32| v(libc::SYS_openat, [at, 0, flags as u64, 0, 0, 0]);
            assert_eq!(openat(libc::O_RDONLY), ret_open);
            assert_eq!(
                openat(libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC),
                ret_open
            );
            assert_eq!(
                openat(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC),
                RET_ALLOW
            );
            assert_eq!(openat(libc::O_PATH), RET_ALLOW);
            assert_eq!(openat(libc::O_TMPFILE | libc::O_RDWR), RET_ALLOW);
            #[cfg(target_arch = "x86_64")]
            {
                let open = |flags: i32| v(libc::SYS_open, [0, flags as u64, 0, 0, 0, 0]);
                assert_eq!(open(libc::O_RDONLY), ret_open);
                assert_eq!(open(libc::O_DIRECTORY), RET_ALLOW);
            }
            for &nr in OPENS {
                assert_eq!(v(nr, [0; 6]), ret_open, "syscall {nr}");
            }
            for &nr in TRACED {
                assert_eq!(v(nr, [0; 6]), RET_TRACE, "syscall {nr}");
            }
            let mmap = |prot: i32, flags: i32| {
                v(libc::SYS_mmap, [0, 4096, prot as u64, flags as u64, 3, 0])
            };
            assert_eq!(
                mmap(libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED),
                RET_TRACE
            );
            assert_eq!(mmap(libc::PROT_READ, libc::MAP_SHARED), RET_ALLOW);
            assert_eq!(mmap(libc::PROT_WRITE, libc::MAP_PRIVATE), RET_ALLOW);
            assert_eq!(
                mmap(libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS),
                RET_ALLOW
            );
            assert_eq!(v(libc::SYS_read, [0; 6]), RET_ALLOW);
            assert_eq!(v(libc::SYS_close, [0; 6]), RET_ALLOW);
            // Another ABI: never stopped (its numbers mean other calls).
            assert_eq!(
                verdict(open_action, 0x4000_0003, libc::SYS_openat, [0; 6]),
                RET_ALLOW
            );
        }
    }
}
