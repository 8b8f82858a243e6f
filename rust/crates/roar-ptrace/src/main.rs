//! `roar-ptrace`: run a command under the ptrace + seccomp-BPF file tracer.
//!
//! ```text
//! roar-ptrace [--trace-dir DIR] [--wait-all] [--fallback-preload LIB] -- CMD ARGS...
//! roar-ptrace --preload-only LIB [--trace-dir DIR] -- CMD ARGS...
//! roar-ptrace --probe
//! roar-ptrace --attach PID --ready-fd FD [--trace-dir DIR]
//! ```
//!
//! Writes roar-events v1 files (rust/EVENTS.md) into DIR (default
//! `$ROAR_TRACE_DIR`) and exits with CMD's exit status, or dies of CMD's
//! signal. Processes:
//!
//! ```text
//!   front (this pid: what the caller waits for)
//!     └─ tracer (ptraces everything below, reports through a pipe)
//!          └─ CMD and all its descendants
//! ```
//!
//! Why a separate front process: once a seccomp filter returns
//! `SECCOMP_RET_TRACE`, the tracee needs a tracer for as long as it lives
//! (without one those syscalls fail with ENOSYS). So the tracer must outlive
//! a daemon that CMD leaves behind, yet the caller must get CMD's status as
//! soon as CMD ends, as it would untraced. The front exits with CMD's status;
//! the tracer keeps serving the stragglers in the background (and a note
//! says their later I/O is not part of the job), unless `--wait-all` asks to
//! wait for the whole tree like `strace -f`. The tracees die with the
//! tracer (`PTRACE_O_EXITKILL`: without it they would run on with ENOSYS),
//! and until CMD ends the tracer dies with the front (`PR_SET_PDEATHSIG`);
//! if the tracer dies first, the front says so in the notes and dies of
//! SIGKILL like CMD did.
//!
//! If tracing cannot start (ptrace refused, e.g. by Yama or a container
//! seccomp policy), CMD has not run yet: the front then runs it itself under
//! `--fallback-preload LIB` (or untraced), and says so in
//! `DIR/roar-ptrace.notes`. Notes are lines `backend\tNAME`,
//! `partial\tREASON`, `info\tTEXT`, and `started\tPID` / `status\tWAITSTATUS`
//! (the command was forked / its status reached the front), read by
//! roar_nb/capture/ptrace.py.
//!
//! `--preload-only LIB` is a minimal launcher (no tracer, unless CMD is a
//! static executable: then it has `--attach` trace it, as the library does
//! for static programs it execs), used by `roar run --tracer preload` for a
//! static command and by the benchmarks and the fidelity corpus;
//! `--exec-only` runs CMD untraced (`roar run --tracer none`), only so that
//! it dies with roar (below).
//!
//! Signals: the front relays INT, QUIT, TERM, HUP, USR1, USR2 to CMD when
//! another process sent them (`kill`, roar relaying its own); the terminal's
//! ^C/^\ reach CMD directly and are not relayed again. `ROAR_DIE_WITH=PID`
//! (set by roar, removed here before CMD starts) ties CMD's life to roar's:
//! if roar dies, even by SIGKILL, CMD is killed (PR_SET_PDEATHSIG). When CMD
//! stops (SIGSTOP, ^Z: the tracer leaves it stopped, see `sys::seize`), the
//! front stops too, so its caller sees the job stopped, and continues CMD
//! when it is continued itself (`stop_with_command`).
//!
//! Modes: a seccomp filter sends only file-naming calls to the tracer (root);
//! an ordinary user gets no filter and a stop at every syscall, because the
//! filter would need no_new_privs, which changes set-id programs (see
//! `filter_refusal`). `ROAR_PTRACE_SECCOMP=0` forces the second mode,
//! `ROAR_PTRACE_NOTIFY=0` opens as ptrace stops in the first.
//!
//! `--attach PID` traces a process we did not start: the preload library
//! runs it (double-forked, so it is no child of the program) when a
//! preloaded process is about to exec a static executable, which LD_PRELOAD
//! cannot enter (`attach_process`). No front, no filter (it cannot be
//! installed into another process): a stop at every syscall; one byte on
//! FD says the process is seized; the tracer exits when its tracees are gone.
//!
//! Test-only fault injection: `ROAR_PTRACE_FAULT=traceme|seccomp|panic|die|attach`.

mod image;
mod seccomp;
mod sys;
mod tracer;

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};

use tracer::{Options, Tracer};

/// Name of the notes file in the trace directory.
const NOTES: &str = "roar-ptrace.notes";

struct Args {
    trace_dir: Vec<u8>,
    wait_all: bool,
    fallback_preload: Option<OsString>,
    preload_only: Option<OsString>,
    exec_only: bool,
    probe: bool,
    /// `--attach PID`: trace this running process (see `attach_process`).
    attach: Option<i32>,
    /// `--ready-fd FD`: where `--attach` says "seized".
    ready_fd: Option<i32>,
    cmd: Vec<OsString>,
}

fn usage() -> ! {
    eprintln!(
        "usage: roar-ptrace [--trace-dir DIR] [--wait-all] [--fallback-preload LIB] -- CMD [ARGS...]\n\
         \x20      roar-ptrace --preload-only LIB [--trace-dir DIR] -- CMD [ARGS...]\n\
         \x20      roar-ptrace --probe\n\
         \x20      roar-ptrace --attach PID --ready-fd FD [--trace-dir DIR]"
    );
    std::process::exit(2);
}

