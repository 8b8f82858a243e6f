//! Thin, checked wrappers around the kernel interfaces the tracer uses:
//! ptrace requests, `PTRACE_GET_SYSCALL_INFO`, reading tracee memory with
//! `process_vm_readv`, and the `/proc/<tid>/...` lookups (cwd, fd targets,
//! thread-group ids). Everything unsafe lives here so that the tracer logic in
//! `tracer.rs` is plain safe Rust over owned bytes.
//!
//! Syscall numbers come from the `libc` crate, so they are those of the
//! architecture we are built for; the seccomp filter and the tracer both check
//! the audit arch so a compat (32-bit) syscall is never misread as a native one.

use std::ffi::CString;
use std::io;

/// `AUDIT_ARCH_*` of the native syscall ABI (what seccomp and
/// `PTRACE_GET_SYSCALL_INFO` report for native syscalls).
#[cfg(target_arch = "x86_64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xC000_003E;
/// `AUDIT_ARCH_*` of the native syscall ABI.
#[cfg(target_arch = "aarch64")]
pub const NATIVE_AUDIT_ARCH: u32 = 0xC000_00B7;

/// Longest path the kernel accepts (PATH_MAX, including the NUL).
pub const PATH_MAX: usize = 4096;

const PTRACE_GET_SYSCALL_INFO: libc::c_uint = 0x420e;
/// `ptrace_syscall_info.op` for a syscall-entry stop.
pub const SYSCALL_INFO_ENTRY: u8 = 1;
/// `ptrace_syscall_info.op` for a syscall-exit stop.
pub const SYSCALL_INFO_EXIT: u8 = 2;
/// `ptrace_syscall_info.op` for a `PTRACE_EVENT_SECCOMP` stop.
pub const SYSCALL_INFO_SECCOMP: u8 = 3;

/// Mirror of the kernel's `struct ptrace_syscall_info` (linux/ptrace.h). The
/// union is kept as raw words: entry and seccomp stops put `nr, args[6]` in
/// it, exit stops put `rval: i64, is_error: u8`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct RawSyscallInfo {
    op: u8,
    pad: [u8; 3],
    arch: u32,
    instruction_pointer: u64,
    stack_pointer: u64,
    data: [u64; 8],
}

/// What `PTRACE_GET_SYSCALL_INFO` told us about a stopped thread.
#[derive(Clone, Copy, Debug)]
pub enum SyscallInfo {
    /// Entering a syscall (seccomp stop, or syscall-entry stop).
    Entry {
        /// Audit arch of the call (compat calls differ from native ones).
        arch: u32,
        /// Syscall number in that arch's table.
        nr: i64,
        /// The six raw argument registers.
        args: [u64; 6],
    },
    /// Leaving a syscall: its return value (negative errno when `is_error`).
    Exit {
        /// Raw return value.
        rval: i64,
        /// Whether the call failed.
        is_error: bool,
    },
    /// Not a syscall stop.
    None,
}

