//! roar-preload: the LD_PRELOAD file-I/O tracer of roar-nb.
//!
//! Loaded into every process of a traced job (via `LD_PRELOAD`), it hooks the
//! libc functions that *name* files (open, fopen, rename, unlink, exec...),
//! classifies each successful call at open time (R/W/U from the flags),
//! deduplicates per process, buffers records in memory and flushes them in
//! batches to `<ROAR_TRACE_DIR>/<pid>-<t0_ns>.ev` in the wire format of the
//! `roar-events` crate (`rust/EVENTS.md`).
//!
//! What it must never do: change the behaviour of the traced program. Every
//! hook calls the real function and returns its result and errno unchanged;
//! no panic crosses the C boundary (caught, tracing switches itself off);
//! the one descriptor kept open (the trace file, at a high number) is never
//! written once the program closed or replaced it; nothing is hooked on
//! read/write, and close/dup2/dup3/close_range/closefrom only to protect that
//! descriptor ([`fds`]).
//!
//! Activation: if `ROAR_CONTROL` names a host's control block, the library
//! follows it (records while the host runs a job, into that job's directory).
//! Else if `ROAR_TRACE_DIR` is set and non-empty when the library is
//! loaded, tracing starts at once. Otherwise the library is *dormant*: each
//! hook costs two relaxed atomic loads (no control block followed; not
//! active) before calling the real function, until a host (a Jupyter kernel
//! via ctypes) calls [`roar_begin`].
//!
//! What is recorded (dedupe, forget, ignore and flush rules) is decided by
//! the recording core shared with the ptrace tracer (`roar-record`); this
//! crate is its adapter inside the traced process.
//!
//! Module map: [`real`] (dlsym cache), [`lock`] (futex lock), [`state`]
//! (path resolution, the trace file, fork handling; the core's sink),
//! [`hooks`] (file hooks), [`fds`] (close/dup hooks guarding the trace
//! descriptor), [`exec`] (exec/spawn hooks and environment propagation),
//! [`control`] (the control block a host publishes its jobs through, and
//! that its descendants follow).

pub mod attach;
pub mod control;
pub mod exec;
pub mod fault;
pub mod fds;
pub mod hooks;
pub mod lock;
pub mod real;
pub mod state;
pub mod syscall;

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::Ordering;
use std::sync::OnceLock;

use state::{with_state, HookGuard, ACTIVE};

/// Version string returned by [`roar_version`].
const VERSION: &CStr = c"roar-preload 0.1.0 (events v1)";

/// Absolute path of this shared object, found once with dladdr (for the
/// `LD_PRELOAD` value given to children).
static LIB_PATH: OnceLock<Option<CString>> = OnceLock::new();

/// The absolute path of this library, as bytes, if it could be determined.
pub fn library_path() -> Option<&'static [u8]> {
    LIB_PATH
        .get_or_init(|| {
            // SAFETY: dladdr on the address of a function in this object;
            // dli_fname points into the loader's link map, valid while we
            // are loaded (we are never unloaded while running this code).
            unsafe {
                let mut info: libc::Dl_info = std::mem::zeroed();
                if libc::dladdr(roar_version as *const libc::c_void, &mut info) == 0
                    || info.dli_fname.is_null()
                {
                    return None;
                }
                let name = CStr::from_ptr(info.dli_fname).to_bytes();
                // LD_PRELOAD may have named us by a relative path; children
                // may run in another directory, so make it absolute now.
                let abs = if name.first() == Some(&b'/') {
                    roar_events::normalize(b"/", name)
                } else {
                    let mut buf = vec![0u8; 4096];
                    let r = libc::getcwd(buf.as_mut_ptr().cast(), buf.len());
                    if r.is_null() {
                        return None;
                    }
                    let n = libc::strlen(r);
                    roar_events::normalize(&buf[..n], name)
                };
                CString::new(abs).ok()
            }
        })
        .as_ref()
        .map(|c| c.to_bytes())
}

/// `ROAR_DIE_WITH=<pid>`: set by `roar run` in the command's environment so
/// that the command dies with roar (even when roar is SIGKILLed, which would
/// otherwise orphan it). Acted on in the first process image that loads us,
/// and removed from `environ` before `main`, so the program and its children
/// never see it. If roar is already gone (we were reparented), die now.
/// Its presence also says roar started us with posix_spawn (see
/// `default_glibc_internal_signals`).
fn die_with_parent() {
    use roar_events::launch;
    // SAFETY: single-threaded init (the library constructor).
    unsafe {
        if let Some(roar) = launch::take_die_with() {
            launch::default_glibc_internal_signals();
            launch::die_with(roar, libc::SIGKILL);
        }
    }
}