fn parse_args() -> Args {
    let mut it = std::env::args_os().skip(1);
    let mut a = Args {
        trace_dir: std::env::var_os("ROAR_TRACE_DIR")
            .map(|s| s.into_vec())
            .unwrap_or_default(),
        wait_all: false,
        fallback_preload: None,
        preload_only: None,
        exec_only: false,
        probe: false,
        attach: None,
        ready_fd: None,
        cmd: Vec::new(),
    };
    while let Some(arg) = it.next() {
        match arg.as_bytes() {
            b"--" => {
                a.cmd = it.collect();
                break;
            }
            b"--trace-dir" => a.trace_dir = it.next().unwrap_or_else(|| usage()).into_vec(),
            b"--wait-all" => a.wait_all = true,
            b"--fallback-preload" => {
                a.fallback_preload = Some(it.next().unwrap_or_else(|| usage()))
            }
            b"--preload-only" => a.preload_only = Some(it.next().unwrap_or_else(|| usage())),
            b"--exec-only" => a.exec_only = true,
            b"--probe" => a.probe = true,
            b"--attach" | b"--ready-fd" => {
                let v = it.next().and_then(|v| v.to_str()?.parse::<i32>().ok());
                let v = Some(v.filter(|&v| v >= 0).unwrap_or_else(|| usage()));
                if arg.as_bytes() == b"--attach" {
                    a.attach = v;
                } else {
                    a.ready_fd = v;
                }
            }
            b"--version" => {
                println!("roar-ptrace {} (events v1)", env!("CARGO_PKG_VERSION"));
                std::process::exit(0);
            }
            b"-h" | b"--help" => usage(),
            _ => {
                // First non-option word starts the command (the `--` is optional).
                a.cmd.push(arg);
                a.cmd.extend(it);
                break;
            }
        }
    }
    if !a.trace_dir.is_empty() {
        let cwd = std::env::current_dir()
            .map(|p| p.into_os_string().into_vec())
            .unwrap_or_else(|_| b"/".to_vec());
        a.trace_dir = roar_events::normalize(&cwd, &a.trace_dir);
    }
    if a.cmd.is_empty() && !a.probe && a.attach.is_none() {
        usage();
    }
    a
}

fn main() {
    let args = parse_args();
    if args.probe {
        let no_filter = filter_refusal();
        std::process::exit(match probe(no_filter.is_none()) {
            Ok(()) => {
                match no_filter {
                    None => println!(
                        "ok: ptrace and seccomp filtering work; opens {}",
                        probe_notify()
                    ),
                    Some(why) => println!(
                        "ok: ptrace works; no seccomp filter ({why}): every syscall stops (slower, same records)"
                    ),
                }
                0
            }
            Err(e) => {
                println!("{e}");
                1
            }
        });
    }
    if let Some(pid) = args.attach {
        attach_process(&args, pid);
    }
    let die_with = take_die_with();
    if die_with.is_some() {
        // SAFETY: still single-threaded.
        unsafe { roar_events::launch::default_glibc_internal_signals() };
    }
    if let Some(lib) = &args.preload_only {
        die_with_parent(die_with, libc::SIGKILL);
        exec_preload(&args, lib);
    }
    if args.exec_only {
        die_with_parent(die_with, libc::SIGKILL);
        fail_exec(&args.cmd, exec_cmd(&args.cmd));
    }
    // The front is not CMD: its own death signal is caught and turned into
    // SIGKILL for CMD (see on_parent_death).
    set_handler(parent_death_signal(), on_parent_death);
    die_with_parent(die_with, parent_death_signal());
    DIE_WITH.store(die_with.unwrap_or(0), Ordering::Relaxed);
    front(args);
}

/// `ROAR_DIE_WITH` (roar_events::launch): roar's pid, whose death must end
/// CMD. Taken out of our environment before anything is forked or exec'd.
fn take_die_with() -> Option<i32> {
    // SAFETY: still single-threaded.
    unsafe { roar_events::launch::take_die_with() }
}

/// Ask for `sig` at roar's death (see roar_events::launch::die_with).
fn die_with_parent(parent: Option<i32>, sig: i32) {
    if let Some(parent) = parent {
        // SAFETY: single-threaded here; `sig` is a valid signal.
        unsafe { roar_events::launch::die_with(parent, sig) };
    }
}

/// The front's death signal: a real-time one nobody else sends, so that it
/// cannot be confused with a signal relayed to CMD.
fn parent_death_signal() -> i32 {
    libc::SIGRTMIN() + 4
}

/// Set when roar died before CMD's pid was known: kill CMD as soon as it is.
static ORPHANED: AtomicI32 = AtomicI32::new(0);
/// The pid of roar (ROAR_DIE_WITH), 0 if not asked to die with it.
static DIE_WITH: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_parent_death(_: libc::c_int) {
    ORPHANED.store(1, Ordering::Relaxed);
    let c = CHILD.load(Ordering::Relaxed);
    if c > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(c, libc::SIGKILL) };
    }
}

fn cstrings(v: &[OsString]) -> Vec<CString> {
    v.iter()
        .map(|s| CString::new(s.as_bytes()).unwrap_or_else(|_| CString::new("?").unwrap()))
        .collect()
}

/// Rust's runtime ignores SIGPIPE before `main`, and an ignored signal stays
/// ignored across exec: CMD would then get EPIPE ("Broken pipe", exit 1)
/// where it would have died of SIGPIPE (141) without roar. roar starts us
/// with the default disposition, so that is what CMD gets back.
fn default_sigpipe() {
    // SAFETY: restoring a default disposition is async-signal-safe.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
}

/// Replace this process by CMD (PATH search like execvp). Returns only on failure.
fn exec_cmd(cmd: &[OsString]) -> std::io::Error {
    let c = cstrings(cmd);
    let mut argv: Vec<*const libc::c_char> = c.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    default_sigpipe();
    // SAFETY: argv is a NULL-terminated array of NUL-terminated strings that
    // outlive the call.
    unsafe { libc::execvp(argv[0], argv.as_ptr()) };
    std::io::Error::last_os_error()
}

/// Run CMD with the preload library: LD_PRELOAD (in front of any others) and
/// ROAR_TRACE_DIR, as `roar run` gives them (roar_nb/capture/preload.py, `compose`).
fn exec_preload(args: &Args, lib: &OsString) -> ! {
    let old = std::env::var_os("LD_PRELOAD").unwrap_or_default();
    let pre = roar_events::preload_var::compose(lib.as_bytes(), old.as_bytes());
    std::env::set_var("LD_PRELOAD", std::ffi::OsStr::from_bytes(&pre));
    if !args.trace_dir.is_empty() {
        std::env::set_var(
            "ROAR_TRACE_DIR",
            std::ffi::OsStr::from_bytes(&args.trace_dir),
        );
        // LD_PRELOAD cannot enter a static command: have ourselves trace it
        // from outside, as the library does for the static programs it execs.
        if let Some((target, may_trace)) = static_command(&args.cmd[0]) {
            let me = std::env::current_exe()
                .ok()
                .and_then(|p| CString::new(p.into_os_string().into_vec()).ok());
            let attached = may_trace
                && std::env::var_os("ROAR_PTRACE_BIN").is_none_or(|v| !v.is_empty())
                && me.is_some_and(|me| roar_events::attach::attach_tracer(&me, &args.trace_dir));
            if !attached {
                note(
                    &args.trace_dir,
                    "partial",
                    &format!(
                        "static binary {} ran under preload: its own file I/O was not seen",
                        roar_events::display_path(&target)
                    ),
                );
            }
            // The file found, exec'd directly: execvp's failed attempts along
            // PATH would look to the tracer like the exec it waits for failing.
            if let Ok(path) = CString::new(target) {
                let own = cstrings(&args.cmd);
                let mut argv: Vec<*const libc::c_char> = own.iter().map(|s| s.as_ptr()).collect();
                argv.push(std::ptr::null());
                default_sigpipe();
                // SAFETY: a NUL-terminated path and a NULL-terminated argv
                // that outlive the call.
                unsafe { libc::execv(path.as_ptr(), argv.as_ptr()) };
                fail_exec(&args.cmd, std::io::Error::last_os_error());
            }
        }
    }
    fail_exec(&args.cmd, exec_cmd(&args.cmd));
}

