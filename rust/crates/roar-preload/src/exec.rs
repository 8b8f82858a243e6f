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
//! It also says what it knows it will not see (4): a static executable (no
//! loader, so no LD_PRELOAD) or a setuid/setgid one (the loader ignores
//! LD_PRELOAD in secure mode), started by this process, gets an `N` record
//! (`static` / `setuid`, with this program's path) so the job is marked
//! partial with the reason instead of silently missing its file I/O.
//! Before a process execs a static program, the ptrace tracer is asked to
//! follow it (attach.rs); the `static` note is written only if it cannot.
//!
//! The variadic `execl`, `execlp`, `execle` are defined in `csrc/exec_shim.c`
//! (stable Rust cannot define C-variadic functions); see `lib.rs` for the
//! trampolines that export them.

use std::ffi::{CStr, CString};

use libc::{c_char, c_int, c_void, pid_t};

use roar_events::{preload_var, Op};

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

/// Return a copy of `envp` with our two variables set, or `None` if `envp`
/// already has them (then the caller passes the original through).
///
/// # Safety
/// `envp` must be NULL or a NULL-terminated array of NUL-terminated strings.
pub unsafe fn fix_env(envp: *const *const c_char, dir: &[u8], lib: &[u8]) -> Option<FixedEnv> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
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
                    preload_ok = preload_var::is_composed(&e[PRELOAD_KEY.len()..], lib);
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
            // Ours first, the program's own preloads after it (one rule: preload_var).
            let old = match preload_at {
                Some(i) => &CStr::from_ptr(ptrs[i]).to_bytes()[PRELOAD_KEY.len()..],
                None => b"",
            };
            v.extend_from_slice(&preload_var::compose(lib, old));
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

/// The first 4 KiB of `path` and its stat, read with raw syscalls (they
/// bypass our own hooks and leave errno to the caller's guard).
fn read_head(path: &CStr) -> Option<(Vec<u8>, libc::stat)> {
    // SAFETY: NUL-terminated path; flags without O_CREAT need no mode.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path.as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    } as c_int;
    if fd < 0 {
        return None;
    }
    let mut head = vec![0u8; 4096];
    // SAFETY: buffer of head.len() bytes; zeroed stat is a valid out-buffer.
    let (n, st) = unsafe {
        let n = libc::syscall(libc::SYS_read, fd, head.as_mut_ptr(), head.len());
        let mut st: libc::stat = std::mem::zeroed();
        let r = libc::syscall(libc::SYS_fstat, fd, &mut st);
        libc::syscall(libc::SYS_close, fd);
        (if r == 0 { n } else { -1 }, st)
    };
    if n < 0 {
        return None;
    }
    head.truncate(n as usize);
    Some((head, st))
}

/// Whether `path` carries file capabilities (`security.capability`).
fn has_file_caps(path: &[u8]) -> bool {
    let Ok(c) = CString::new(path) else {
        return true; // cannot tell: do not attach
    };
    // SAFETY: NUL-terminated strings; a NULL buffer of size 0 only asks for the size.
    unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        ) >= 0
    }
}

/// Why the program at `path` will run untraced, if it will: `static` (no
/// loader) or `setuid` (the loader ignores LD_PRELOAD in secure mode). A
/// `#!` script is judged by its interpreter (one level, as the kernel does
/// for the common case).
fn untraced_kind(path: &[u8]) -> Option<&'static [u8]> {
    let c = CString::new(path).ok()?;
    let (head, st) = read_head(&c)?;
    // SAFETY: plain getters.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if (st.st_mode & libc::S_ISUID != 0 && st.st_uid != euid)
        || (st.st_mode & libc::S_ISGID != 0 && st.st_gid != egid)
    {
        return Some(b"setuid");
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|&b| b == b'\n').next()?;
        let interp = line
            .split(|&b| b == b' ' || b == b'\t')
            .find(|w| !w.is_empty())?;
        let c = CString::new(interp).ok()?;
        let (ihead, _) = read_head(&c)?;
        return (roar_events::attach::elf_is_static(&ihead) == Some(true)).then_some(b"static");
    }
    (roar_events::attach::elf_is_static(&head) == Some(true)).then_some(b"static")
}