/// Read the syscall state of a ptrace-stopped thread.
pub fn syscall_info(tid: i32) -> io::Result<SyscallInfo> {
    let mut raw = RawSyscallInfo::default();
    // SAFETY: the kernel writes at most `size` bytes into `raw`, which is a
    // plain-old-data struct of exactly that size.
    let r = unsafe {
        libc::ptrace(
            PTRACE_GET_SYSCALL_INFO,
            tid,
            std::mem::size_of::<RawSyscallInfo>(),
            &mut raw as *mut RawSyscallInfo,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(match raw.op {
        SYSCALL_INFO_ENTRY | SYSCALL_INFO_SECCOMP => {
            let mut args = [0u64; 6];
            args.copy_from_slice(&raw.data[1..7]);
            SyscallInfo::Entry {
                arch: raw.arch,
                nr: raw.data[0] as i64,
                args,
            }
        }
        SYSCALL_INFO_EXIT => SyscallInfo::Exit {
            rval: raw.data[0] as i64,
            is_error: raw.data[1] & 0xff != 0,
        },
        _ => SyscallInfo::None,
    })
}

/// How to restart a stopped tracee.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resume {
    /// `PTRACE_CONT`: run until the next seccomp/event/signal stop.
    Cont,
    /// `PTRACE_SYSCALL`: also stop at the next syscall entry/exit.
    Syscall,
}

/// Restart `tid`, delivering `sig` (0 for none). Errors are ignored on
/// purpose: the thread may have been killed meanwhile (ESRCH), which the next
/// `waitpid` reports.
pub fn resume(tid: i32, how: Resume, sig: i32) {
    let req = match how {
        Resume::Cont => libc::PTRACE_CONT,
        Resume::Syscall => libc::PTRACE_SYSCALL,
    };
    // SAFETY: plain ptrace request on a pid; no memory is passed.
    unsafe {
        libc::ptrace(req, tid, 0usize, sig as usize);
    }
}

/// How long [`wait_any`] polls before it blocks. A traced syscall stops the
/// tracee and wakes us, and our restart wakes the tracee: on a VM each of those
/// cross-CPU wake-ups of an idle (halted) CPU costs tens of microseconds, far
/// more than the work done per stop. Tracees usually stop again within a few
/// microseconds of being restarted (an open is followed by its exit stop, a
/// loop over files by the next open), so polling briefly catches most stops
/// without a wake-up; a tracee that runs longer than this costs us one short
/// burst of CPU and then the normal blocking wait.
const SPIN_NS: u64 = 50_000;

/// `waitpid(-1, status, __WALL)`: the next stopped or ended tracee, `-1` with
/// errno set on error. Polls with `WNOHANG` for up to [`SPIN_NS`] first (see
/// there for why), yielding the CPU between polls so a tracee that shares
/// our CPU still runs.
pub fn wait_any(status: &mut i32) -> i32 {
    let start = now_ns();
    loop {
        // SAFETY: plain waitpid with a valid out-pointer.
        let r = unsafe { libc::waitpid(-1, status, libc::__WALL | libc::WNOHANG) };
        if r != 0 {
            return r; // a tracee, or an error (ECHILD, EINTR) for the caller
        }
        if now_ns().wrapping_sub(start) > SPIN_NS {
            break;
        }
        // SAFETY: no arguments.
        unsafe { libc::sched_yield() };
    }
    // SAFETY: plain waitpid with a valid out-pointer.
    unsafe { libc::waitpid(-1, status, libc::__WALL) }
}

/// `PTRACE_GETEVENTMSG`: the new tid after fork/clone events, the former tid
/// after an exec event.
pub fn event_msg(tid: i32) -> Option<u64> {
    let mut msg: libc::c_ulong = 0;
    // SAFETY: the kernel writes one unsigned long into `msg`.
    let r = unsafe {
        libc::ptrace(
            libc::PTRACE_GETEVENTMSG,
            tid,
            0usize,
            &mut msg as *mut libc::c_ulong,
        )
    };
    (r == 0).then_some(msg as u64)
}

/// `PTRACE_SEIZE` the command child with [`OPTIONS`] (inherited by every
/// auto-attached child). Unlike `PTRACE_TRACEME`, a seized tracee reports a
/// group-stop (SIGSTOP, ^Z) as `PTRACE_EVENT_STOP`, which the tracer can
/// leave in place with [`listen`]: the program stops as it would untraced.
/// Does not stop the tracee.
pub fn seize(tid: i32) -> io::Result<()> {
    with_options(libc::PTRACE_SEIZE, tid)
}

/// `PTRACE_INTERRUPT`: make a seized, running tracee stop (it reports
/// `PTRACE_EVENT_STOP` with SIGTRAP). Errors ignored, as in [`resume`].
pub fn interrupt(tid: i32) {
    // SAFETY: plain ptrace request; no memory is passed.
    unsafe {
        libc::ptrace(libc::PTRACE_INTERRUPT, tid, 0usize, 0usize);
    }
}

/// `PTRACE_LISTEN` a tracee in group-stop: it stays stopped, as an untraced
/// process would, until SIGCONT (or SIGKILL) wakes it; it then reports
/// `PTRACE_EVENT_STOP` with SIGTRAP. Errors ignored, as in [`resume`].
pub fn listen(tid: i32) {
    // SAFETY: plain ptrace request; no memory is passed.
    unsafe {
        libc::ptrace(libc::PTRACE_LISTEN, tid, 0usize, 0usize);
    }
}

/// Whether `sig` is one of the job-control stop signals.
pub fn is_stop_signal(sig: i32) -> bool {
    matches!(
        sig,
        libc::SIGSTOP | libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU
    )
}

/// The ptrace options of every tracee.
// PTRACE_O_EXITKILL: if the tracer dies (SIGKILL, OOM killer), every
// tracee is killed with it. The alternative is not "the program goes on
// untraced": the seccomp filter cannot be removed, and without its tracer
// (or listener) every open, exec, rename... of the program fails with
// ENOSYS, which is a broken program doing who knows what with those
// errors. Dying as a whole is the honest outcome; the front reports it.
const OPTIONS: i32 = libc::PTRACE_O_TRACESYSGOOD
    | libc::PTRACE_O_TRACEFORK
    | libc::PTRACE_O_TRACEVFORK
    | libc::PTRACE_O_TRACECLONE
    | libc::PTRACE_O_TRACEEXEC
    | libc::PTRACE_O_TRACESECCOMP
    | libc::PTRACE_O_EXITKILL;

/// The options of a process seized from outside (`--attach`): no filter, so
/// no `PTRACE_O_EXITKILL` (if the tracer dies the program goes on untraced,
/// which it can: nothing of ours is installed in it), and
/// `PTRACE_O_TRACEEXIT` so an image is flushed before its parent, which is
/// not us, can learn that it exited.
const ATTACH_OPTIONS: i32 =
    (OPTIONS & !libc::PTRACE_O_EXITKILL & !libc::PTRACE_O_TRACESECCOMP) | libc::PTRACE_O_TRACEEXIT;

/// `PTRACE_SEIZE` a process we did not start (`--attach`), with
/// [`ATTACH_OPTIONS`].
pub fn seize_attach(tid: i32) -> io::Result<()> {
    // SAFETY: plain ptrace request; the options travel in the data argument.
    let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, tid, 0usize, ATTACH_OPTIONS as usize) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Whether the current image of `tid` was started through a program
/// interpreter (ld.so: `AT_BASE` in its auxiliary vector is not 0), i.e.
/// LD_PRELOAD can enter it. `false` when it cannot be read.
pub fn has_interpreter(tid: i32) -> bool {
    let Ok(b) = std::fs::read(format!("/proc/{tid}/auxv")) else {
        return false;
    };
    let w = std::mem::size_of::<usize>();
    b.chunks_exact(2 * w).any(|c| {
        let key = usize::from_ne_bytes(c[..w].try_into().unwrap_or_default());
        let val = usize::from_ne_bytes(c[w..].try_into().unwrap_or_default());
        key == libc::AT_BASE as usize && val != 0
    })
}

/// Whether the environment of `tid` (after an exec) preloads our library
/// and points it at `trace_dir`: the library will record that image itself.
pub fn preloads_into(tid: i32, trace_dir: &[u8]) -> bool {
    let Ok(env) = std::fs::read(format!("/proc/{tid}/environ")) else {
        return false;
    };
    let mut lib = false;
    let mut dir = false;
    for e in env.split(|&b| b == 0) {
        if let Some(v) = e.strip_prefix(b"LD_PRELOAD=") {
            lib = lib
                || v.split(|&b| b == b':' || b == b' ')
                    .any(|x| x.ends_with(b"/libroar_preload.so"));
        } else if let Some(v) = e.strip_prefix(b"ROAR_TRACE_DIR=") {
            dir = dir || v == trace_dir;
        }
    }
    lib && dir
}

/// `PTRACE_SETOPTIONS` with [`OPTIONS`] on a `PTRACE_TRACEME` tracee (the
/// probe's).
pub fn set_options(tid: i32) -> io::Result<()> {
    with_options(libc::PTRACE_SETOPTIONS, tid)
}

/// `req` (SEIZE or SETOPTIONS) on `tid` with [`OPTIONS`].
fn with_options(req: libc::c_uint, tid: i32) -> io::Result<()> {
    // SAFETY: plain ptrace request; the options travel in the data argument.
    let r = unsafe { libc::ptrace(req, tid, 0usize, OPTIONS as usize) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Read a NUL-terminated string (without the NUL) at `addr` in `pid`'s
/// memory, at most [`PATH_MAX`] bytes, into `out`. Reads page by page so a
/// string ending just before an unmapped page is still read completely.
/// Returns false if the memory is unreadable or no NUL was found.
pub fn read_cstr(pid: i32, addr: u64, out: &mut Vec<u8>) -> bool {
    out.clear();
    if addr == 0 {
        return false;
    }
    const PAGE: u64 = 4096;
    let mut chunk = [0u8; 4096];
    let mut at = addr;
    while out.len() < PATH_MAX {
        let until_page_end = (PAGE - (at % PAGE)) as usize;
        let want = until_page_end
            .min(PATH_MAX + 1 - out.len())
            .min(chunk.len());
        let n = read_mem(pid, at, &mut chunk[..want]);
        if n == 0 {
            return false;
        }
        if let Some(z) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..z]);
            return true;
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
    false
}

/// Copy `buf.len()` bytes from `addr` in `pid`'s memory. Returns how many
/// bytes were read (0 on failure).
pub fn read_mem(pid: i32, addr: u64, buf: &mut [u8]) -> usize {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` describes our own writable buffer; the kernel checks
    // the remote range and fails with EFAULT instead of faulting us.
    let r = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if r < 0 {
        0
    } else {
        r as usize
    }
}

/// Target of a symlink such as `/proc/<tid>/cwd` or `/proc/<tid>/fd/<n>`.
pub fn readlink(path: &str, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.resize(PATH_MAX, 0);
    let Ok(c) = CString::new(path) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated; `out` has `out.len()` writable bytes.
    let r = unsafe { libc::readlink(c.as_ptr(), out.as_mut_ptr().cast(), out.len()) };
    if r < 0 || r as usize >= out.len() {
        out.clear();
        return false;
    }
    out.truncate(r as usize);
    true
}

/// What `stat` says about a tracee's open descriptor.
#[derive(Clone, Copy, Debug)]
pub struct FileStat {
    /// Regular file (not a pipe, socket, device or directory).
    pub regular: bool,
    /// Size in bytes.
    pub size: u64,
    /// Modification time in ns since the epoch.
    pub mtime_ns: i64,
    /// Device number (with `ino`: identity of the open file).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Permission bits (`st_mode & 0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
}

impl FileStat {
    // The casts are no-ops on x86_64 but not on every target.
    #[allow(clippy::unnecessary_cast)]
    fn from_stat(st: &libc::stat) -> FileStat {
        FileStat {
            regular: st.st_mode & libc::S_IFMT == libc::S_IFREG,
            size: st.st_size as u64,
            mtime_ns: (st.st_mtime as i64)
                .wrapping_mul(1_000_000_000)
                .wrapping_add(st.st_mtime_nsec as i64),
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            perm: st.st_mode & 0o7777,
            uid: st.st_uid,
            gid: st.st_gid,
        }
    }

    /// Whether a process running as `euid` (our own: the tracee's, since
    /// ptrace drops setuid) may open the file for `want` (`0o4` read, `0o2`
    /// write, `0o6` both) by the cheap rules: root, world permission, or
    /// owner permission. `false` means "not sure" (group permission, ACLs):
    /// the caller then asks the kernel instead of guessing.
    pub fn surely_allows(&self, euid: u32, want: u32) -> bool {
        euid == 0
            || self.perm & want == want
            || (self.uid == euid && (self.perm >> 6) & want == want)
    }
}

/// `stat` of `/proc/<tid>/fd/<fd>`: the file the tracee's descriptor refers
/// to (the kernel follows the magic link even for deleted files).
pub fn stat_fd(tid: i32, fd: i32) -> Option<FileStat> {
    let c = CString::new(format!("/proc/{tid}/fd/{fd}")).ok()?;
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is writable.
    if unsafe { libc::stat(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(FileStat::from_stat(&st))
}

/// `stat` (or `lstat` when `follow` is false) of an absolute path as the
/// tracer sees it. `scratch` is reused for the NUL-terminated copy.
pub fn stat_path(path: &[u8], follow: bool, scratch: &mut Vec<u8>) -> Option<FileStat> {
    scratch.clear();
    scratch.extend_from_slice(path);
    scratch.push(0);
    if path.contains(&0) {
        return None;
    }
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let c = scratch.as_ptr().cast();
    // SAFETY: `scratch` is NUL-terminated and `st` is writable.
    let r = unsafe {
        if follow {
            libc::stat(c, &mut st)
        } else {
            libc::lstat(c, &mut st)
        }
    };
    (r == 0).then(|| FileStat::from_stat(&st))
}

/// `pidfd_open(pid)` (Linux 5.3); `None` if unsupported or `pid` is gone.
pub fn pidfd_open(pid: i32) -> Option<i32> {
    // SAFETY: integer arguments only.
    let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    (r >= 0).then_some(r as i32)
}

/// What `/proc/<tid>/status` says about a thread's privileges.
#[derive(Clone, Copy, Debug)]
pub struct ProcIds {
    /// Effective uid.
    pub euid: u32,
    /// Effective gid.
    pub egid: u32,
    /// `PR_SET_NO_NEW_PRIVS` is set: an exec can never gain privileges.
    pub no_new_privs: bool,
}

/// Effective ids and the no_new_privs bit of thread `tid`.
pub fn proc_ids(tid: i32) -> Option<ProcIds> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |key: &str, idx: usize| -> Option<u32> {
        let line = s.lines().find(|l| l.starts_with(key))?;
        line[key.len()..].split_whitespace().nth(idx)?.parse().ok()
    };
    Some(ProcIds {
        euid: field("Uid:", 1)?,
        egid: field("Gid:", 1)?,
        no_new_privs: field("NoNewPrivs:", 0) == Some(1),
    })
}

/// `CAP_SYS_PTRACE` (linux/capability.h).
pub const CAP_SYS_PTRACE: u32 = 19;
/// `CAP_SYS_ADMIN` (linux/capability.h).
pub const CAP_SYS_ADMIN: u32 = 21;

/// Whether capability `cap` is in our effective set.
pub fn have_cap(cap: u32) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps >> cap & 1 == 1)
}

/// Whether we hold CAP_SYS_PTRACE: then the kernel lets a program we trace
/// gain its set-user-ID / file-capability privileges at exec.
pub fn have_cap_sys_ptrace() -> bool {
    have_cap(CAP_SYS_PTRACE)
}

/// Whether this process runs under `PR_SET_NO_NEW_PRIVS` (inherited from
/// whoever started us: roar-ptrace never sets it).
pub fn no_new_privs() -> bool {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 }
}

