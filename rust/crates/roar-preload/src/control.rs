//! The control block: one shared page through which a long-lived host (the
//! roar Jupyter kernel; later a Ray worker host) tells every traced process it
//! started, directly or not, which job is running now.
//!
//! Why: an environment variable is frozen when a process starts. A worker
//! created by one cell (a `multiprocessing.Pool`, a forkserver, joblib's loky
//! executor) lives on into later cells, and with only `ROAR_TRACE_DIR` it
//! would keep writing into the first cell's trace directory forever. With the
//! block, the host publishes "job begins, trace dir D" / "no job" and every
//! process of the tree follows on its next hooked call.
//!
//! Layout (`ROAR_CONTROL` names the file; all integers native-endian, i.e.
//! little-endian on the platforms we build for; documented in `rust/EVENTS.md`):
//!
//! ```text
//! off  size  field
//!   0     8  magic      b"ROARCTL1"
//!   8     4  version    1
//!  12     4  size       4096 (bytes of the block)
//!  16     8  seq        even: stable; odd: the host is rewriting the fields below.
//!                       +2 for every begin and every end (the "epoch").
//!  24     4  active     1 while a job runs, 0 between jobs
//!  28     4  dir_len    bytes of dir
//!  32     4  owner_pid  the host process
//!  64  ..4032 dir       absolute trace directory of the running job (no NUL)
//! ```
//!
//! Protocol: a seqlock. The single writer (the host, under its state lock)
//! makes `seq` odd, writes the fields, makes it even again (release). A
//! reader loads `seq` (acquire), copies the fields, loads `seq` again and
//! keeps the copy only if both loads are the same even number.
//!
//! Cost: a follower's hook loads `seq` (one relaxed atomic load of a shared
//! page already in its page tables) and compares it with the last epoch it
//! acted on; only a change takes the slow path ([`follow`]). A process that
//! follows no block pays one load of a null pointer.
//!
//! Followers write every record through at once (not only the ones that
//! change files): a worker idles between cells and nothing would flush its
//! buffered reads before the host reads the job's directory.
//!
//! What it must not do: write to the block unless this process created it
//! ([`roar_control_create`]); block or fail a hook (a block that stays odd is
//! retried on a later call, the process keeps its previous state).

use std::ffi::{c_char, c_int, CStr};
use std::sync::atomic::{fence, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering};

use crate::state::{with_state, ErrnoGuard, HookGuard, State, ACTIVE};

/// `magic` of a control block.
pub const MAGIC: [u8; 8] = *b"ROARCTL1";
/// Layout version described above.
pub const VERSION: u32 = 1;
/// Size of the block (one page).
pub const SIZE: usize = 4096;
const OFF_VERSION: usize = 8;
const OFF_SIZE: usize = 12;
const OFF_SEQ: usize = 16;
const OFF_ACTIVE: usize = 24;
const OFF_DIR_LEN: usize = 28;
const OFF_OWNER: usize = 32;
const OFF_DIR: usize = 64;
/// Longest trace directory the block can carry.
pub const MAX_DIR: usize = SIZE - OFF_DIR;

/// Base of the block this process follows (mapped read-only), or null.
static WATCH: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// Base of the block this process writes (it created it), or null.
static OWNED: AtomicPtr<u8> = AtomicPtr::new(std::ptr::null_mut());
/// The epoch (`seq`) this process last acted on.
static SEEN: AtomicU64 = AtomicU64::new(0);

/// # Safety
/// `base` must point to a mapped block of [`SIZE`] bytes.
unsafe fn seq(base: *mut u8) -> &'static AtomicU64 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { &*(base.add(OFF_SEQ) as *const AtomicU64) }
}

/// # Safety
/// As [`seq`]; `off` 4-aligned and inside the header.
unsafe fn u32_at(base: *mut u8, off: usize) -> &'static AtomicU32 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { &*(base.add(off) as *const AtomicU32) }
}