/// The file `cmd` runs if it is a static executable (or a `#!` script whose
/// interpreter is one), and whether it may be traced: not set-id, no file
/// capabilities (a tracer without CAP_SYS_PTRACE would make the kernel drop
/// them; it then runs untraced, noted).
fn static_command(cmd: &OsString) -> Option<(Vec<u8>, bool)> {
    use std::os::unix::fs::MetadataExt;
    let c = cmd.as_bytes();
    let path: Vec<u8> = if c.contains(&b'/') {
        c.to_vec()
    } else {
        let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
        path.as_bytes().split(|&b| b == b':').find_map(|d| {
            let mut p = if d.is_empty() {
                b".".to_vec()
            } else {
                d.to_vec()
            };
            p.push(b'/');
            p.extend_from_slice(c);
            let m = std::fs::metadata(std::ffi::OsStr::from_bytes(&p)).ok()?;
            (m.is_file() && m.mode() & 0o111 != 0).then_some(p)
        })?
    };
    let head = |p: &[u8]| -> Option<(Vec<u8>, std::fs::Metadata)> {
        use std::io::Read;
        let mut f = std::fs::File::open(std::ffi::OsStr::from_bytes(p)).ok()?;
        let mut b = vec![0u8; 4096];
        let n = f.read(&mut b).ok()?;
        b.truncate(n);
        Some((b, f.metadata().ok()?))
    };
    let (h, m) = head(&path)?;
    let mut scratch = Vec::new();
    let mut may_trace = m.mode() & 0o6000 == 0 && !sys::has_file_caps(&path, &mut scratch);
    let elf = match h.strip_prefix(b"#!") {
        Some(rest) => {
            let line = rest.split(|&b| b == b'\n').next()?;
            let interp = line
                .split(|&b| b == b' ' || b == b'\t')
                .find(|w| !w.is_empty())?;
            let (ih, im) = head(interp)?;
            may_trace &= im.mode() & 0o6000 == 0 && !sys::has_file_caps(interp, &mut scratch);
            ih
        }
        None => h,
    };
    (roar_events::attach::elf_is_static(&elf) == Some(true)).then_some((path, may_trace))
}

fn fail_exec(cmd: &[OsString], e: std::io::Error) -> ! {
    eprintln!("roar-ptrace: {}: {e}", cmd[0].to_string_lossy());
    let code = if e.raw_os_error() == Some(libc::ENOENT) {
        127
    } else {
        126
    };
    std::process::exit(code);
}

/// Append a line to DIR/roar-ptrace.notes.
fn note(dir: &[u8], key: &str, text: &str) {
    if dir.is_empty() {
        return;
    }
    let mut p = dir.to_vec();
    p.extend_from_slice(b"/");
    p.extend_from_slice(NOTES.as_bytes());
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(std::ffi::OsStr::from_bytes(&p))
    {
        // One write(2) per line: the front and the tracer append to the same
        // file at the same time, and O_APPEND keeps only whole writes apart.
        let line = format!("{key}\t{}\n", text.replace('\n', " "));
        let _ = f.write_all(line.as_bytes());
    }
}

static CHILD: AtomicI32 = AtomicI32::new(0);

/// `si_code` of a signal the kernel raised itself (e.g. the terminal's ^C).
const SI_KERNEL: i32 = 0x80;

extern "C" fn relay(sig: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // Signals from the terminal (SI_KERNEL) reach CMD directly (same process
    // group); one sent by a process (kill, roar relaying) is for CMD too.
    // SAFETY: the kernel passes a valid siginfo to an SA_SIGINFO handler.
    let code = unsafe { (*info).si_code };
    let c = CHILD.load(Ordering::Relaxed);
    if c > 0 && code < SI_KERNEL {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(c, sig) };
    }
}

type SigInfoHandler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

fn relay_addr() -> usize {
    relay as SigInfoHandler as usize
}

fn set_relay(sig: i32) {
    // SAFETY: installing a handler that only calls async-signal-safe code.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = relay_addr();
        sa.sa_flags = libc::SA_RESTART | libc::SA_SIGINFO;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Install `h` for `sig`. Handlers (not SIG_IGN) are used on purpose: a
/// caught signal resets to default across exec, an ignored one would be
/// inherited by CMD when the front falls back to exec'ing it.
fn set_handler(sig: i32, h: extern "C" fn(libc::c_int)) {
    // SAFETY: installing a handler that only calls async-signal-safe code.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = h as usize;
        sa.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(sig, &sa, std::ptr::null_mut());
    }
}

/// Back to the default disposition if `relay` handles `sig`.
fn unset_relay(sig: i32) {
    // SAFETY: reading a disposition into a local struct, then restoring the default.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        if old.sa_sigaction == relay_addr() {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
}

