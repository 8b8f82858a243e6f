//! Hooks that start programs: the exec family and posix_spawn*.
//!
//! Responsible for (1) recording X for the program actually executed,
//! (2) flushing before an exec replaces our image (the new image starts its
//! own trace file), and (3) making sure the child's environment carries
//! `LD_PRELOAD=<this library>` and `ROAR_TRACE_DIR=<current dir>` even when
//! the caller built a fresh or cleared environment (`env -i`, launchers,
//! `subprocess.Popen(env={...})`). Only a *copy* of envp is ever modified;
//! while dormant envp is passed through untouched.
//!
//! The variadic `execl`, `execlp`, `execle` are defined in `csrc/exec_shim.c`
//! (stable Rust cannot define C-variadic functions); see `lib.rs` for the
//! trampolines that export them.

use std::ffi::{CStr, CString};

use libc::{c_char, c_int, c_void, pid_t};

use crate::hooks::{cbytes, enosys};
use crate::real;
use crate::state::{tracing, with_state, ErrnoGuard};

extern "C" {
    static mut environ: *const *const c_char;
}

/// A rewritten environment: owns the added strings and the pointer array.
pub struct FixedEnv {
    _owned: Vec<CString>,
    ptrs: Vec<*const c_char>,
}

impl FixedEnv {
    /// The NULL-terminated `envp` to pass to the real call.
    pub fn as_ptr(&self) -> *const *const c_char {
        self.ptrs.as_ptr()
    }
}

const PRELOAD_KEY: &[u8] = b"LD_PRELOAD=";
const DIR_KEY: &[u8] = b"ROAR_TRACE_DIR=";
const LIB_BASENAME: &[u8] = b"libroar_preload.so";

fn preload_has(value: &[u8], lib: &[u8]) -> bool {
    // ld.so accepts ':' and ' ' as separators. Matching the basename as well
    // avoids loading a second copy of the tracer when the program's
    // LD_PRELOAD names the same library through another path (a symlink,
    // a relative path).
    value
        .split(|&b| b == b':' || b == b' ')
        .any(|e| e == lib || e.rsplit(|&b| b == b'/').next() == Some(LIB_BASENAME))
}

/// Return a copy of `envp` with our two variables set, or `None` if `envp`
/// already has them (then the caller passes the original through).
///
/// # Safety
/// `envp` must be NULL or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn fix_env(envp: *const *const c_char, dir: &[u8], lib: &[u8]) -> Option<FixedEnv> {
    let mut ptrs: Vec<*const c_char> = Vec::new();
    let mut preload_at = None;
    let mut dir_at = None;
    let mut preload_ok = false;
    let mut dir_ok = false;
    if !envp.is_null() {
        let mut i = 0;
        loop {
            let p = *envp.add(i);
            if p.is_null() {
                break;
            }
            let e = CStr::from_ptr(p).to_bytes();
            // First occurrence wins, as with getenv() and ld.so.
            if preload_at.is_none() && e.starts_with(PRELOAD_KEY) {
                preload_at = Some(ptrs.len());
                preload_ok = preload_has(&e[PRELOAD_KEY.len()..], lib);
            } else if dir_at.is_none() && e.starts_with(DIR_KEY) {
                dir_at = Some(ptrs.len());
                dir_ok = &e[DIR_KEY.len()..] == dir;
            }
            ptrs.push(p);
            i += 1;
        }
    }
    if preload_ok && dir_ok {
        return None;
    }
    let mut owned = Vec::with_capacity(2);
    if !preload_ok {
        let mut v = PRELOAD_KEY.to_vec();
        v.extend_from_slice(lib);
        if let Some(i) = preload_at {
            // Keep the program's own preloads, after ours.
            let old = &CStr::from_ptr(ptrs[i]).to_bytes()[PRELOAD_KEY.len()..];
            if !old.is_empty() {
                v.push(b':');
                v.extend_from_slice(old);
            }
        }
        let c = CString::new(v).ok()?;
        match preload_at {
            Some(i) => ptrs[i] = c.as_ptr(),
            None => ptrs.push(c.as_ptr()),
        }
        owned.push(c);
    }
    if !dir_ok {
        let mut v = DIR_KEY.to_vec();
        v.extend_from_slice(dir);
        let c = CString::new(v).ok()?;
        match dir_at {
            Some(i) => ptrs[i] = c.as_ptr(),
            None => ptrs.push(c.as_ptr()),
        }
        owned.push(c);
    }
    ptrs.push(std::ptr::null());
    Some(FixedEnv {
        _owned: owned,
        ptrs,
    })
}