/// # Safety
/// As [`seq`]; `i < MAX_DIR`.
unsafe fn dir_byte(base: *mut u8, i: usize) -> &'static AtomicU8 {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { &*(base.add(OFF_DIR + i) as *const AtomicU8) }
}

/// Whether this process follows a block whose epoch moved since it last
/// looked: the hot-path check of every hook (see [`crate::state::tracing`]).
#[inline(always)]
pub fn moved() -> bool {
    let b = WATCH.load(Ordering::Relaxed);
    // SAFETY: a non-null WATCH is a live mapping of SIZE bytes (never unmapped).
    !b.is_null() && unsafe { seq(b).load(Ordering::Relaxed) } != SEEN.load(Ordering::Relaxed)
}

/// Whether this process follows a block (its records are written through).
pub fn following() -> bool {
    !WATCH.load(Ordering::Relaxed).is_null()
}

/// A consistent copy of the block's job fields.
struct Snapshot {
    seq: u64,
    active: bool,
    dir: Vec<u8>,
}

/// Read the block with the seqlock protocol; `None` if the writer kept it
/// odd (or changing) through every attempt: the caller retries later.
fn read(b: *mut u8) -> Option<Snapshot> {
    for attempt in 0..200 {
        // SAFETY: `b` is a live mapping (see `moved`).
        let s1 = unsafe { seq(b) }.load(Ordering::Acquire);
        if s1 & 1 == 0 {
            // SAFETY: header fields inside the mapping.
            let active = unsafe { u32_at(b, OFF_ACTIVE) }.load(Ordering::Relaxed) == 1;
            let len =
                (unsafe { u32_at(b, OFF_DIR_LEN) }.load(Ordering::Relaxed) as usize).min(MAX_DIR);
            // SAFETY: i < len <= MAX_DIR.
            let dir: Vec<u8> = (0..len)
                .map(|i| unsafe { dir_byte(b, i) }.load(Ordering::Relaxed))
                .collect();
            fence(Ordering::Acquire);
            // SAFETY: as above.
            if unsafe { seq(b) }.load(Ordering::Relaxed) == s1 {
                return Some(Snapshot {
                    seq: s1,
                    active,
                    dir,
                });
            }
        }
        if attempt < 100 {
            std::hint::spin_loop();
        } else {
            // SAFETY: no arguments; only gives up the CPU.
            unsafe { libc::sched_yield() };
        }
    }
    None
}

/// Bring this process's recording in line with the block: start a new trace
/// file in the job's directory (pending records go to the previous one
/// first), or stop between jobs. Called with the state lock held.
fn sync(st: &mut State) {
    let b = WATCH.load(Ordering::Relaxed);
    if b.is_null() {
        return;
    }
    let Some(snap) = read(b) else { return };
    if snap.seq == SEEN.load(Ordering::Relaxed) {
        return;
    }
    let on = snap.active && !snap.dir.is_empty() && st.start(&snap.dir);
    if !on {
        st.stop();
    }
    ACTIVE.store(on, Ordering::Relaxed);
    SEEN.store(snap.seq, Ordering::Relaxed);
}

/// Slow path of a hook whose block moved: follow it, then let the hook go on
/// (it reads the new ACTIVE). A call nested inside the tracer does nothing;
/// the next hook on this thread will see the change.
#[cold]
#[inline(never)]
pub fn follow() {
    let Some(_g) = HookGuard::enter() else { return };
    let _errno = ErrnoGuard::save();
    with_state(sync);
}

/// `ROAR_CONTROL` value asking the process to be a host from its start (the
/// roar kernelspec sets it): see [`become_host`].
const HOST: &[u8] = b"host";

/// The directory [`become_host`] made (no NUL) and the pid that made
/// it: removed by [`at_exit`] in that process only, never in a fork child.
static HOST_DIR: std::sync::Mutex<Option<(Vec<u8>, u32)>> = std::sync::Mutex::new(None);

/// Path of the block this process hosts (for [`roar_control_path`]).
static OWNED_PATH: std::sync::Mutex<Option<std::ffi::CString>> = std::sync::Mutex::new(None);