/// The note for starting `target`, if it will run untraced: `kind` and the
/// path of this program (`static /usr/bin/dash`), so the job can say which
/// program started it.
fn untraced_note(target: &[u8]) -> Option<Vec<u8>> {
    let kind = untraced_kind(target)?;
    let mut what = kind.to_vec();
    let mut exe = [0u8; 4096];
    // SAFETY: NUL-terminated link name; buffer of exe.len() bytes.
    let n = unsafe {
        libc::readlink(
            c"/proc/self/exe".as_ptr(),
            exe.as_mut_ptr().cast(),
            exe.len(),
        )
    };
    if n > 0 {
        what.push(b' ');
        what.extend_from_slice(&exe[..n as usize]);
    }
    Some(what)
}

/// Shared work before a program starts: record X for `resolved` (if any),
/// optionally flush (exec: our image is about to be replaced), and compute
/// the environment to pass. Never panics across the boundary; errno is
/// preserved. `attached`: set when a static `resolved` was handed to the
/// ptrace tracer (the caller must then exec exactly `resolved`).
///
/// # Safety
/// `envp` as in [`fix_env`].
unsafe fn prepare(
    resolved: Option<&[u8]>,
    record_now: bool,
    flush: bool,
    envp: *const *const c_char,
    attached: &mut bool,
) -> Option<FixedEnv> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let _errno = ErrnoGuard::save();
        // No panic may cross the C boundary (with_state catches its own).
        let mut note = if record_now {
            resolved.and_then(|p| std::panic::catch_unwind(|| untraced_note(p)).ok().flatten())
        } else {
            None
        };
        // A static program about to replace us: have the ptrace tracer
        // follow it from its exec on (attach.rs); the note stays only if
        // that cannot be done.
        // Not a program with file capabilities: traced by a tracer without
        // CAP_SYS_PTRACE, the kernel would run it without them.
        if flush
            && note.as_deref().is_some_and(|n| n.starts_with(b"static "))
            && !resolved.is_some_and(has_file_caps)
        {
            let dir = with_state(|st| st.active.then(|| st.file.dir.clone())).flatten();
            if let Some(dir) = dir {
                if std::panic::catch_unwind(|| crate::attach::attach_tracer(&dir)).unwrap_or(false)
                {
                    note = None;
                    *attached = true;
                }
            }
        }
        let dir = with_state(|st| {
            if !st.active {
                return None;
            }
            if record_now {
                if let Some(p) = resolved {
                    st.on_exec(p);
                    if let Some(what) = &note {
                        st.on_note(p, true, what);
                    }
                }
            }
            if flush {
                st.flush();
            }
            Some(st.file.dir.clone())
        })
        .flatten()?;
        let lib = crate::library_path()?;
        std::panic::catch_unwind(|| fix_env(envp, &dir, lib))
            .ok()
            .flatten()
    }
}

/// Record X after a successful spawn (posix_spawn does not replace us).
fn record_spawned(resolved: &[u8]) {
    let _errno = ErrnoGuard::save();
    let note = std::panic::catch_unwind(|| untraced_note(resolved))
        .ok()
        .flatten();
    with_state(|st| {
        st.on_exec(resolved);
        if let Some(what) = &note {
            st.on_note(resolved, true, what);
        }
    });
}

/// Resolve the program of an execve-style call (path used as is).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
unsafe fn exec_target(path: *const c_char) -> Option<Vec<u8>> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if path.is_null() {
            return None;
        }
        let c = CStr::from_ptr(path);
        // Only record programs that exist and are executable: shells try every
        // PATH entry with execve and most attempts fail.
        executable(c).then(|| c.to_bytes().to_vec())
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_execve() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(path, argv, envp);
        };
        let target = exec_target(path);
        let fixed = prepare(target.as_deref(), true, true, envp, &mut false);
        real(path, argv, fixed.as_ref().map_or(envp, |f| f.as_ptr()))
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_execvpe() else {
            return enosys();
        };
        let Some(_g) = tracing() else {
            return real(file, argv, envp);
        };
        let target = search_path(cbytes(file));
        let mut attached = false;
        let fixed = prepare(target.as_deref(), true, true, envp, &mut attached);
        let env = fixed.as_ref().map_or(envp, |f| f.as_ptr());
        if attached {
            // The file found, exec'd directly: execvpe's failed attempts along
            // PATH would look to the tracer like the exec it waits for failing.
            if let (Some(t), Some(exe)) = (
                target.and_then(|t| CString::new(t).ok()),
                real::real_execve(),
            ) {
                return exe(t.as_ptr(), argv, env);
            }
        }
        real(file, argv, env)
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { roar_internal_execve(path, argv, envp) }
}