/// Whether `p` names an executable regular file (what execve would accept).
fn executable(p: &CStr) -> bool {
    // SAFETY: valid C string; access/stat are not hooked.
    unsafe {
        if libc::access(p.as_ptr(), libc::X_OK) != 0 {
            return false;
        }
        let mut st: libc::stat = std::mem::zeroed();
        libc::stat(p.as_ptr(), &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG
    }
}

/// The file execvp/posix_spawnp would run for `file`: itself if it contains
/// a '/', else the first executable `dir/file` along PATH (glibc's default
/// "/bin:/usr/bin" when PATH is unset; an empty entry means the cwd). PATH is
/// read from the caller's environment, as glibc does, not from envp.
fn search_path(file: &[u8]) -> Option<Vec<u8>> {
    if file.is_empty() {
        return None;
    }
    if file.contains(&b'/') {
        let c = CString::new(file).ok()?;
        return executable(&c).then(|| file.to_vec());
    }
    // SAFETY: getenv on a literal key.
    let path = unsafe { libc::getenv(c"PATH".as_ptr()) };
    let path: &[u8] = if path.is_null() {
        b"/bin:/usr/bin"
    } else {
        // SAFETY: getenv returns a NUL-terminated string.
        unsafe { CStr::from_ptr(path).to_bytes() }
    };
    for dir in path.split(|&b| b == b':') {
        let mut cand = Vec::with_capacity(dir.len() + file.len() + 2);
        cand.extend_from_slice(if dir.is_empty() { b"." } else { dir });
        cand.push(b'/');
        cand.extend_from_slice(file);
        if let Ok(c) = CString::new(cand) {
            if executable(&c) {
                return Some(c.into_bytes());
            }
        }
    }
    None
}

/// Shared work before a program starts: record X for `resolved` (if any),
/// optionally flush (exec: our image is about to be replaced), and compute
/// the environment to pass. Never panics across the boundary; errno is
/// preserved.
///
/// # Safety
/// `envp` as in [`fix_env`].
unsafe fn prepare(
    resolved: Option<&[u8]>,
    record_now: bool,
    flush: bool,
    envp: *const *const c_char,
) -> Option<FixedEnv> {
    let _errno = ErrnoGuard::save();
    let dir = with_state(|st| {
        if !st.active {
            return None;
        }
        if record_now {
            if let Some(p) = resolved {
                st.on_exec(p);
            }
        }
        if flush {
            st.flush();
        }
        Some(st.dir.clone())
    })
    .flatten()?;
    let lib = crate::library_path()?;
    std::panic::catch_unwind(|| fix_env(envp, &dir, lib)).ok().flatten()
}

/// Record X after a successful spawn (posix_spawn does not replace us).
fn record_spawned(resolved: &[u8]) {
    let _errno = ErrnoGuard::save();
    with_state(|st| st.on_exec(resolved));
}


/// Resolve the program of an execve-style call (path used as is).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
unsafe fn exec_target(path: *const c_char) -> Option<Vec<u8>> {
    if path.is_null() {
        return None;
    }
    let c = CStr::from_ptr(path);
    // Only record programs that exist and are executable: shells try every
    // PATH entry with execve and most attempts fail.
    executable(c).then(|| c.to_bytes().to_vec())
}

/// Body of the `execve` hook, also used by the C shim for execl/execle.
///
/// # Safety
/// Same contract as libc `execve`.
#[no_mangle]
pub unsafe extern "C" fn roar_internal_execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(real) = real::real_execve() else {
        return enosys();
    };
    let Some(_g) = tracing() else {
        return real(path, argv, envp);
    };
    let target = exec_target(path);
    let fixed = prepare(target.as_deref(), true, true, envp);
    real(path, argv, fixed.as_ref().map_or(envp, |f| f.as_ptr()))
}