/// The front process: start the tracer, wait for CMD's status, exit with it.
fn front(args: Args) -> ! {
    let mut fds = [0i32; 2];
    // SAFETY: valid out-array for two fds.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!("roar-ptrace: pipe: {}", std::io::Error::last_os_error());
        std::process::exit(1);
    }
    let (rd, wr) = (fds[0], fds[1]);
    // SAFETY: getpid cannot fail; fork in a single-threaded process.
    let front_pid = unsafe { libc::getpid() };
    // SAFETY: as above.
    let t = unsafe { libc::fork() };
    if t < 0 {
        // Cannot even fork: run the command unobserved rather than not at all.
        note(&args.trace_dir, "backend", "none");
        note(
            &args.trace_dir,
            "partial",
            "roar-ptrace could not fork its tracer; not traced",
        );
        fail_exec(&args.cmd, exec_cmd(&args.cmd));
    }
    if t == 0 {
        // SAFETY: closing our copy of the read end; prctl takes integers.
        unsafe {
            libc::close(rd);
            // Until CMD ends, the tracer (and so, through PTRACE_O_EXITKILL,
            // CMD) dies with the front: a caller that kills the front (or
            // whose own death kills it) does not leave CMD running on with
            // nobody waiting for it. Cleared when CMD's status is sent.
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
            if libc::getppid() != front_pid {
                libc::_exit(0); // the front died before the prctl
            }
        }
        tracer_process(&args, wr);
    }
    // SAFETY: closing our copy of the write end, so EOF means "tracer gone".
    unsafe { libc::close(wr) };
    const RELAYED: [i32; 6] = [
        libc::SIGINT,
        libc::SIGQUIT,
        libc::SIGTERM,
        libc::SIGHUP,
        libc::SIGUSR1,
        libc::SIGUSR2,
    ];
    for s in RELAYED {
        // SAFETY: reading the current disposition.
        let ignored = unsafe { libc::signal(s, libc::SIG_IGN) } == libc::SIG_IGN;
        if !ignored {
            set_relay(s); // one ignored when we started stays ignored (CMD inherited it)
        }
    }

    set_handler(libc::SIGCONT, on_cont);

    let mut buf = Vec::new();
    let mut status: Option<i32> = None;
    let mut child_pidfd: Option<i32> = None;
    let mut chunk = [0u8; 512];
    // When the command stopped (the tracer's clock, CLOCK_MONOTONIC), while
    // it is stopped and we have not stopped with it yet.
    let mut cmd_stopped: Option<u64> = None;
    loop {
        // Process complete lines.
        while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = buf.drain(..=nl).collect();
            let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            let (tag, rest) = line.split_once(' ').unwrap_or((line.as_str(), ""));
            match tag {
                "C" => {
                    let c: i32 = rest.parse().unwrap_or(0);
                    CHILD.store(c, Ordering::Relaxed);
                    if ORPHANED.load(Ordering::Relaxed) != 0 && c > 0 {
                        // SAFETY: roar died before CMD's pid was known.
                        unsafe { libc::kill(c, libc::SIGKILL) };
                    }
                    // Taken while CMD is still the tracer's unreaped child, so
                    // the pid cannot have been reused.
                    child_pidfd = sys::pidfd_open(c);
                    // With `status` below, lets the reader tell "the command
                    // ran and we never learned its fate" (this front killed).
                    note(&args.trace_dir, "started", rest);
                }
                "F" => {
                    // Tracing could not start; CMD has not run. Run it here.
                    // SAFETY: reap the tracer (it exits right after sending F).
                    unsafe { libc::waitpid(t, std::ptr::null_mut(), 0) };
                    for s in RELAYED {
                        unset_relay(s); // an inherited SIG_IGN stays, as CMD would have it
                    }
                    // We become CMD: its death signal is plain SIGKILL.
                    let parent = DIE_WITH.load(Ordering::Relaxed);
                    die_with_parent((parent > 0).then_some(parent), libc::SIGKILL);
                    match &args.fallback_preload {
                        Some(lib) => {
                            note(&args.trace_dir, "backend", "preload");
                            note(
                                &args.trace_dir,
                                "partial",
                                &format!("{rest}; fell back to preload before running"),
                            );
                            eprintln!("roar: {rest}; using the preload tracer");
                            exec_preload(&args, lib);
                        }
                        None => {
                            note(&args.trace_dir, "backend", "none");
                            note(
                                &args.trace_dir,
                                "partial",
                                &format!("{rest}; the command ran untraced"),
                            );
                            eprintln!("roar: {rest}; running untraced");
                            fail_exec(&args.cmd, exec_cmd(&args.cmd));
                        }
                    }
                }
                "T" => cmd_stopped = rest.parse().ok(),
                "R" => cmd_stopped = None,
                "E" => {
                    let e = std::io::Error::from_raw_os_error(rest.parse().unwrap_or(libc::ENOENT));
                    eprintln!("roar-ptrace: {}: {e}", args.cmd[0].to_string_lossy());
                }
                "S" => {
                    let mut it = rest.split(' ');
                    let st: i32 = it.next().and_then(|s| s.parse().ok()).unwrap_or(1 << 8);
                    let remaining: usize = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
                    status = Some(st);
                    note(&args.trace_dir, "status", &st.to_string());
                    if remaining > 0 && !args.wait_all {
                        note(
                            &args.trace_dir,
                            "partial",
                            &format!("{remaining} traced thread(s) outlived the command; their later file I/O is not part of this job"),
                        );
                        exit_like(st);
                    }
                }
                _ => {}
            }
        }
        if let Some(t) = cmd_stopped.take() {
            stop_with_command(t);
        }
        // SAFETY: reading into a local buffer.
        let n = unsafe { libc::read(rd, chunk.as_mut_ptr().cast(), chunk.len()) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n as usize]);
    }
    let mut tst = 0;
    // SAFETY: reap the tracer (it has closed the pipe: it is exiting).
    unsafe { libc::waitpid(t, &mut tst, 0) };
    match status {
        Some(st) => exit_like(st),
        None => tracer_died(&args, tst, child_pidfd),
    }
}

/// When the front last received SIGCONT (CLOCK_MONOTONIC ns).
static LAST_CONT: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_cont(_: libc::c_int) {
    // clock_gettime is async-signal-safe.
    LAST_CONT.store(sys::now_ns(), Ordering::Relaxed);
}

/// The command stopped at `since` (SIGSTOP, SIGTSTP...; the tracer leaves it
/// stopped): stop the front too, so that our caller (roar, a shell) sees its
/// job stopped, as it would see the command untraced; when the front is
/// continued (`fg`, roar relaying a SIGCONT), continue the command, as roar
/// does with its own child. Skipped if a SIGCONT reached us after the
/// command stopped: the terminal's ^Z stopped the front and the command
/// alike, and `fg` has continued both already.
fn stop_with_command(since: u64) {
    if LAST_CONT.load(Ordering::Relaxed) >= since {
        return;
    }
    // SAFETY: stopping ourselves; kill takes integers.
    unsafe {
        libc::raise(libc::SIGSTOP);
        let c = CHILD.load(Ordering::Relaxed);
        if c > 0 {
            libc::kill(c, libc::SIGCONT);
        }
    }
}