/// Hook: `execv(3)` (= execve with the current environ).
///
/// # Safety
/// Same contract as libc `execv`.
#[no_mangle]
pub unsafe extern "C" fn execv(path: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_execv() else {
            return enosys();
        };
        if tracing().is_none() {
            return real(path, argv);
        }
        roar_internal_execve(path, argv, environ)
    }
}

/// Hook: `execvp(3)` (= execvpe with the current environ).
///
/// # Safety
/// Same contract as libc `execvp`.
#[no_mangle]
pub unsafe extern "C" fn execvp(file: *const c_char, argv: *const *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_execvp() else {
            return enosys();
        };
        if tracing().is_none() {
            return real(file, argv);
        }
        roar_internal_execvpe(file, argv, environ)
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { roar_internal_execvpe(file, argv, envp) }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(_g) = tracing() else {
            return real(pid, path, file_actions, attrp, argv, envp);
        };
        let target = if search {
            search_path(cbytes(path))
        } else {
            exec_target(path)
        };
        let fixed = prepare(None, false, false, envp, &mut false);
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
            let _ = std::panic::catch_unwind(|| spawn_record_opens(file_actions));
        }
        r
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_posix_spawn() else {
            return libc::ENOSYS;
        };
        spawn_common(real, false, pid, path, file_actions, attrp, argv, envp)
    }
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
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_posix_spawnp() else {
            return libc::ENOSYS;
        };
        spawn_common(real, true, pid, file, file_actions, attrp, argv, envp)
    }
}

// ---- posix_spawn file actions ----------------------------------------------
//
// `posix_spawn_file_actions_addopen` makes libc open a file *in the child*,
// between clone and exec, inside libc: no hook of ours runs there, and the
// child's own image starts after the open. So the actions are remembered here
// (by the address of the actions object, in order, while tracing) and, once a
// posix_spawn with that object succeeded (which means every action did), its
// opens are recorded by the parent as if it had made them, relative to the
// directory the child had at that point (`addchdir_np`). After an
// `addfchdir_np` that directory is unknown: a relative open is then a note,
// never a guessed path. glibc's struct is opaque, so it is not parsed.

// The table lives in the tracer state (`State::spawn_actions`), under the
// state lock, which fork already handles (a child never inherits it held).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::state::HookGuard;

/// One remembered file action.
#[derive(Clone)]
pub enum SpawnAction {
    /// `addopen(path, flags)`.
    Open(Vec<u8>, c_int),
    /// `addchdir_np(path)`.
    Chdir(Vec<u8>),
    /// `addfchdir_np(fd)`: the directory is unknown from here on.
    Fchdir,
}

/// Whether the table may hold anything: init/destroy while dormant cost one
/// load when it is empty.
static SPAWN_ANY: AtomicBool = AtomicBool::new(false);

fn spawn_forget(fa: *const c_void) {
    if !SPAWN_ANY.load(Ordering::Relaxed) {
        return;
    }
    let Some(_g) = HookGuard::enter() else { return };
    let _errno = ErrnoGuard::save();
    with_state(|st| {
        st.spawn_actions.retain(|(k, _)| *k != fa as usize);
        SPAWN_ANY.store(!st.spawn_actions.is_empty(), Ordering::Relaxed);
    });
}

/// Caller holds a [`HookGuard`] (the add* hooks run under `tracing()`).
fn spawn_remember(fa: *const c_void, a: SpawnAction) {
    let _errno = ErrnoGuard::save();
    with_state(|st| {
        match st.spawn_actions.iter_mut().find(|(k, _)| *k == fa as usize) {
            Some((_, v)) => v.push(a),
            None => st.spawn_actions.push((fa as usize, vec![a])),
        }
        SPAWN_ANY.store(true, Ordering::Relaxed);
    });
}

