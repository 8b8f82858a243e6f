//! The "real" libc functions behind our hooks, found once with
//! `dlsym(RTLD_NEXT, name)` and cached in atomics.
//!
//! Responsible only for lookup and caching. Every getter is a relaxed atomic
//! load on the fast path (a plain `mov` on x86_64/aarch64), so the dormant
//! cost of a hook stays "one flag load + one pointer load + the real call".
//! [`resolve_all`] is called from the library constructor so that lookups do
//! not happen lazily inside arbitrary call sites (e.g. inside a malloc that
//! opens a file); lazy lookup remains as a fallback for hooks called before
//! our constructor ran (other libraries' constructors).

use libc::{c_char, c_int, c_uint, c_void, mode_t, off64_t, off_t, pid_t, FILE};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Look a symbol up in the objects loaded after us (normally libc).
///
/// # Safety
/// `name` must be a NUL-terminated byte string.
unsafe fn lookup(name: &[u8]) -> usize {
    // SAFETY: the caller upholds this function's contract (its `# Safety` section).
    unsafe { libc::dlsym(libc::RTLD_NEXT, name.as_ptr().cast()) as usize }
}

macro_rules! real_fns {
    ($($getter:ident = $sym:literal : $ty:ty;)*) => {
        $(
            /// Cached pointer to the real libc function of the same name
            /// (`None` if libc does not provide it).
            #[inline(always)]
            pub fn $getter() -> Option<$ty> {
                static SLOT: AtomicUsize = AtomicUsize::new(0);
                let mut p = SLOT.load(Ordering::Relaxed);
                if p == 0 {
                    // SAFETY: the literal is NUL-terminated by concat!.
                    p = unsafe { lookup(concat!($sym, "\0").as_bytes()) };
                    if p == 0 {
                        return None;
                    }
                    SLOT.store(p, Ordering::Relaxed);
                }
                // SAFETY: p is the address of the libc function with this
                // name, whose C prototype is $ty.
                Some(unsafe { std::mem::transmute::<usize, $ty>(p) })
            }
        )*

        /// Resolve every real function now (called from the constructor).
        pub fn resolve_all() {
            $( let _ = $getter(); )*
        }
    };
}

/// `int (*)(const char *, int, mode_t)`
pub type OpenFn = unsafe extern "C" fn(*const c_char, c_int, mode_t) -> c_int;
/// `int (*)(int, const char *, int, mode_t)`
pub type OpenatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, mode_t) -> c_int;
/// `int (*)(const char *, int)` (the fortified `__open_2`)
pub type Open2Fn = unsafe extern "C" fn(*const c_char, c_int) -> c_int;
/// `int (*)(int, const char *, int)` (the fortified `__openat_2`)
pub type Openat2Fn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
/// `int (*)(const char *, mode_t)`
pub type CreatFn = unsafe extern "C" fn(*const c_char, mode_t) -> c_int;
/// `FILE *(*)(const char *, const char *)`
pub type FopenFn = unsafe extern "C" fn(*const c_char, *const c_char) -> *mut FILE;
/// `FILE *(*)(const char *, const char *, FILE *)`
pub type FreopenFn = unsafe extern "C" fn(*const c_char, *const c_char, *mut FILE) -> *mut FILE;
/// `int (*)(char *)`
pub type MkstempFn = unsafe extern "C" fn(*mut c_char) -> c_int;
/// `int (*)(char *, int)` (mkstemps: suffix length; mkostemp: flags)
pub type Mkstemp2Fn = unsafe extern "C" fn(*mut c_char, c_int) -> c_int;
/// `int (*)(char *, int, int)`
pub type MkostempsFn = unsafe extern "C" fn(*mut c_char, c_int, c_int) -> c_int;
/// `int (*)(const char *, off_t)`
pub type TruncateFn = unsafe extern "C" fn(*const c_char, off_t) -> c_int;
/// `int (*)(const char *, off64_t)`
pub type Truncate64Fn = unsafe extern "C" fn(*const c_char, off64_t) -> c_int;
/// `int (*)(const char *, const char *)`
pub type Path2Fn = unsafe extern "C" fn(*const c_char, *const c_char) -> c_int;
/// `int (*)(int, const char *, int, const char *)`
pub type RenameatFn = unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char) -> c_int;
/// `int (*)(int, const char *, int, const char *, unsigned)`
pub type Renameat2Fn =
    unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_uint) -> c_int;
/// `int (*)(int, const char *, int, const char *, int)`
pub type LinkatFn =
    unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, c_int) -> c_int;
/// `int (*)(const char *)`
pub type PathFn = unsafe extern "C" fn(*const c_char) -> c_int;
/// `int (*)(int, const char *, int)`
pub type UnlinkatFn = unsafe extern "C" fn(c_int, *const c_char, c_int) -> c_int;
/// `int (*)(int)`
pub type FdFn = unsafe extern "C" fn(c_int) -> c_int;
/// `int (*)(int, int)`
pub type Dup2Fn = unsafe extern "C" fn(c_int, c_int) -> c_int;
/// `int (*)(int, int, int)`
pub type Dup3Fn = unsafe extern "C" fn(c_int, c_int, c_int) -> c_int;
/// `int (*)(unsigned, unsigned, int)`
pub type CloseRangeFn = unsafe extern "C" fn(c_uint, c_uint, c_int) -> c_int;
/// `void (*)(int)`
pub type ClosefromFn = unsafe extern "C" fn(c_int);
/// `int (*)(const char *, char *const[], char *const[])`
pub type ExecveFn =
    unsafe extern "C" fn(*const c_char, *const *const c_char, *const *const c_char) -> c_int;