/// The tracer ended before reporting CMD's status (killed, or a crash the
/// panic guard could not catch). With `PTRACE_O_EXITKILL` the kernel has sent
/// SIGKILL to every tracee: CMD dies as a whole instead of running on with
/// ENOSYS from every traced call. Say so, wait (bounded) until CMD is gone,
/// and die of SIGKILL like CMD did, so the caller records the real fate.
fn tracer_died(args: &Args, tracer_status: i32, child_pidfd: Option<i32>) -> ! {
    let how = if libc::WIFSIGNALED(tracer_status) {
        format!("was killed by signal {}", libc::WTERMSIG(tracer_status))
    } else {
        format!("exited ({})", libc::WEXITSTATUS(tracer_status))
    };
    let text = format!(
        "the ptrace tracer {how} before the command finished; the command was killed with it \
         (a traced program cannot run on without its tracer); file I/O not yet flushed was lost"
    );
    eprintln!("roar-ptrace: the tracer {how}; the command was killed with it");
    note(&args.trace_dir, "partial", &text);
    if let Some(fd) = child_pidfd {
        // EXITKILL has killed CMD, unless the tracer died before it could set
        // that option: then CMD sits stopped before its exec. Either way it
        // must not run on.
        sys::pidfd_kill(fd);
        // Readable once CMD has exited; 10 s is a generous cap for a SIGKILL.
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        unsafe { libc::poll(&mut p, 1, 10_000) };
    }
    // A wait status meaning "killed by SIGKILL".
    exit_like(libc::SIGKILL);
}

/// Exit with the same wait status: the code, or death by the same signal.
fn exit_like(status: i32) -> ! {
    if libc::WIFSIGNALED(status) {
        let sig = libc::WTERMSIG(status);
        // SAFETY: plain libc calls on our own process. No core file of our
        // own: the command already dumped one if it was going to.
        unsafe {
            let lim = libc::rlimit {
                rlim_cur: 0,
                rlim_max: 0,
            };
            libc::setrlimit(libc::RLIMIT_CORE, &lim);
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::raise(sig);
        }
        std::process::exit(128 + sig);
    }
    std::process::exit(libc::WEXITSTATUS(status));
}

fn send(fd: i32, msg: &str) {
    let b = msg.as_bytes();
    let mut off = 0;
    while off < b.len() {
        // SAFETY: writing from a live buffer.
        let n = unsafe { libc::write(fd, b[off..].as_ptr().cast(), b.len() - off) };
        if n <= 0 {
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            return;
        }
        off += n as usize;
    }
}

// Messages from the command child to the tracer, before exec (tag + errno).
const SETUP_PTRACE: u8 = b'P';
const SETUP_SECCOMP: u8 = b'S';
const SETUP_EXEC: u8 = b'X';
/// The child is ready to be seized (its filter, if any, is installed).
const SETUP_READY: u8 = b'R';
/// Opens are notified on a seccomp listener, sent over the setup socket.
const SETUP_NOTIFY: u8 = b'N';

/// Why the command must run without our seccomp filter (then every syscall
/// is a ptrace stop: slower, same records), or `None` if the filter is safe.
///
/// The kernel takes a filter only from a process with CAP_SYS_ADMIN or under
/// no_new_privs, and no_new_privs makes every set-user-ID, set-group-ID or
/// file-capability program exec'd later run without its privileges: the
/// program would behave differently (`su` failing, a setuid helper denied).
/// Without a filter the tracer can let such a program go (it detaches the
/// thread before the exec, see `Tracer::setid_exec`); with one it cannot (a
/// tracee whose filter has no tracer gets ENOSYS). So the filter is used only
/// where no set-id exec under it can lose anything:
/// * no_new_privs is already on (inherited: no exec gains privileges, traced
///   or not), or
/// * we hold CAP_SYS_ADMIN (no no_new_privs needed) and CAP_SYS_PTRACE (the
///   kernel grants a traced set-id program its privileges), i.e. root.
///
/// `ROAR_PTRACE_SECCOMP=0` forces the filter off (the fidelity corpus and
/// the benchmarks run this mode as root too).
fn filter_refusal() -> Option<&'static str> {
    if std::env::var_os("ROAR_PTRACE_SECCOMP").is_some_and(|v| v == "0") {
        return Some("ROAR_PTRACE_SECCOMP=0");
    }
    if sys::no_new_privs() {
        return None;
    }
    if !sys::have_cap(sys::CAP_SYS_ADMIN) {
        return Some(
            "without CAP_SYS_ADMIN a seccomp filter needs no_new_privs, \
             which would take their privileges from set-id programs",
        );
    }
    if !sys::have_cap_sys_ptrace() {
        return Some(
            "without CAP_SYS_PTRACE a set-id program must run untraced to keep its privileges, \
             which a seccomp filter would not allow",
        );
    }
    None
}

/// Whether opens should be seccomp notifications rather than ptrace stops:
/// only where the kernel has same-CPU wake-ups for them (Linux 6.6), which is
/// what makes them cheaper; `ROAR_PTRACE_NOTIFY=0` turns it off (tests and
/// benchmarks compare both).
fn want_notify(fault: &str) -> bool {
    fault != "seccomp"
        && std::env::var_os("ROAR_PTRACE_NOTIFY").is_none_or(|v| v != "0")
        && sys::kernel_at_least(6, 6)
}

/// Blocking: the child's setup messages up to [`SETUP_READY`], or up to EOF
/// (the child exited without running CMD).
fn read_setup_until_ready(fd: i32) -> Vec<(u8, i32)> {
    let mut out = Vec::new();
    let mut b = [0u8; 5];
    let mut have = 0;
    while out.last().is_none_or(|(t, _)| *t != SETUP_READY) {
        // SAFETY: reading into the unfilled part of a local buffer.
        let n = unsafe { libc::read(fd, b[have..].as_mut_ptr().cast(), 5 - have) };
        if n < 0 && sys::errno() == libc::EINTR {
            continue;
        }
        if n <= 0 {
            break;
        }
        have += n as usize;
        if have == 5 {
            out.push((b[0], i32::from_le_bytes([b[1], b[2], b[3], b[4]])));
            have = 0;
        }
    }
    out
}

fn read_setup(fd: i32) -> Vec<(u8, i32)> {
    let mut out = Vec::new();
    let mut b = [0u8; 5];
    loop {
        // SAFETY: reading into a local buffer (the fd is non-blocking).
        let n = unsafe { libc::read(fd, b.as_mut_ptr().cast(), 5) };
        if n != 5 {
            return out;
        }
        out.push((b[0], i32::from_le_bytes([b[1], b[2], b[3], b[4]])));
    }
}