/// Library constructor: act on `ROAR_CONTROL`. `host`: become a host now
/// ([`become_host`]). A path: map that block read-only and follow it from
/// now on; returns true, and the caller ignores `ROAR_TRACE_DIR`. False (nothing
/// followed) if unset, or if the file is missing, too small or not a block of
/// this version: the caller falls back to `ROAR_TRACE_DIR`.
///
/// # Safety
/// Single-threaded init, with a [`HookGuard`] held.
pub unsafe fn attach_from_env() -> bool {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let p = libc::getenv(c"ROAR_CONTROL".as_ptr());
        if p.is_null() || *p == 0 {
            return false;
        }
        if CStr::from_ptr(p).to_bytes() == HOST {
            become_host();
            return false;
        }
        let Some(b) = map(p, false) else { return false };
        WATCH.store(b, Ordering::Relaxed);
        SEEN.store(u64::MAX, Ordering::Relaxed); // never a real (even) epoch: sync now
        with_state(|st| {
            st.set_follower(true);
            sync(st);
        });
        true
    }
}

/// Open and map `path`. `create`: a new file (O_EXCL, 0600), sized and
/// initialised, mapped read-write; else an existing block, read-only, whose
/// magic, version and size are checked.
///
/// # Safety
/// `path` must be a NUL-terminated string.
unsafe fn map(path: *const c_char, create: bool) -> Option<*mut u8> {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let flags = if create {
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC
        } else {
            libc::O_RDONLY | libc::O_CLOEXEC
        };
        // Raw syscalls: our own hooks must not see the block as the program's I/O.
        let fd = libc::syscall(
            libc::SYS_openat,
            libc::AT_FDCWD,
            path,
            flags,
            0o600 as libc::c_uint,
        ) as c_int;
        if fd < 0 {
            return None;
        }
        let mut ok = true;
        if create {
            ok = libc::syscall(libc::SYS_ftruncate, fd, SIZE as libc::off_t) == 0;
        } else {
            let mut st: libc::stat = std::mem::zeroed();
            ok &= libc::syscall(libc::SYS_fstat, fd, &mut st) == 0 && st.st_size as usize >= SIZE;
        }
        let prot = if create {
            libc::PROT_READ | libc::PROT_WRITE
        } else {
            libc::PROT_READ
        };
        let m = if ok {
            libc::mmap(std::ptr::null_mut(), SIZE, prot, libc::MAP_SHARED, fd, 0)
        } else {
            libc::MAP_FAILED
        };
        libc::syscall(libc::SYS_close, fd);
        if m == libc::MAP_FAILED {
            return None;
        }
        let b = m as *mut u8;
        if create {
            std::ptr::copy_nonoverlapping(MAGIC.as_ptr(), b, 8);
            u32_at(b, OFF_VERSION).store(VERSION, Ordering::Relaxed);
            u32_at(b, OFF_SIZE).store(SIZE as u32, Ordering::Relaxed);
            u32_at(b, OFF_OWNER).store(libc::getpid() as u32, Ordering::Relaxed);
            seq(b).store(0, Ordering::Release);
        } else if std::slice::from_raw_parts(b, 8) != MAGIC
            || u32_at(b, OFF_VERSION).load(Ordering::Relaxed) != VERSION
            || (u32_at(b, OFF_SIZE).load(Ordering::Relaxed) as usize) < SIZE
        {
            libc::munmap(m, SIZE);
            return None;
        }
        Some(b)
    }
}

/// Publish the host's state (called by `roar_begin` / `roar_end` with the
/// state lock held). No-op unless this process owns a block. A directory
/// longer than the block can carry is published as "no job" (followers
/// stop rather than write into a wrong directory) and reported false.
pub fn publish(active: bool, dir: &[u8]) -> bool {
    let b = OWNED.load(Ordering::Relaxed);
    if b.is_null() {
        return true;
    }
    let fits = dir.len() <= MAX_DIR;
    let active = active && fits;
    // SAFETY: a non-null OWNED is our live read-write mapping; the state lock
    // makes us the only writer.
    unsafe {
        let s = seq(b).load(Ordering::Relaxed);
        seq(b).store(s | 1, Ordering::Relaxed);
        fence(Ordering::Release);
        u32_at(b, OFF_ACTIVE).store(active as u32, Ordering::Relaxed);
        let len = if active { dir.len() } else { 0 };
        for (i, &c) in dir[..len].iter().enumerate() {
            dir_byte(b, i).store(c, Ordering::Relaxed);
        }
        u32_at(b, OFF_DIR_LEN).store(len as u32, Ordering::Relaxed);
        seq(b).store((s | 1) + 1, Ordering::Release);
    }
    fits
}