/// `path` NUL-terminated in `scratch` (reused; the pointer is valid until
/// `scratch` changes), or `None` if the path itself holds a NUL.
fn c_path(path: &[u8], scratch: &mut Vec<u8>) -> Option<*const libc::c_char> {
    if path.contains(&0) {
        return None;
    }
    scratch.clear();
    scratch.extend_from_slice(path);
    scratch.push(0);
    Some(scratch.as_ptr().cast())
}

/// Whether `path` carries file capabilities (`security.capability`).
pub fn has_file_caps(path: &[u8], scratch: &mut Vec<u8>) -> bool {
    let Some(c) = c_path(path, scratch) else {
        return false;
    };
    // SAFETY: both strings are NUL-terminated; a NULL buffer of size 0 only
    // asks for the value's size.
    unsafe { libc::getxattr(c, c"security.capability".as_ptr(), std::ptr::null_mut(), 0) >= 0 }
}

/// `PTRACE_DETACH` a ptrace-stopped thread: it resumes, untraced, with no
/// signal. Errors are ignored (it may have been killed meanwhile).
pub fn detach(tid: i32) {
    // SAFETY: plain ptrace request; no memory is passed.
    unsafe {
        libc::ptrace(libc::PTRACE_DETACH, tid, 0usize, 0usize);
    }
}