/// Library constructor (`.init_array`): resolve real functions, register
/// fork handlers, start tracing if `ROAR_TRACE_DIR` is set.
extern "C" fn roar_init() {
    let _g = HookGuard::enter();
    let _ = std::panic::catch_unwind(|| {
        die_with_parent();
        // Our panics are caught and turned into "stop tracing"; the default
        // hook would print to the traced program's stderr. This is our own
        // copy of std's hook (a cdylib carries its own std), so the host
        // program's panic hook, if any, is unaffected.
        std::panic::set_hook(Box::new(|_| {}));
        real::resolve_all();
        state::init_fd_floor();
        fault::init_from_env();
        // SAFETY: plain function pointers with static lifetime.
        unsafe {
            libc::pthread_atfork(
                Some(state::atfork_prepare),
                Some(state::atfork_parent),
                Some(state::atfork_child),
            );
        }
        // A host's control block, when there is one, says which job runs now
        // (ROAR_TRACE_DIR names the job of the moment this process started).
        // SAFETY: single-threaded init, HookGuard held.
        if unsafe { control::attach_from_env() } {
            return;
        }
        // SAFETY: getenv on a literal key, during single-threaded init.
        let dir = unsafe { libc::getenv(c"ROAR_TRACE_DIR".as_ptr()) };
        if !dir.is_null() {
            // SAFETY: getenv returns a NUL-terminated string.
            let dir = unsafe { CStr::from_ptr(dir) }.to_bytes();
            if !dir.is_empty() && with_state(|st| st.start(dir)) == Some(true) {
                ACTIVE.store(true, Ordering::Relaxed);
            }
        }
    });
}

/// Library destructor (`.fini_array`): flush at normal exit (exit() or
/// return from main). Records made later (other destructors) are flushed
/// one by one.
extern "C" fn roar_fini() {
    let _g = HookGuard::enter();
    if ACTIVE.load(Ordering::Relaxed) {
        let _ = std::panic::catch_unwind(|| with_state(|st| st.finalize()));
    }
    let _ = std::panic::catch_unwind(control::at_exit);
}

#[used]
#[link_section = ".init_array"]
static INIT: extern "C" fn() = roar_init;

#[used]
#[link_section = ".fini_array"]
static FINI: extern "C" fn() = roar_fini;

/// Environment values replaced by `roar_begin`, restored by `roar_end`.
struct SavedEnv {
    trace_dir: Option<CString>,
    preload: Option<CString>,
}

static SAVED_ENV: std::sync::Mutex<Option<SavedEnv>> = std::sync::Mutex::new(None);

/// Owned copy of an environment variable.
///
/// # Safety
/// Reads `environ`; must not race with setenv in other threads.
unsafe fn getenv_owned(key: &CStr) -> Option<CString> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let v = libc::getenv(key.as_ptr());
        (!v.is_null()).then(|| CStr::from_ptr(v).to_owned())
    }
}

/// Point this process's own environment at the trace: children started
/// through paths we cannot hook (system(), popen(), posix_spawn inside
/// libc) inherit `environ` as is.
///
/// # Safety
/// Calls setenv; must not race with getenv in other threads (same caveat
/// as `os.environ` assignments in Python).
unsafe fn export_env(dir: &[u8]) {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let mut saved = SAVED_ENV.lock().unwrap_or_else(|e| e.into_inner());
        if saved.is_none() {
            *saved = Some(SavedEnv {
                trace_dir: getenv_owned(c"ROAR_TRACE_DIR"),
                preload: getenv_owned(c"LD_PRELOAD"),
            });
        }
        if let Ok(d) = CString::new(dir) {
            libc::setenv(c"ROAR_TRACE_DIR".as_ptr(), d.as_ptr(), 1);
        }
        if let Some(lib) = library_path() {
            let cur = getenv_owned(c"LD_PRELOAD");
            let cur = cur.as_ref().map_or(&b""[..], |c| c.to_bytes());
            if !roar_events::preload_var::is_composed(cur, lib) {
                let v = roar_events::preload_var::compose(lib, cur);
                if let Ok(v) = CString::new(v) {
                    libc::setenv(c"LD_PRELOAD".as_ptr(), v.as_ptr(), 1);
                }
            }
        }
    }
}

/// Undo [`export_env`].
///
/// # Safety
/// Calls setenv/unsetenv; must not race with getenv in other threads
/// (same caveat as `os.environ` assignments in Python).
unsafe fn restore_env() {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let mut saved = SAVED_ENV.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = saved.take() {
            for (key, val) in [(c"ROAR_TRACE_DIR", s.trace_dir), (c"LD_PRELOAD", s.preload)] {
                match val {
                    Some(v) => libc::setenv(key.as_ptr(), v.as_ptr(), 1),
                    None => libc::unsetenv(key.as_ptr()),
                };
            }
        }
    }
}