/// The tracer process: fork CMD, trace it and its descendants, report.
fn tracer_process(args: &Args, wr: i32) -> ! {
    let fault = std::env::var("ROAR_PTRACE_FAULT").unwrap_or_default();
    let prog = seccomp::program(seccomp::OpenAction::Trace);
    let no_filter = filter_refusal();
    let notify = no_filter.is_none() && want_notify(&fault);
    let prog_notify = seccomp::program(seccomp::OpenAction::Notify);
    let mut socks = [-1i32; 2];
    // SAFETY: valid out-array for two fds.
    if notify
        && unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                0,
                socks.as_mut_ptr(),
            )
        } != 0
    {
        socks = [-1, -1];
    }
    let cmd = cstrings(&args.cmd);
    let mut argv: Vec<*const libc::c_char> = cmd.iter().map(|s| s.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut sp = [0i32; 2];
    // SAFETY: valid out-array.
    unsafe { libc::pipe2(sp.as_mut_ptr(), libc::O_CLOEXEC) };
    let (srd, swr) = (sp[0], sp[1]);
    // The "go" pipe: the child waits on it until it has been seized (EOF:
    // the tracer died first, so the command must not run).
    let mut gp = [-1i32; 2];
    // SAFETY: valid out-array.
    unsafe { libc::pipe2(gp.as_mut_ptr(), libc::O_CLOEXEC) };
    let (go_rd, go_wr) = (gp[0], gp[1]);
    // SAFETY: fork in a single-threaded process.
    let c = unsafe { libc::fork() };
    if c == 0 {
        // The command child: no allocation from here on.
        let tell = |tag: u8, err: i32| {
            let mut m = [tag, 0, 0, 0, 0];
            m[1..].copy_from_slice(&err.to_le_bytes());
            // SAFETY: writing 5 bytes from a local array.
            unsafe { libc::write(swr, m.as_ptr().cast(), 5) };
        };
        // SAFETY: our copy of the write end: EOF then means "tracer gone".
        unsafe { libc::close(go_wr) };
        // Opens as notifications if we can hand the listener over; else
        // (older kernel, a listener already above us, no socket) as stops.
        let mut installed = false;
        if notify && socks[1] >= 0 {
            match seccomp::install_listener(&prog_notify) {
                Ok(lfd) => {
                    if !sys::send_fd(socks[1], lfd) {
                        // The filter is in place and nobody could answer it:
                        // never exec the command like this.
                        // SAFETY: leave before exec.
                        unsafe { libc::_exit(0) };
                    }
                    // SAFETY: our copy; the tracer holds its own.
                    unsafe { libc::close(lfd) };
                    tell(SETUP_NOTIFY, 0);
                    installed = true;
                }
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                    // A tracer above us (a roar run inside a roar run) has a
                    // listener: its filter would answer our opens before ours
                    // could stop them, so stop on every syscall instead (entry
                    // stops come before seccomp). Slower, nothing missed.
                    tell(SETUP_SECCOMP, libc::EBUSY);
                    installed = true;
                }
                Err(_) => {}
            }
        }
        if installed || no_filter.is_some() {
        } else if fault == "seccomp" {
            tell(SETUP_SECCOMP, libc::EINVAL);
        } else if let Err(e) = seccomp::install(&prog) {
            tell(SETUP_SECCOMP, e.raw_os_error().unwrap_or(0));
        }
        default_sigpipe();
        tell(SETUP_READY, 0);
        // Wait until the tracer has seized us (PTRACE_SEIZE, with
        // PTRACE_O_EXITKILL) and says go. EOF: it died before that; with the
        // filter and no tracer, never exec CMD (the execve itself would fail
        // with ENOSYS; do not even try).
        let mut go = 0u8;
        loop {
            // SAFETY: reading one byte into a local.
            let n = unsafe { libc::read(go_rd, (&mut go as *mut u8).cast(), 1) };
            if n == 1 {
                break;
            }
            if n < 0 && sys::errno() == libc::EINTR {
                continue;
            }
            // SAFETY: leave before exec.
            unsafe { libc::_exit(126) };
        }
        // SAFETY: argv is NULL-terminated and outlives the call.
        unsafe { libc::execvp(argv[0], argv.as_ptr()) };
        let e = sys::errno();
        tell(SETUP_EXEC, e);
        // SAFETY: as above.
        unsafe { libc::_exit(if e == libc::ENOENT { 127 } else { 126 }) };
    }
    // SAFETY: our copies of the child's ends.
    unsafe {
        libc::close(swr);
        libc::close(go_rd);
        if socks[1] >= 0 {
            libc::close(socks[1]);
        }
    }
    if c < 0 {
        send(
            wr,
            &format!(
                "F ptrace tracer could not fork ({})\n",
                std::io::Error::last_os_error()
            ),
        );
        std::process::exit(0);
    }
    detach_from_caller(&[wr, srd, socks[0], go_wr]);
    send(wr, &format!("C {c}\n"));

    let setup = read_setup_until_ready(srd);
    // SAFETY: later reads (an exec failure) must not block.
    unsafe { libc::fcntl(srd, libc::F_SETFL, libc::O_NONBLOCK) };
    if !setup.iter().any(|(t, _)| *t == SETUP_READY) {
        // SAFETY: reaping our child, which has exited without running CMD.
        unsafe { libc::waitpid(c, std::ptr::null_mut(), libc::__WALL) };
        send(wr, "F ptrace tracer could not start the command\n");
        std::process::exit(0);
    }
    // The child waits before exec: the command has not run.
    let abort = |why: String| -> ! {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(c, libc::SIGKILL);
            libc::waitpid(c, std::ptr::null_mut(), libc::__WALL);
        }
        send(wr, &format!("F {why}\n"));
        std::process::exit(0);
    };
    let mut all_syscalls = false;
    if let Some(why) = no_filter {
        all_syscalls = true;
        note(
            &args.trace_dir,
            "info",
            &format!("no seccomp filter ({why}): traced every syscall (slower, same records)"),
        );
    } else if let Some((_, e)) = setup.iter().find(|(t, _)| *t == SETUP_SECCOMP) {
        all_syscalls = true;
        note(
            &args.trace_dir,
            "info",
            &format!(
                "seccomp filter refused ({}): traced every syscall (slower, same records)",
                std::io::Error::from_raw_os_error(*e)
            ),
        );
    }
    let mut notify_fd = -1;
    if setup.iter().any(|(t, _)| *t == SETUP_NOTIFY) {
        match sys::recv_fd(socks[0]) {
            Some(fd) => notify_fd = fd,
            None => abort("ptrace tracer could not receive its seccomp listener".into()),
        }
        keep_listener_past_exit(notify_fd);
        if !sys::notif_set_sync(notify_fd) {
            note(
                &args.trace_dir,
                "info",
                "seccomp notifications without same-CPU wake-ups (kernel too old?): slower",
            );
        }
    }
    if socks[0] >= 0 {
        // SAFETY: closing our end of the setup socket.
        unsafe { libc::close(socks[0]) };
    }
    if fault == "die" {
        // Test-only: the tracer killed before PTRACE_O_EXITKILL is set.
        // SAFETY: raising a signal on ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    let seized = if fault == "traceme" {
        Err(std::io::Error::from_raw_os_error(libc::EPERM))
    } else {
        sys::seize(c)
    };
    if let Err(e) = seized {
        abort(format!("ptrace refused ({e})"));
    }
    if all_syscalls {
        // A seized tracee runs on until something stops it; PTRACE_SYSCALL
        // needs a stop to start from (the loop restarts it with that).
        sys::interrupt(c);
    }
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    let mut t = Tracer::new(
        Options {
            trace_dir: args.trace_dir.clone(),
            all_syscalls,
            fault_panic: fault == "panic",
            notify_fd,
            on_job_stop: Box::new(move |stopped| match stopped {
                Some(since) => send(wr, &format!("T {since}\n")),
                None => send(wr, "R\n"),
            }),
            attach: false,
        },
        c,
        me,
    );
    // SAFETY: one byte from a local; then our end is of no more use.
    unsafe {
        libc::write(go_wr, b"g".as_ptr().cast(), 1);
        libc::close(go_wr);
    }
    let dir = args.trace_dir.clone();
    let wait_all = args.wait_all;
    t.run(|t, st, remaining| {
        for (tag, e) in read_setup(srd) {
            if tag == SETUP_EXEC {
                send(wr, &format!("E {e}\n"));
            }
        }
        if let Some(d) = &t.degraded {
            note(&dir, "partial", d);
        }
        if !wait_all {
            // The front exits with CMD's status now; stragglers keep their tracer.
            // SAFETY: prctl takes integers.
            unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, 0, 0, 0, 0) };
        }
        // Everything that has exited is flushed already.
        send(wr, &format!("S {st} {remaining}\n"));
    });
    if let Some(d) = &t.degraded {
        note(&dir, "partial", d);
    }
    if t.write_failed() {
        note(&dir, "partial", "some trace records could not be written");
    }
    std::process::exit(0);
}