/// SIGKILL the process behind `pidfd` (no pid-reuse race); errors ignored.
pub fn pidfd_kill(pidfd: i32) {
    // SAFETY: integer arguments and a NULL siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// Our effective uid.
pub fn euid() -> u32 {
    // SAFETY: always succeeds.
    unsafe { libc::geteuid() }
}

/// `(Tgid, PPid)` of a thread from `/proc/<tid>/status`.
pub fn tgid_ppid(tid: i32) -> Option<(i32, i32)> {
    let s = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let mut tgid = None;
    let mut ppid = None;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("Tgid:") {
            tgid = v.trim().parse().ok();
        } else if let Some(v) = line.strip_prefix("PPid:") {
            ppid = v.trim().parse().ok();
        }
        if tgid.is_some() && ppid.is_some() {
            break;
        }
    }
    Some((tgid?, ppid.unwrap_or(0)))
}

pub use roar_events::now_ns;

/// Current `errno`.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Set `errno` to 0, so that a later [`errno`] tells about the calls made
/// since (a helper that fails without a syscall leaves it at 0).
pub fn clear_errno() {
    // SAFETY: errno is a thread-local int.
    unsafe { *libc::__errno_location() = 0 };
}

/// Whether the effective ids may open `path` for `want` (`libc::R_OK` /
/// `libc::W_OK`), by the kernel's own rules (`faccessat(AT_EACCESS)`:
/// group bits, ACLs, read-only mounts).
pub fn access_ok(path: &[u8], want: i32, scratch: &mut Vec<u8>) -> bool {
    let Some(c) = c_path(path, scratch) else {
        return false;
    };
    // SAFETY: `c` is NUL-terminated.
    unsafe { libc::faccessat(libc::AT_FDCWD, c, want, libc::AT_EACCESS) == 0 }
}