/// Record the opens of `fa` after a successful spawn (see the section
/// comment). Caller holds a [`HookGuard`].
fn spawn_record_opens(fa: *const c_void) {
    if fa.is_null() || !SPAWN_ANY.load(Ordering::Relaxed) {
        return;
    }
    let _errno = ErrnoGuard::save();
    let found = with_state(|st| {
        st.spawn_actions
            .iter()
            .find(|(k, _)| *k == fa as usize)
            .map(|(_, v)| v.clone())
    });
    let Some(Some(actions)) = found else {
        return;
    };
    // The child's directory: None = ours (AT_FDCWD), Some(Some(abs)), Some(None) = unknown.
    let mut dir: Option<Option<Vec<u8>>> = None;
    for a in &actions {
        match a {
            SpawnAction::Chdir(p) => {
                let base = match &dir {
                    None => cwd(),
                    Some(d) => d.clone(),
                };
                dir = Some(base.map(|b| roar_events::normalize(&b, p)));
            }
            SpawnAction::Fchdir => dir = Some(None),
            SpawnAction::Open(p, flags) => {
                let Some(op) = roar_events::classify_open_flags(*flags) else {
                    continue;
                };
                let path = match (&dir, p.first() == Some(&b'/')) {
                    (_, true) | (None, false) => p.clone(),
                    (Some(Some(b)), false) => roar_events::normalize(b, p),
                    (Some(None), false) => {
                        with_state(|st| st.on_note(p, false, b"spawn open-after-fchdir"));
                        continue;
                    }
                };
                let Ok(c) = CString::new(path) else { continue };
                // An O_PATH descriptor lets on_open check the type, size and
                // mtime exactly as for an open of our own.
                // SAFETY: NUL-terminated path.
                let fd = unsafe {
                    libc::syscall(
                        libc::SYS_openat,
                        libc::AT_FDCWD,
                        c.as_ptr(),
                        libc::O_PATH | libc::O_CLOEXEC,
                    )
                } as c_int;
                if fd < 0 && op != Op::Write {
                    continue; // gone already: cannot tell what was read
                }
                with_state(|st| st.on_open(op, libc::AT_FDCWD, c.to_bytes(), fd));
                if fd >= 0 {
                    // SAFETY: closing the descriptor opened above.
                    unsafe { libc::syscall(libc::SYS_close, fd) };
                }
            }
        }
    }
}

/// The current directory (None if it cannot be named).
fn cwd() -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: buffer of buf.len() bytes; getcwd NUL-terminates.
    let r = unsafe { libc::getcwd(buf.as_mut_ptr().cast(), buf.len()) };
    if r.is_null() || buf[0] != b'/' {
        return None;
    }
    let n = buf.iter().position(|&b| b == 0)?;
    buf.truncate(n);
    Some(buf)
}

/// Hook: `posix_spawn_file_actions_init(3)`: a fresh object at this address
/// has no remembered actions.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_init(fa: *mut c_void) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_spawn_fa_init() else {
            return libc::ENOSYS;
        };
        spawn_forget(fa);
        real(fa)
    }
}

/// Hook: `posix_spawn_file_actions_destroy(3)`.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_destroy(fa: *mut c_void) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_spawn_fa_destroy() else {
            return libc::ENOSYS;
        };
        spawn_forget(fa);
        real(fa)
    }
}

/// Hook: `posix_spawn_file_actions_addopen(3)`: remembered while tracing.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_addopen(
    fa: *mut c_void,
    fd: c_int,
    path: *const c_char,
    oflag: c_int,
    mode: libc::mode_t,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_spawn_fa_addopen() else {
            return libc::ENOSYS;
        };
        let Some(_g) = tracing() else {
            return real(fa, fd, path, oflag, mode);
        };
        let r = real(fa, fd, path, oflag, mode);
        if r == 0 && !path.is_null() {
            let p = cbytes(path).to_vec();
            let _ = std::panic::catch_unwind(|| spawn_remember(fa, SpawnAction::Open(p, oflag)));
        }
        r
    }
}

/// Hook: `posix_spawn_file_actions_addchdir_np(3)`.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_addchdir_np(
    fa: *mut c_void,
    path: *const c_char,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_spawn_fa_addchdir() else {
            return libc::ENOSYS;
        };
        let Some(_g) = tracing() else {
            return real(fa, path);
        };
        let r = real(fa, path);
        if r == 0 && !path.is_null() {
            let p = cbytes(path).to_vec();
            let _ = std::panic::catch_unwind(|| spawn_remember(fa, SpawnAction::Chdir(p)));
        }
        r
    }
}

/// Hook: `posix_spawn_file_actions_addfchdir_np(3)`.
///
/// # Safety
/// Same contract as the libc function.
#[no_mangle]
pub unsafe extern "C" fn posix_spawn_file_actions_addfchdir_np(
    fa: *mut c_void,
    fd: c_int,
) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(real) = real::real_spawn_fa_addfchdir() else {
            return libc::ENOSYS;
        };
        let Some(_g) = tracing() else {
            return real(fa, fd);
        };
        let r = real(fa, fd);
        if r == 0 {
            let _ = std::panic::catch_unwind(|| spawn_remember(fa, SpawnAction::Fchdir));
        }
        r
    }
}