/// Body of the `execvpe` hook, also used by the C shim for execlp.
///
/// # Safety
/// Same contract as libc `execvpe`.
#[no_mangle]
pub unsafe extern "C" fn roar_internal_execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(real) = real::real_execvpe() else {
        return enosys();
    };
    let Some(_g) = tracing() else {
        return real(file, argv, envp);
    };
    let target = search_path(cbytes(file));
    let fixed = prepare(target.as_deref(), true, true, envp);
    real(file, argv, fixed.as_ref().map_or(envp, |f| f.as_ptr()))
}

/// Hook: `execve(2)`.
///
/// # Safety
/// Same contract as libc `execve`.
#[no_mangle]
pub unsafe extern "C" fn execve(
    path: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    roar_internal_execve(path, argv, envp)
}

/// Hook: `execv(3)` (= execve with the current environ).
///
/// # Safety
/// Same contract as libc `execv`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    let Some(real) = real::real_execv() else {
        return enosys();
    };
    if tracing().is_none() {
        return real(path, argv);
    }
    roar_internal_execve(path, argv, environ)
}

/// Hook: `execvp(3)` (= execvpe with the current environ).
///
/// # Safety
/// Same contract as libc `execvp`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    let Some(real) = real::real_execvp() else {
        return enosys();
    };
    if tracing().is_none() {
        return real(file, argv);
    }
    roar_internal_execvpe(file, argv, environ)
}

/// Hook: `execvpe(3)`.
///
/// # Safety
/// Same contract as libc `execvpe`.
#[no_mangle]
pub unsafe extern "C" fn execvpe(
    file: *const c_char,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    roar_internal_execvpe(file, argv, envp)
}

/// Shared body of posix_spawn/posix_spawnp (`search`: PATH lookup for X).
///
/// # Safety
/// Same contract as libc `posix_spawn`.
#[allow(clippy::too_many_arguments)] // mirrors the C signature plus two.
unsafe fn spawn_common(
    real: real::PosixSpawnFn,
    search: bool,
    pid: *mut pid_t,
    path: *const c_char,
    file_actions: *const c_void,
    attrp: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(_g) = tracing() else {
        return real(pid, path, file_actions, attrp, argv, envp);
    };
    let target = if search {
        search_path(cbytes(path))
    } else {
        exec_target(path)
    };
    let fixed = prepare(None, false, false, envp);
    let r = real(
        pid,
        path,
        file_actions,
        attrp,
        argv,
        fixed.as_ref().map_or(envp, |f| f.as_ptr()),
    );
    if r == 0 {
        if let Some(t) = target {
            record_spawned(&t);
        }
    }
    r
}

/// Hook: `posix_spawn(3)`.
///
/// # Safety
/// Same contract as libc `posix_spawn`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn(
    pid: *mut pid_t,
    path: *const c_char,
    file_actions: *const c_void,
    attrp: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(real) = real::real_posix_spawn() else {
        return libc::ENOSYS;
    };
    spawn_common(real, false, pid, path, file_actions, attrp, argv, envp)
}

/// Hook: `posix_spawnp(3)`.
///
/// # Safety
/// Same contract as libc `posix_spawnp`.
#[no_mangle]
pub unsafe extern "C" fn posix_spawnp(
    pid: *mut pid_t,
    file: *const c_char,
    file_actions: *const c_void,
    attrp: *const c_void,
    argv: *const *const c_char,
    envp: *const *const c_char,
) -> c_int {
    let Some(real) = real::real_posix_spawnp() else {
        return libc::ENOSYS;
    };
    spawn_common(real, true, pid, file, file_actions, attrp, argv, envp)
}