/// `int (*)(const char *, char *const[])`
pub type ExecvFn = unsafe extern "C" fn(*const c_char, *const *const c_char) -> c_int;
/// `int (*)(pid_t *, const char *, file_actions *, attr *, char *const[], char *const[])`
pub type PosixSpawnFn = unsafe extern "C" fn(
    *mut pid_t,
    *const c_char,
    *const c_void,
    *const c_void,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
/// `int (*)(posix_spawn_file_actions_t *)`
pub type SpawnFaFn = unsafe extern "C" fn(*mut c_void) -> c_int;
/// `int (*)(posix_spawn_file_actions_t *, int, const char *, int, mode_t)`
pub type SpawnFaOpenFn =
    unsafe extern "C" fn(*mut c_void, c_int, *const c_char, c_int, mode_t) -> c_int;
/// `int (*)(posix_spawn_file_actions_t *, const char *)`
pub type SpawnFaChdirFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
/// `int (*)(posix_spawn_file_actions_t *, int)`
pub type SpawnFaFchdirFn = unsafe extern "C" fn(*mut c_void, c_int) -> c_int;
/// `long (*)(long, ...)`
pub type SyscallFn = unsafe extern "C" fn(libc::c_long, ...) -> libc::c_long;
/// `pid_t (*)(void)`
pub type ForkFn = unsafe extern "C" fn() -> pid_t;
/// `void (*)(int)` (noreturn)
pub type ExitFn = unsafe extern "C" fn(c_int) -> !;

real_fns! {
    real_open = "open": OpenFn;
    real_open64 = "open64": OpenFn;
    real_openat = "openat": OpenatFn;
    real_openat64 = "openat64": OpenatFn;
    real_open_2 = "__open_2": Open2Fn;
    real_open64_2 = "__open64_2": Open2Fn;
    real_openat_2 = "__openat_2": Openat2Fn;
    real_openat64_2 = "__openat64_2": Openat2Fn;
    real_creat = "creat": CreatFn;
    real_creat64 = "creat64": CreatFn;
    real_fopen = "fopen": FopenFn;
    real_fopen64 = "fopen64": FopenFn;
    real_freopen = "freopen": FreopenFn;
    real_freopen64 = "freopen64": FreopenFn;
    real_mkstemp = "mkstemp": MkstempFn;
    real_mkstemp64 = "mkstemp64": MkstempFn;
    real_mkstemps = "mkstemps": Mkstemp2Fn;
    real_mkstemps64 = "mkstemps64": Mkstemp2Fn;
    real_mkostemp = "mkostemp": Mkstemp2Fn;
    real_mkostemp64 = "mkostemp64": Mkstemp2Fn;
    real_mkostemps = "mkostemps": MkostempsFn;
    real_mkostemps64 = "mkostemps64": MkostempsFn;
    real_truncate = "truncate": TruncateFn;
    real_truncate64 = "truncate64": Truncate64Fn;
    real_rename = "rename": Path2Fn;
    real_renameat = "renameat": RenameatFn;
    real_renameat2 = "renameat2": Renameat2Fn;
    real_link = "link": Path2Fn;
    real_linkat = "linkat": LinkatFn;
    real_unlink = "unlink": PathFn;
    real_unlinkat = "unlinkat": UnlinkatFn;
    real_remove = "remove": PathFn;
    real_chdir = "chdir": PathFn;
    real_fchdir = "fchdir": FdFn;
    real_close = "close": FdFn;
    real_close_alias = "__close": FdFn;
    real_dup2 = "dup2": Dup2Fn;
    real_dup2_alias = "__dup2": Dup2Fn;
    real_dup3 = "dup3": Dup3Fn;
    real_close_range = "close_range": CloseRangeFn;
    real_closefrom = "closefrom": ClosefromFn;
    real_execve = "execve": ExecveFn;
    real_execv = "execv": ExecvFn;
    real_execvp = "execvp": ExecvFn;
    real_execvpe = "execvpe": ExecveFn;
    real_posix_spawn = "posix_spawn": PosixSpawnFn;
    real_posix_spawnp = "posix_spawnp": PosixSpawnFn;
    real_fork = "fork": ForkFn;
    real_syscall = "syscall": SyscallFn;
    real_spawn_fa_init = "posix_spawn_file_actions_init": SpawnFaFn;
    real_spawn_fa_destroy = "posix_spawn_file_actions_destroy": SpawnFaFn;
    real_spawn_fa_addopen = "posix_spawn_file_actions_addopen": SpawnFaOpenFn;
    real_spawn_fa_addchdir = "posix_spawn_file_actions_addchdir_np": SpawnFaChdirFn;
    real_spawn_fa_addfchdir = "posix_spawn_file_actions_addfchdir_np": SpawnFaFchdirFn;
    real_exit = "_exit": ExitFn;
    real_exit2 = "_Exit": ExitFn;
}