/// `--attach PID`: trace a running process from outside, from its next
/// exec on (`roar_events::attach` starts us, from the preload library or
/// `--preload-only`, then waits on `--ready-fd` before that exec). Exits 1 without a byte on the fd if
/// the process cannot be seized; the library then lets it run untraced and
/// notes it, as without us.
///
/// We are not its parent and leave no trace of ourselves in it: no filter
/// and no `PTRACE_O_EXITKILL` (if we die it runs on untraced; the records
/// we held are lost), a stop at every syscall. Its parent learns of its
/// exit when we reap it, after its image was flushed (`PTRACE_O_TRACEEXIT`).
fn attach_process(args: &Args, pid: i32) -> ! {
    let Some(ready) = args.ready_fd else { usage() };
    detach_from_caller(&[ready]);
    let fault = std::env::var("ROAR_PTRACE_FAULT").unwrap_or_default();
    // The real parent, for the headers of the images we record.
    let ppid = sys::tgid_ppid(pid).map_or(0, |(_, p)| p);
    if fault == "attach" || sys::seize_attach(pid).is_err() {
        std::process::exit(1);
    }
    // A seized tracee runs on until something stops it; PTRACE_SYSCALL
    // needs a stop to start from (the loop restarts it with that).
    sys::interrupt(pid);
    let mut t = Tracer::new(
        Options {
            trace_dir: args.trace_dir.clone(),
            all_syscalls: true,
            fault_panic: fault == "panic",
            notify_fd: -1,
            // Its parent, not us, sees it stop (PTRACE_LISTEN keeps it stopped).
            on_job_stop: Box::new(|_| {}),
            attach: true,
        },
        pid,
        ppid,
    );
    // SAFETY: one byte from a static string; then the fd is of no more use.
    unsafe {
        libc::write(ready, b"k".as_ptr().cast(), 1);
        libc::close(ready);
    }
    let dir = args.trace_dir.clone();
    // Descendants that outlive the root are noted at its exit stop (tracer.rs).
    t.run(|t, _, _| {
        if let Some(d) = &t.degraded {
            note(&dir, "partial", d);
        }
    });
    if let Some(d) = &t.degraded {
        note(&dir, "partial", d);
    }
    if t.write_failed() {
        note(&dir, "partial", "some trace records could not be written");
    }
    std::process::exit(0);
}

/// Hold a copy of the seccomp listener in a detached process until this
/// (tracer) process has fully exited.
///
/// If the tracer is killed, the kernel closes its files (`exit_files`)
/// *before* it sends the tracees their `PTRACE_O_EXITKILL` SIGKILL
/// (`exit_notify`). Were the tracer's copy the last one, the listener would
/// go away first and an open in that window would return ENOSYS to a program
/// still running. The keeper waits on a pidfd of the tracer, which becomes
/// readable only once the tracer has exited, i.e. after the SIGKILLs were
/// sent; then it exits and the listener closes. The keeper is a grandchild
/// (its parent exits at once and is reaped here), so the tracer's
/// `waitpid(-1)` loop never sees it.
fn keep_listener_past_exit(listener: i32) {
    // SAFETY: getpid cannot fail.
    let Some(pidfd) = sys::pidfd_open(unsafe { libc::getpid() }) else {
        return; // Linux < 5.3: the window stays
    };
    // SAFETY: fork in a single-threaded process; the children call only
    // async-signal-safe functions and leave with _exit.
    unsafe {
        let k = libc::fork();
        if k == 0 {
            if libc::fork() != 0 {
                libc::_exit(0);
            }
            let (lo, hi) = (listener.min(pidfd), listener.max(pidfd));
            libc::close_range(3, (lo - 1) as u32, 0);
            libc::close_range((lo + 1) as u32, (hi - 1) as u32, 0);
            libc::close_range((hi + 1) as u32, u32::MAX, 0);
            let mut p = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            while libc::poll(&mut p, 1, -1) < 0 && sys::errno() == libc::EINTR {}
            libc::_exit(0);
        }
        if k > 0 {
            libc::waitpid(k, std::ptr::null_mut(), 0);
        }
        libc::close(pidfd);
    }
}