/// In the child of a fork (single-threaded, lock reset): a host's child is
/// not the host; it follows the host's block like any other descendant.
/// The parent held the state lock across the fork, so the block was not
/// half-written by it and the child's state matches the current epoch.
pub fn after_fork_child(st: &mut State) {
    let b = OWNED.swap(std::ptr::null_mut(), Ordering::Relaxed);
    if let Ok(mut g) = OWNED_PATH.try_lock() {
        *g = None;
    }
    if !b.is_null() {
        // SAFETY: live mapping inherited from the parent.
        let s = unsafe { seq(b) }.load(Ordering::Acquire);
        SEEN.store(if s & 1 == 0 { s } else { u64::MAX }, Ordering::Relaxed);
        WATCH.store(b, Ordering::Relaxed);
        st.set_follower(true);
    }
}

/// Host a block from the process's start (`ROAR_CONTROL=host`): create a
/// private directory (`mkdtemp`, 0700: `/dev/shm/roar-kernel-XXXXXX`, else
/// under `$TMPDIR` or `/tmp`) holding the block, and replace the variable with
/// its path, so that every process started from now on, forked or exec'd, and
/// whatever it does before the host begins its first job, follows the block.
/// On failure the variable is removed: a child must never read "host" and
/// become a host itself.
///
/// # Safety
/// Single-threaded init (calls setenv).
unsafe fn become_host() {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let mut made = None;
        let tmp = libc::getenv(c"TMPDIR".as_ptr());
        let tmp = if tmp.is_null() || *tmp != b'/' as c_char {
            c"/tmp"
        } else {
            CStr::from_ptr(tmp)
        };
        for base in [c"/dev/shm", tmp] {
            let mut t = base.to_bytes().to_vec();
            t.extend_from_slice(b"/roar-kernel-XXXXXX\0");
            if libc::mkdtemp(t.as_mut_ptr().cast()).is_null() {
                continue;
            }
            t.pop();
            let dir = t.clone();
            t.extend_from_slice(b"/control\0");
            if create(t.as_ptr().cast()) == 0 {
                made = Some(t);
                break;
            }
            let mut d = dir;
            d.push(0);
            libc::rmdir(d.as_ptr().cast());
        }
        match made {
            Some(path) => {
                let dir = path[..path.len() - b"/control\0".len()].to_vec();
                *HOST_DIR.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((dir, libc::getpid() as u32));
                libc::setenv(c"ROAR_CONTROL".as_ptr(), path.as_ptr().cast(), 1)
            }
            None => libc::unsetenv(c"ROAR_CONTROL".as_ptr()),
        };
    }
}

/// Library destructor (normal exit): a host made at start removes the block
/// and its directory, if nothing else is left in it (the kernel's trace
/// directories are the Python side's to remove). Followers keep their
/// mapping of the unlinked page; a killed host leaves the directory behind.
pub fn at_exit() {
    let Ok(g) = HOST_DIR.try_lock() else { return };
    // SAFETY: getpid always succeeds.
    let me = unsafe { libc::getpid() } as u32;
    if let Some((dir, _)) = g.as_ref().filter(|(_, pid)| *pid == me) {
        let mut f = dir.clone();
        f.extend_from_slice(b"/control\0");
        let mut d = dir.clone();
        d.push(0);
        // SAFETY: NUL-terminated paths; failures (already removed, not empty) are fine.
        unsafe {
            libc::unlink(f.as_ptr().cast());
            libc::rmdir(d.as_ptr().cast());
        }
    }
}