/// Whether the running kernel is at least `major.minor` (from uname).
pub fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: zeroed utsname is a valid out-buffer.
    let mut u: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    if unsafe { libc::uname(&mut u) } != 0 {
        return false;
    }
    let rel: Vec<u8> = u
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    let mut it = rel.split(|&c| c == b'.' || c == b'-').map(|p| {
        std::str::from_utf8(p)
            .ok()
            .and_then(|s| s.parse::<u32>().ok())
    });
    match (it.next().flatten(), it.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => false,
    }
}

/// `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6): the notifying thread
/// wakes the tracer on its own CPU and the tracer's answer wakes the thread
/// on the tracer's CPU, so a round trip costs two context switches instead of
/// two wake-ups of idle CPUs.
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// Ask for same-CPU wake-ups on a seccomp listener (false if unsupported).
pub fn notif_set_sync(fd: i32) -> bool {
    // SAFETY: the flags travel by value.
    unsafe {
        libc::ioctl(
            fd,
            libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
            SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
        ) == 0
    }
}

/// A syscall a traced thread is blocked in, waiting for our answer.
pub struct Notif {
    /// Notification id (for the answer).
    pub id: u64,
    /// Thread id (in our pid namespace).
    pub tid: i32,
    /// Audit arch of the call.
    pub arch: u32,
    /// Syscall number.
    pub nr: i64,
    /// Raw arguments.
    pub args: [u64; 6],
}