/// The tracer must not hold the caller's terminal, pipes or other fds open
/// (a caller reading CMD's stdout to EOF would otherwise wait for the tracer
/// too), and must not die of the terminal's signals while tracees need it.
fn detach_from_caller(keep: &[i32]) {
    // SAFETY: fd juggling on our own process; /dev/null is always there.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
            if null > 2 {
                libc::close(null);
            }
        }
        // Close everything from 3 up except `keep`.
        let mut keep: Vec<i32> = keep.iter().copied().filter(|&f| f >= 3).collect();
        keep.sort_unstable();
        let mut from = 3;
        for k in keep {
            if k > from {
                libc::close_range(from as u32, (k - 1) as u32, 0);
            }
            from = from.max(k + 1);
        }
        libc::close_range(from as u32, u32::MAX, 0);
        for s in [
            libc::SIGINT,
            libc::SIGQUIT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGPIPE,
            libc::SIGTSTP,
            libc::SIGTTIN,
            libc::SIGTTOU,
        ] {
            libc::signal(s, libc::SIG_IGN);
        }
    }
    // A panic message has nowhere useful to go now; the note says it.
    std::panic::set_hook(Box::new(|_| {}));
}

/// How the tracer will receive opens here (see `want_notify`): install the
/// notification filter in a throw-away child, take its listener, ask for
/// same-CPU wake-ups.
fn probe_notify() -> String {
    if !want_notify("") {
        return "stop the tracee (seccomp notifications need Linux 6.6, or ROAR_PTRACE_NOTIFY=0)"
            .into();
    }
    let prog = seccomp::program(seccomp::OpenAction::Notify);
    let mut socks = [-1i32; 2];
    // SAFETY: valid out-array for two fds.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            socks.as_mut_ptr(),
        )
    } != 0
    {
        return "stop the tracee (no socket to pass a seccomp listener)".into();
    }
    // SAFETY: fork in a single-threaded process.
    let c = unsafe { libc::fork() };
    if c == 0 {
        let ok = seccomp::install_listener(&prog).is_ok_and(|fd| sys::send_fd(socks[1], fd));
        // SAFETY: child; leave at once.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
    }
    let mut st = 0;
    // SAFETY: waiting for our own child; closing our fds.
    unsafe {
        libc::waitpid(c, &mut st, 0);
        libc::close(socks[1]);
    }
    let msg = match sys::recv_fd(socks[0]) {
        Some(fd) => {
            let sync = sys::notif_set_sync(fd);
            // SAFETY: our received copy.
            unsafe { libc::close(fd) };
            if sync {
                "arrive as seccomp notifications (same-CPU wake-ups)".to_string()
            } else {
                "arrive as seccomp notifications (without same-CPU wake-ups)".to_string()
            }
        }
        None => "stop the tracee (seccomp notifications refused here)".to_string(),
    };
    // SAFETY: closing our end.
    unsafe { libc::close(socks[0]) };
    msg
}

/// Check that this host lets us trace (with a seccomp filter if `filter`):
/// fork a child that installs the filter and makes one traced syscall.
fn probe(filter: bool) -> Result<(), String> {
    let prog = seccomp::program(seccomp::OpenAction::Trace);
    let mut sp = [0i32; 2];
    // SAFETY: valid out-array.
    unsafe { libc::pipe2(sp.as_mut_ptr(), libc::O_CLOEXEC) };
    // SAFETY: fork in a single-threaded process.
    let c = unsafe { libc::fork() };
    if c == 0 {
        // SAFETY: child; raw calls only, then _exit.
        unsafe {
            if libc::ptrace(libc::PTRACE_TRACEME, 0, 0usize, 0usize) != 0 {
                let e = sys::errno().to_le_bytes();
                libc::write(
                    sp[1],
                    [SETUP_PTRACE, e[0], e[1], e[2], e[3]].as_ptr().cast(),
                    5,
                );
                libc::_exit(0);
            }
            if filter {
                if let Err(e) = seccomp::install(&prog) {
                    let e = e.raw_os_error().unwrap_or(0).to_le_bytes();
                    libc::write(
                        sp[1],
                        [SETUP_SECCOMP, e[0], e[1], e[2], e[3]].as_ptr().cast(),
                        5,
                    );
                }
            }
            libc::raise(libc::SIGSTOP);
            libc::syscall(
                libc::SYS_unlinkat,
                libc::AT_FDCWD,
                c"/nonexistent/roar-probe".as_ptr(),
                0,
            );
            libc::_exit(0);
        }
    }
    // SAFETY: closing our write end; non-blocking reads of the setup pipe.
    unsafe {
        libc::close(sp[1]);
        libc::fcntl(sp[0], libc::F_SETFL, libc::O_NONBLOCK);
    }
    if c < 0 {
        return Err(format!("fork failed: {}", std::io::Error::last_os_error()));
    }
    let mut st = 0;
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(c, &mut st, libc::__WALL) };
    let setup = read_setup(sp[0]);
    if let Some((_, e)) = setup.iter().find(|(t, _)| *t == SETUP_PTRACE) {
        return Err(format!(
            "ptrace refused ({})",
            std::io::Error::from_raw_os_error(*e)
        ));
    }
    let kill = || {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(c, libc::SIGKILL);
            libc::waitpid(c, std::ptr::null_mut(), libc::__WALL);
        }
    };
    if let Some((_, e)) = setup.iter().find(|(t, _)| *t == SETUP_SECCOMP) {
        kill();
        return Err(format!(
            "seccomp filter refused ({}); ptrace would trace every syscall",
            std::io::Error::from_raw_os_error(*e)
        ));
    }
    if !libc::WIFSTOPPED(st) {
        return Err("probe child did not stop".into());
    }
    if let Err(e) = sys::set_options(c) {
        kill();
        return Err(format!("ptrace options refused ({e})"));
    }
    let how = if filter {
        sys::Resume::Cont
    } else {
        sys::Resume::Syscall
    };
    sys::resume(c, how, 0);
    // SAFETY: waiting for our child.
    unsafe { libc::waitpid(c, &mut st, libc::__WALL) };
    let ok = libc::WIFSTOPPED(st)
        && if filter {
            (st >> 16) == libc::PTRACE_EVENT_SECCOMP
        } else {
            libc::WSTOPSIG(st) == libc::SIGTRAP | 0x80
        };
    if libc::WIFSTOPPED(st) {
        sys::resume(c, sys::Resume::Cont, 0);
        // SAFETY: as above.
        unsafe { libc::waitpid(c, &mut st, libc::__WALL) };
    }
    if ok {
        Ok(())
    } else if filter {
        Err("seccomp stops were not delivered to the tracer".into())
    } else {
        Err("syscall stops were not delivered to the tracer".into())
    }
}