/// Start recording into `trace_dir` (must exist and be a directory; a
/// relative path is resolved against the cwd now). Resets the dedupe set and
/// starts a new trace file `<pid>-<t0>.ev` in that directory, where t0 is the
/// time of this call. If already active, pending records are flushed to the
/// previous directory first. Also sets `ROAR_TRACE_DIR` (and adds this
/// library to `LD_PRELOAD`) in the process environment so that children
/// started by system()/popen() are traced; [`roar_end`] restores both.
/// Returns 0 on success, -1 on error.
///
/// # Safety
/// `trace_dir` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn roar_begin(trace_dir: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let _g = HookGuard::enter();
        let _errno = state::ErrnoGuard::save();
        if trace_dir.is_null() {
            return -1;
        }
        let dir = CStr::from_ptr(trace_dir);
        if dir.to_bytes().is_empty() {
            return -1;
        }
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(dir.as_ptr(), &mut st) != 0 || st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            return -1;
        }
        let started = with_state(|s| {
            if !s.start(dir.to_bytes()) {
                return None;
            }
            // Followers of our control block must be able to go where we go.
            if !control::publish(true, &s.file.dir) {
                s.stop();
                return None;
            }
            Some(s.file.dir.clone())
        })
        .flatten();
        match started {
            Some(abs) => {
                ACTIVE.store(true, Ordering::Relaxed);
                let _ = std::panic::catch_unwind(|| export_env(&abs));
                0
            }
            None => -1,
        }
    }
}

/// Flush pending records, stop recording (the library becomes dormant) and
/// restore the environment changed by [`roar_begin`]. Returns 0.
///
/// # Safety
/// Always safe to call; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn roar_end() -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let _g = HookGuard::enter();
        let _errno = state::ErrnoGuard::save();
        ACTIVE.store(false, Ordering::Relaxed);
        with_state(|st| {
            st.stop();
            control::publish(false, b"");
        });
        let _ = std::panic::catch_unwind(|| restore_env());
        0
    }
}

/// Write pending records to the trace file now. Returns 0 on success (or
/// nothing to do), -1 if records could not be written.
///
/// # Safety
/// Always safe to call; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn roar_flush() -> c_int {
    let _g = HookGuard::enter();
    let _errno = state::ErrnoGuard::save();
    match with_state(|st| st.flush()) {
        Some(true) => 0,
        _ => -1,
    }
}

/// 1 if recording, 0 if dormant.
///
/// # Safety
/// Always safe to call; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn roar_active() -> c_int {
    ACTIVE.load(Ordering::Relaxed) as c_int
}

/// Static version string, e.g. `"roar-preload 0.1.0 (events v1)"`.
///
/// # Safety
/// Always safe to call; the result must not be freed.
#[no_mangle]
pub unsafe extern "C" fn roar_version() -> *const c_char {
    VERSION.as_ptr()
}

/// Absolute path of this library (what children get in `LD_PRELOAD`), or
/// NULL if unknown. Static; must not be freed.
///
/// # Safety
/// Always safe to call; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn roar_library_path() -> *const c_char {
    let _g = HookGuard::enter();
    match library_path() {
        Some(_) => LIB_PATH
            .get()
            .and_then(|o| o.as_ref())
            .map_or(std::ptr::null(), |c| c.as_ptr()),
        None => std::ptr::null(),
    }
}

// ---- execl, execlp, execle: naked trampolines into csrc/exec_shim.c ----
//
// The C implementations are hidden (a Rust cdylib's version script would hide
// them anyway), so the exported symbols are these one-instruction Rust naked
// functions. A plain jump leaves every argument register and the stack exactly
// as the caller set them up, which is what a variadic callee needs.

extern "C" {
    fn roar_shim_execl();
    fn roar_shim_execlp();
    fn roar_shim_execle();
    fn roar_shim_syscall();
}

macro_rules! trampoline {
    ($(#[$m:meta])* $name:ident => $target:ident) => {
        $(#[$m])*
        ///
        /// # Safety
        /// Same contract as the libc function of the same name.
        #[unsafe(naked)]
        #[no_mangle]
        pub unsafe extern "C" fn $name() {
            #[cfg(target_arch = "x86_64")]
            core::arch::naked_asm!("jmp {}", sym $target);
            #[cfg(target_arch = "aarch64")]
            core::arch::naked_asm!("b {}", sym $target);
        }
    };
}

trampoline!(
    /// Hook: `execl(3)` (variadic; implemented in C, see exec_shim.c).
    execl => roar_shim_execl
);
trampoline!(
    /// Hook: `execlp(3)` (variadic; implemented in C, see exec_shim.c).
    execlp => roar_shim_execlp
);
trampoline!(
    /// Hook: `execle(3)` (variadic; implemented in C, see exec_shim.c).
    execle => roar_shim_execle
);
trampoline!(
    /// Hook: `syscall(2)` (variadic; implemented in C, see exec_shim.c and
    /// [`syscall`]).
    syscall => roar_shim_syscall
);