/// Receive one notification from the listener `fd`. Only call it when poll
/// said the fd is readable: then it does not block (a notification withdrawn
/// meanwhile, because its thread was interrupted, gives ENOENT).
pub fn notif_recv(fd: i32) -> io::Result<Notif> {
    // SAFETY: zeroed notif is what the kernel requires as input.
    let mut n: libc::seccomp_notif = unsafe { std::mem::zeroed() };
    // SAFETY: `n` is a writable seccomp_notif.
    if unsafe {
        libc::ioctl(
            fd,
            libc::SECCOMP_IOCTL_NOTIF_RECV as _,
            &mut n as *mut libc::seccomp_notif,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    let mut args = [0u64; 6];
    args.copy_from_slice(&n.data.args);
    Ok(Notif {
        id: n.id,
        tid: n.pid as i32,
        arch: n.data.arch,
        nr: n.data.nr as i64,
        args,
    })
}

/// Let the notified syscall `id` run as if nothing had happened. Errors
/// (ENOENT: the thread was interrupted or died meanwhile) are ignored.
pub fn notif_continue(fd: i32, id: u64) {
    let resp = libc::seccomp_notif_resp {
        id,
        val: 0,
        error: 0,
        flags: libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
    };
    // SAFETY: `resp` is a valid seccomp_notif_resp.
    unsafe {
        libc::ioctl(
            fd,
            libc::SECCOMP_IOCTL_NOTIF_SEND as _,
            &resp as *const libc::seccomp_notif_resp,
        )
    };
}

/// Control-message buffer for one fd, aligned for `cmsghdr`.
#[repr(C, align(8))]
struct Cmsg([u8; 64]);

/// A one-byte message over `byte` with room for an SCM_RIGHTS fd in `cbuf`.
fn fd_msghdr(byte: &mut [u8; 1], iov: &mut libc::iovec, cbuf: &mut Cmsg) -> libc::msghdr {
    *iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    // SAFETY: an all-zero msghdr is valid; the pointers set below outlive
    // every use of it (they borrow the caller's locals).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr().cast();
    msg.msg_controllen = cbuf.0.len() as _;
    msg
}

/// Send `fd` over the unix socket `sock` (SCM_RIGHTS). Allocation-free, for
/// the forked child before exec.
pub fn send_fd(sock: i32, fd: i32) -> bool {
    let (mut byte, mut cbuf) = ([b'L'], Cmsg([0; 64]));
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = fd_msghdr(&mut byte, &mut iov, &mut cbuf);
    // SAFETY: CMSG_* compute offsets inside `cbuf`, large enough for one int.
    unsafe {
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<i32>() as u32) as _;
        let cm = libc::CMSG_FIRSTHDR(&msg);
        (*cm).cmsg_level = libc::SOL_SOCKET;
        (*cm).cmsg_type = libc::SCM_RIGHTS;
        (*cm).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<i32>() as u32) as _;
        std::ptr::copy_nonoverlapping(&fd as *const i32 as *const u8, libc::CMSG_DATA(cm), 4);
        libc::sendmsg(sock, &msg, 0) == 1
    }
}