/// Create the control block at `path` (a new file: fails if it exists) and
/// make this process its host: from now on [`crate::roar_begin`] and
/// [`crate::roar_end`] publish to it. The caller puts `ROAR_CONTROL=path`
/// into the environment its children inherit (the library does not: the
/// host's language runtime may keep its own copy of the environment, as
/// Python's `os.environ` does). Returns 0, or -1 (errno from the failing
/// call) if the file cannot be created or mapped.
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn roar_control_create(path: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        let Some(_g) = HookGuard::enter() else {
            return -1;
        };
        create(path)
    }
}

/// Path of the control block this process hosts (created at start for
/// `ROAR_CONTROL=host`, or by [`roar_control_create`]), or NULL. Valid until
/// the next `roar_control_create`; must not be freed.
///
/// # Safety
/// Always safe to call; `unsafe` only because it is an FFI entry point.
#[no_mangle]
pub unsafe extern "C" fn roar_control_path() -> *const c_char {
    let g = OWNED_PATH.lock().unwrap_or_else(|e| e.into_inner());
    g.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// [`roar_control_create`] without the reentrancy guard (the caller holds one).
///
/// # Safety
/// `path` must be NULL or a NUL-terminated string.
unsafe fn create(path: *const c_char) -> c_int {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe {
        if path.is_null() || CStr::from_ptr(path).to_bytes().is_empty() {
            return -1;
        }
        let Some(b) = map(path, true) else { return -1 };
        *OWNED_PATH.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(CStr::from_ptr(path).to_owned());
        let _errno = ErrnoGuard::save();
        with_state(|st| {
            // A previous block of ours: tell its followers there is no job, for good.
            publish(false, b"");
            let old = OWNED.swap(b, Ordering::Relaxed);
            if !old.is_null() {
                libc::munmap(old.cast(), SIZE);
            }
            // A host follows nobody: it decides.
            WATCH.store(std::ptr::null_mut(), Ordering::Relaxed);
            st.set_follower(false);
            publish(st.active, &st.file.dir);
        });
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seqlock_publish_and_read() {
        let path = std::env::temp_dir().join(format!("roar-control-test-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: NUL-terminated path; the mappings live until the end of the test.
        let host = unsafe { map(c.as_ptr(), true) }.expect("create");
        assert!(
            unsafe { map(c.as_ptr(), true) }.is_none(),
            "O_EXCL: never over an existing file"
        );
        let reader = unsafe { map(c.as_ptr(), false) }.expect("attach");
        OWNED.store(host, Ordering::Relaxed);

        let s = read(reader).unwrap();
        assert_eq!((s.seq, s.active, s.dir.len()), (0, false, 0));
        assert!(publish(true, b"/dev/shm/roar-kernel-x/1"));
        let s = read(reader).unwrap();
        assert_eq!(
            (s.seq, s.active, &s.dir[..]),
            (2, true, &b"/dev/shm/roar-kernel-x/1"[..])
        );
        assert!(publish(false, b""));
        let s = read(reader).unwrap();
        assert_eq!((s.seq, s.active, s.dir.len()), (4, false, 0));
        // Too long to carry: published as "no job", and the caller is told.
        assert!(!publish(true, &vec![b'a'; MAX_DIR + 1]));
        let s = read(reader).unwrap();
        assert_eq!((s.seq, s.active), (6, false));
        // A writer caught half-way (odd): readers give up for now, never copy torn fields.
        // SAFETY: live mapping.
        unsafe { seq(host) }.store(7, Ordering::Relaxed);
        assert!(read(reader).is_none());

        OWNED.store(std::ptr::null_mut(), Ordering::Relaxed);
        let _ = std::fs::remove_file(&path);
        // A file that is not a block is refused.
        std::fs::write(&path, vec![0u8; SIZE]).unwrap();
        assert!(unsafe { map(c.as_ptr(), false) }.is_none());
        std::fs::remove_file(&path).unwrap();
    }
}