/// Receive an fd sent with [`send_fd`] (non-blocking: `None` if none is there).
pub fn recv_fd(sock: i32) -> Option<i32> {
    let (mut byte, mut cbuf) = ([0u8], Cmsg([0; 64]));
    let mut iov = libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    };
    let mut msg = fd_msghdr(&mut byte, &mut iov, &mut cbuf);
    // SAFETY: the kernel fills at most msg_controllen bytes of `cbuf`.
    unsafe {
        if libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT | libc::MSG_CMSG_CLOEXEC) != 1 {
            return None;
        }
        let cm = libc::CMSG_FIRSTHDR(&msg);
        if cm.is_null()
            || (*cm).cmsg_level != libc::SOL_SOCKET
            || (*cm).cmsg_type != libc::SCM_RIGHTS
        {
            return None;
        }
        let mut fd = -1i32;
        std::ptr::copy_nonoverlapping(libc::CMSG_DATA(cm), &mut fd as *mut i32 as *mut u8, 4);
        (fd >= 0).then_some(fd)
    }
}

extern "C" fn on_sigchld(_: libc::c_int) {}

/// Make SIGCHLD (a tracee stopped or ended) interrupt [`wait_listener`]:
/// a no-op handler, and the signal blocked except while waiting there, so
/// that a stop reported between our last `waitpid` and the wait is never
/// missed. Returns the mask to wait with.
pub fn sigchld_for_ppoll() -> libc::sigset_t {
    // SAFETY: plain signal-mask and sigaction calls on local structs.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigchld as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGCHLD, &sa, std::ptr::null_mut());
        let mut block: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut block);
        libc::sigaddset(&mut block, libc::SIGCHLD);
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigprocmask(libc::SIG_BLOCK, &block, &mut old);
        libc::sigdelset(&mut old, libc::SIGCHLD);
        old
    }
}

/// What [`wait_listener`] saw.
#[derive(Debug, PartialEq, Eq)]
pub enum Ready {
    /// A notification is waiting.
    Notification,
    /// No process uses the filter any more.
    Hangup,
    /// A signal (SIGCHLD), or the safety timeout: check `waitpid`.
    Other,
}

/// Wait until the listener `fd` (or -1: none) has a notification or a
/// signal arrives, SIGCHLD unblocked only during the wait (`mask`).
pub fn wait_listener(fd: i32, mask: &libc::sigset_t) -> Ready {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // A safety net only: SIGCHLD interrupts the wait when a tracee stops.
    let ts = libc::timespec {
        tv_sec: 1,
        tv_nsec: 0,
    };
    // SAFETY: one valid pollfd, a valid timeout and signal mask.
    let r = unsafe { libc::ppoll(&mut p, 1, &ts, mask) };
    if r <= 0 {
        return Ready::Other;
    }
    if p.revents & libc::POLLIN != 0 {
        Ready::Notification
    } else if p.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
        Ready::Hangup
    } else {
        Ready::Other
    }
}

/// The kernel's "restart the call after the handler, whatever SA_RESTART
/// says" code (include/linux/errno.h; never seen by user space).
const ERESTARTNOINTR: i64 = 513;
/// The kernel's "interrupted; restart only under SA_RESTART" code.
const ERESTARTSYS: i64 = 512;

/// At a signal-delivery stop: if `tid` was interrupted in an open-family
/// syscall (`-ERESTARTSYS`), its (nr, args); else `None`.
#[cfg(target_arch = "x86_64")]
pub fn interrupted_open(tid: i32) -> Option<(i64, [u64; 6])> {
    // SAFETY: zeroed regs are a valid out-buffer for PTRACE_GETREGS.
    let mut r: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes one user_regs_struct.
    if unsafe { libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut r as *mut _) } != 0 {
        return None;
    }
    let nr = r.orig_rax as i64;
    let opens = [
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_creat,
        libc::SYS_openat2,
    ];
    (r.rax as i64 == -ERESTARTSYS && opens.contains(&nr))
        .then_some((nr, [r.rdi, r.rsi, r.rdx, r.r10, r.r8, r.r9]))
}

/// Not implemented on this architecture: interrupted opens are left alone.
#[cfg(not(target_arch = "x86_64"))]
pub fn interrupted_open(_tid: i32) -> Option<(i64, [u64; 6])> {
    None
}

/// Make the interrupted syscall of `tid` restart after the signal handler
/// (`-ERESTARTNOINTR`), as if it had never been interrupted.
#[cfg(target_arch = "x86_64")]
pub fn restart_after_handler(tid: i32) {
    // SAFETY: as in interrupted_open; PTRACE_SETREGS reads one struct.
    unsafe {
        let mut r: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, tid, 0usize, &mut r as *mut _) == 0 {
            r.rax = (-ERESTARTNOINTR) as u64;
            libc::ptrace(libc::PTRACE_SETREGS, tid, 0usize, &r as *const _);
        }
    }
}

/// Not implemented on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub fn restart_after_handler(_tid: i32) {}
