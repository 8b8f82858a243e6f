//! End-to-end tests of the preload tracer: real programs (sh, sort, cp, mv,
//! env, python3) run with `LD_PRELOAD=target/<profile>/libroar_preload.so`,
//! then the trace directory is decoded with `roar-events` and the records
//! are compared with what the program did.
//!
//! These tests need the cdylib built by the same `cargo test` invocation
//! (cargo builds a package's library before its integration tests; for a
//! cdylib that produces `target/<profile>/libroar_preload.so`). If it is
//! missing, the tests build it with `cargo build -p roar-preload` first.
//!
//! Only records for paths inside each test's private work directory are
//! compared exactly: the programs also read their own system files (locale
//! data, Python's stdlib), which are real records but not ours to pin down.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use roar_events::{read_trace_dir, Op, Record};

/// Path of the built preload library next to the test binary.
fn lib() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        // target/<profile>/deps/trace-<hash> -> target/<profile>/
        let exe = std::env::current_exe().unwrap();
        let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let so = dir.join("libroar_preload.so");
        if !so.exists() {
            let profile_release = dir.file_name() == Some(OsStr::new("release"));
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "roar-preload"]);
            if profile_release {
                cmd.arg("--release");
            }
            let st = cmd
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .status()
                .unwrap();
            assert!(st.success(), "building roar-preload failed");
        }
        assert!(so.exists(), "{} missing", so.display());
        so
    })
}

/// The real python3 binary (not a pyenv shim script), found once.
fn python() -> &'static Path {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let out = Command::new("python3")
            .args(["-c", "import sys; print(sys.executable)"])
            .output()
            .expect("python3 on PATH");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// A private work dir (where programs run) and trace dir for one test.
struct Sandbox {
    root: PathBuf,
    work: PathBuf,
    trace: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Sandbox {
        static N: AtomicUsize = AtomicUsize::new(0);
        let base = std::env::temp_dir().canonicalize().unwrap();
        let root = base.join(format!(
            "roar-preload-it-{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            name
        ));
        let _ = std::fs::remove_dir_all(&root);
        let work = root.join("work");
        let trace = root.join("trace");
        std::fs::create_dir_all(&work).unwrap();
        std::fs::create_dir_all(&trace).unwrap();
        Sandbox { root, work, trace }
    }

    fn write(&self, name: &str, content: &[u8]) {
        std::fs::write(self.work.join(name), content).unwrap();
    }

    /// A command running in the work dir under the tracer (active).
    fn cmd(&self, program: impl AsRef<OsStr>) -> Command {
        let mut c = Command::new(program);
        c.current_dir(&self.work)
            .env("LD_PRELOAD", lib())
            .env("ROAR_TRACE_DIR", &self.trace);
        c
    }

    fn sh(&self, script: &str) -> Output {
        let out = self.cmd("sh").args(["-c", script]).output().unwrap();
        assert!(out.status.success(), "sh -c {script:?} failed: {out:?}");
        out
    }

    fn py(&self, script: &str) -> Output {
        self.cmd(python()).args(["-c", script]).output().unwrap()
    }

    /// Every record of every trace file, with the file's (pid, ppid).
    fn all(&self) -> Vec<(u32, u32, Record)> {
        let mut v = Vec::new();
        for f in read_trace_dir(&self.trace).unwrap() {
            assert_eq!(f.trace.error, None, "{}", f.file.display());
            for r in f.trace.records {
                v.push((f.trace.header.pid, f.trace.header.ppid, r));
            }
        }
        v.sort_by_key(|(_, _, r)| r.t_ns);
        v
    }

    /// Work-dir-relative view of a path, or None if outside the work dir.
    fn rel(&self, p: &[u8]) -> Option<String> {
        let w = self.work.as_os_str().as_bytes();
        let rest = p.strip_prefix(w)?.strip_prefix(b"/")?;
        Some(String::from_utf8_lossy(rest).into_owned())
    }

    /// Records on work-dir paths, in time order, as compact strings:
    /// "R a", "M x -> y".
    fn mine(&self) -> Vec<String> {
        self.all()
            .into_iter()
            .filter_map(|(_, _, r)| {
                let p = self.rel(&r.path)?;
                Some(match &r.path2 {
                    Some(p2) => format!("{} {} -> {}", r.op, p, self.rel(p2)?),
                    None => format!("{} {}", r.op, p),
                })
            })
            .collect()
    }

    fn mine_sorted(&self) -> Vec<String> {
        let mut v = self.mine();
        v.sort();
        v
    }

    fn trace_files(&self) -> usize {
        std::fs::read_dir(&self.trace).unwrap().count()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

#[test]
fn sort_with_redirections() {
    let sb = Sandbox::new("sort");
    sb.write("a", b"b\na\n");
    sb.sh("sort < a > b");
    assert_eq!(std::fs::read(sb.work.join("b")).unwrap(), b"a\nb\n");
    assert_eq!(sb.mine_sorted(), s(&["R a", "W b"]));
    // sort was found on PATH and executed by the shell.
    assert!(sb
        .all()
        .iter()
        .any(|(_, _, r)| r.op == Op::Exec && r.path.ends_with(b"/sort")));
}

#[test]
fn cp_reads_source_writes_destination() {
    let sb = Sandbox::new("cp");
    sb.write("a", b"hello");
    let out = sb.cmd("cp").args(["a", "b"]).output().unwrap();
    assert!(out.status.success());
    assert_eq!(sb.mine(), s(&["R a", "W b"]));
    // R carries the size and mtime seen at open.
    let meta = std::fs::metadata(sb.work.join("a")).unwrap();
    let r = sb
        .all()
        .into_iter()
        .find(|(_, _, r)| r.op == Op::Read && sb.rel(&r.path).as_deref() == Some("a"))
        .unwrap()
        .2;
    use std::os::unix::fs::MetadataExt;
    assert_eq!(r.size, 5);
    assert_eq!(r.mtime_ns, meta.mtime() * 1_000_000_000 + meta.mtime_nsec());
    let w = sb
        .all()
        .into_iter()
        .find(|(_, _, r)| r.op == Op::Write)
        .unwrap()
        .2;
    assert_eq!((w.size, w.mtime_ns), (0, -1));
}

#[test]
fn append_to_an_existing_file_is_an_update_with_its_version_at_open() {
    let sb = Sandbox::new("append");
    sb.write("log", b"e0;");
    let meta = std::fs::metadata(sb.work.join("log")).unwrap();
    // A new file appended to is just written (the U of an empty file becomes W).
    sb.sh("echo e1 >> log; echo n >> new");
    assert!(sb.py("open('log', 'a').write('e2')").status.success());
    assert_eq!(sb.mine_sorted(), s(&["U log", "U log", "W new"]));
    use std::os::unix::fs::MetadataExt;
    let mut seen: Vec<(u64, i64)> = sb
        .all()
        .into_iter()
        .filter(|(_, _, r)| r.op == Op::Update)
        .map(|(_, _, r)| (r.size, r.mtime_ns))
        .collect();
    seen.sort();
    // The shell saw the file as written above; python saw it after the shell's append.
    assert_eq!(
        seen[0],
        (3, meta.mtime() * 1_000_000_000 + meta.mtime_nsec())
    );
    assert_eq!(seen[1].0, 6);
}

#[test]
fn shell_write_tmp_then_mv() {
    let sb = Sandbox::new("mv");
    sb.sh("echo x > out.tmp && mv out.tmp out && rm -f gone; echo y > gone; rm gone");
    assert_eq!(
        sb.mine(),
        s(&["W out.tmp", "M out.tmp -> out", "W gone", "D gone"])
    );
}

#[test]
fn python_atomic_save_and_links() {
    let sb = Sandbox::new("pysave");
    sb.write("u", b"0123456789");
    let out = sb.py("import os\n\
         with open('ckpt.tmp', 'w') as f: f.write('weights')\n\
         os.replace('ckpt.tmp', 'ckpt')\n\
         for _ in range(100): open('ckpt').read()\n\
         with open('u', 'r+') as f: f.write('X')\n\
         os.link('ckpt', 'ckpt2')\n\
         os.unlink('ckpt2')\n\
         os.mkdir('d'); os.rename('d', 'e'); os.rmdir('e')\n\
         with open(b'caf\\xe9', 'wb') as f: f.write(b'x')\n\
         with open('ckpt.tmp', 'w') as f: f.write('again')\n\
         os.replace('ckpt.tmp', 'ckpt')\n\
         os.chdir('..'); open('work/ckpt').read()\n");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        sb.mine(),
        s(&[
            "W ckpt.tmp",
            "M ckpt.tmp -> ckpt",
            "R ckpt",
            "U u",
            "L ckpt -> ckpt2",
            "D ckpt2",
            "M d -> e",
            "W caf\u{fffd}",
            // Moving a name away makes it new again: recorded a second time.
            "W ckpt.tmp",
            "M ckpt.tmp -> ckpt",
            // Re-read after the move (and via a path relative to a new cwd).
            "R ckpt",
        ])
    );
    // Raw, non-UTF-8 bytes survive.
    assert!(sb
        .all()
        .iter()
        .any(|(_, _, r)| r.path.ends_with(b"/caf\xe9")));
    // U carries the size seen at open (before the write).
    let u = sb
        .all()
        .into_iter()
        .find(|(_, _, r)| r.op == Op::Update)
        .unwrap()
        .2;
    assert_eq!(u.size, 10);
    assert!(u.mtime_ns > 0);
}

#[test]
fn child_and_grandchild() {
    let sb = Sandbox::new("tree");
    sb.write("a", b"1");
    let child = sb
        .cmd("sh")
        .args(["-c", "cat a > b; sh -c 'cat b > c; cat c > d'"])
        .spawn()
        .unwrap();
    let top = child.id();
    assert!(child.wait_with_output().unwrap().status.success());
    assert_eq!(
        sb.mine_sorted(),
        s(&["R a", "R b", "R c", "W b", "W c", "W d"])
    );
    // Process tree from the headers: some traced process is a grandchild
    // of the top shell.
    let parent_of: BTreeMap<u32, u32> = read_trace_dir(&sb.trace)
        .unwrap()
        .iter()
        .map(|f| (f.trace.header.pid, f.trace.header.ppid))
        .collect();
    assert_eq!(parent_of.get(&top), Some(&std::process::id()));
    assert!(parent_of
        .iter()
        .any(|(_, pp)| *pp != top && parent_of.get(pp) == Some(&top)));
}

#[test]
fn env_clearing_launcher_keeps_tracing() {
    let sb = Sandbox::new("envi");
    sb.write("a", b"1");
    sb.sh("env -i /bin/sh -c 'cat a > b'");
    assert_eq!(sb.mine_sorted(), s(&["R a", "W b"]));
    // And a Python child with an explicit, tracer-free environment.
    let sb2 = Sandbox::new("envpy");
    sb2.write("a", b"1");
    let out = sb2.py(
        "import subprocess\n\
         subprocess.run(['/bin/sh', '-c', 'cat a > b'], env={'PATH': '/usr/bin:/bin'}, check=True)\n",
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sb2.mine_sorted(), s(&["R a", "W b"]));
}

#[test]
fn exit_via_underscore_exit_is_flushed() {
    let sb = Sandbox::new("exit");
    sb.write("a", b"1");
    let out = sb.py("import os\nopen('a').read()\nopen('b', 'w').write('x')\nos._exit(3)\n");
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(sb.mine(), s(&["R a", "W b"]));
}

#[test]
fn fork_child_gets_its_own_file() {
    let sb = Sandbox::new("fork");
    let out = sb.py("import os\n\
         open('before', 'w').write('x')\n\
         pid = os.fork()\n\
         if pid == 0:\n\
         \x20   open('child', 'w').write('c')\n\
         \x20   open('before', 'w').write('again')\n\
         \x20   os._exit(0)\n\
         os.waitpid(pid, 0)\n\
         open('parent', 'w').write('p')\n\
         print(pid)\n");
    assert!(out.status.success(), "{out:?}");
    let child: u32 = String::from_utf8(out.stdout)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let by_pid: BTreeMap<String, (u32, u32)> = sb
        .all()
        .into_iter()
        .filter_map(|(pid, ppid, r)| {
            let p = sb.rel(&r.path)?;
            Some((format!("{} {} {}", r.op, p, pid == child), (pid, ppid)))
        })
        .collect();
    // The child's buffer starts empty (no duplicate of the parent's "W
    // before") and its dedupe set too (its own "W before" is recorded).
    let keys: BTreeSet<&str> = by_pid.keys().map(|k| k.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "W before false",
            "W before true",
            "W child true",
            "W parent false"
        ])
    );
    let parent = by_pid["W parent false"].0;
    assert_eq!(by_pid["W child true"], (child, parent));
}

#[test]
fn dormant_without_trace_dir() {
    let sb = Sandbox::new("dormant");
    sb.write("a", b"1");
    for value in [None, Some("")] {
        let mut c = sb.cmd("sh");
        c.args(["-c", "cat a > b; cp a c; mv c d; rm d"]);
        match value {
            None => c.env_remove("ROAR_TRACE_DIR"),
            Some(v) => c.env("ROAR_TRACE_DIR", v),
        };
        assert!(c.status().unwrap().success());
    }
    assert_eq!(sb.trace_files(), 0);
    assert_eq!(std::fs::read(sb.work.join("b")).unwrap(), b"1");
}

#[test]
fn output_and_exit_status_unchanged() {
    let sb = Sandbox::new("transparent");
    let blob: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
    sb.write("blob", &blob);
    let script =
        "printf 'out\\000\\377'; cat blob; printf err >&2; cat missing 2>/dev/null; exit 7";
    let plain = Command::new("sh")
        .args(["-c", script])
        .current_dir(&sb.work)
        .output()
        .unwrap();
    let traced = sb.cmd("sh").args(["-c", script]).output().unwrap();
    let dormant = sb
        .cmd("sh")
        .args(["-c", script])
        .env_remove("ROAR_TRACE_DIR")
        .output()
        .unwrap();
    for o in [&traced, &dormant] {
        assert_eq!(o.status.code(), Some(7));
        assert_eq!(o.stdout, plain.stdout);
        assert_eq!(o.stderr, plain.stderr);
        assert_eq!(o.stderr, b"err");
    }
    assert_eq!(&plain.stdout[..5], b"out\0\xff");
    // Signals are preserved too.
    let killed = sb.cmd("sh").args(["-c", "kill -TERM $$"]).status().unwrap();
    assert_eq!(killed.signal(), Some(libc_sigterm()));
}

fn libc_sigterm() -> i32 {
    15
}

#[test]
fn thirty_two_threads() {
    let sb = Sandbox::new("threads");
    sb.write("shared", b"s");
    let out = sb.py("import threading\n\
         def work(i):\n\
         \x20   for _ in range(50):\n\
         \x20       with open(f't{i:02d}', 'w') as f: f.write('x' * 100)\n\
         \x20       open('shared').read()\n\
         ts = [threading.Thread(target=work, args=(i,)) for i in range(32)]\n\
         [t.start() for t in ts]\n\
         [t.join() for t in ts]\n");
    assert!(out.status.success(), "{out:?}");
    let mut want: Vec<String> = (0..32).map(|i| format!("W t{i:02}")).collect();
    want.push("R shared".into());
    want.sort();
    assert_eq!(sb.mine_sorted(), want);
}

#[test]
fn begin_end_from_ctypes() {
    let sb = Sandbox::new("ctypes");
    sb.write("a", b"1");
    let script = r#"
import ctypes, os, subprocess, sys
lib = ctypes.CDLL(os.environ['ROAR_LIB'])
lib.roar_version.restype = ctypes.c_char_p
lib.roar_library_path.restype = ctypes.c_char_p
assert lib.roar_version().startswith(b'roar-preload'), lib.roar_version()
assert lib.roar_library_path() == os.environ['ROAR_LIB'].encode(), lib.roar_library_path()
assert lib.roar_active() == 0
open('before', 'w').write('x')
assert lib.roar_begin(b'/nonexistent/dir') == -1
assert lib.roar_begin(os.environ['TRACE'].encode()) == 0
assert lib.roar_active() == 1
open('during', 'w').write('x')
open('a').read()
subprocess.run(['cat', 'a'], env={'PATH': os.environ['PATH']}, stdout=subprocess.DEVNULL, check=True)
os.system('cat a > sys_out')
assert lib.roar_flush() == 0
assert lib.roar_end() == 0
assert lib.roar_active() == 0
assert 'ROAR_TRACE_DIR' not in subprocess.run(['env'], capture_output=True, text=True).stdout
open('after', 'w').write('x')
subprocess.run(['sh', '-c', 'cat a > after_child'], check=True)
"#;
    let out = sb
        .cmd(python())
        .args(["-c", script])
        .env_remove("ROAR_TRACE_DIR")
        .env("ROAR_LIB", lib())
        .env("TRACE", &sb.trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mine = sb.mine();
    let reads = mine.iter().filter(|m| *m == "R a").count();
    // python, the cat from subprocess, the cat from os.system.
    assert_eq!(reads, 3, "{mine:?}");
    assert!(mine.contains(&"W during".to_string()), "{mine:?}");
    assert!(mine.contains(&"W sys_out".to_string()), "{mine:?}");
    for absent in ["before", "after", "after_child"] {
        assert!(
            !mine.iter().any(|m| m.ends_with(&format!(" {absent}"))),
            "{mine:?}"
        );
    }
}

#[test]
fn variadic_execl_family() {
    let sb = Sandbox::new("execl");
    sb.write("a", b"1");
    // ctypes calls libc's execl* by symbol lookup, which finds our
    // preloaded definitions first (the C shim behind the trampolines).
    for (i, call) in [
        "libc.execl(b'/bin/sh', b'sh', b'-c', b'cat a > b0', None)",
        "libc.execlp(b'sh', b'sh', b'-c', b'cat a > b1', None)",
        "libc.execle(b'/bin/sh', b'sh', b'-c', b'cat a > b2; echo $FOO > foo', None, (ctypes.c_char_p * 2)(b'FOO=bar', None))",
    ]
    .iter()
    .enumerate()
    {
        let script = format!("import ctypes\nlibc = ctypes.CDLL(None)\n{call}\nraise SystemExit(99)\n");
        let out = sb.py(&script);
        assert!(out.status.success(), "call {i}: {out:?}");
    }
    assert_eq!(std::fs::read(sb.work.join("foo")).unwrap(), b"bar\n");
    assert_eq!(
        sb.mine_sorted(),
        // One R per process: each exec'd shell's cat reads a.
        s(&["R a", "R a", "R a", "W b0", "W b1", "W b2", "W foo"])
    );
    let execs = sb
        .all()
        .into_iter()
        .filter(|(_, _, r)| r.op == Op::Exec && r.path.ends_with(b"/sh"))
        .count();
    assert!(execs >= 3, "{execs}");
}

#[test]
fn posix_spawn_and_mkstemp() {
    let sb = Sandbox::new("spawn");
    sb.write("a", b"1");
    let out = sb.py("import os, ctypes\n\
         pid = os.posix_spawn('/bin/sh', ['sh', '-c', 'cat a > s1'], {'PATH': '/usr/bin:/bin'})\n\
         os.waitpid(pid, 0)\n\
         pid = os.posix_spawnp('sh', ['sh', '-c', 'cat a > s2'], dict(os.environ))\n\
         os.waitpid(pid, 0)\n\
         libc = ctypes.CDLL(None)\n\
         t = ctypes.create_string_buffer(b'tmpXXXXXX')\n\
         fd = libc.mkstemp(t)\n\
         assert fd >= 0\n\
         print(t.value.decode())\n");
    assert!(out.status.success(), "{out:?}");
    let tmp = String::from_utf8(out.stdout).unwrap().trim().to_string();
    // Two spawned shells, two cats, each reading a once.
    let mut want = s(&["R a", "R a", "W s1", "W s2"]);
    want.push(format!("W {tmp}"));
    want.sort();
    assert_eq!(sb.mine_sorted(), want);
}

/// The trace descriptor kept open at a high number must survive a program
/// that closes or dup2s over it (through libc, or even a raw syscall), and
/// records must never land in the program's file that took its number.
#[test]
fn program_closing_or_replacing_the_trace_fd() {
    let sb = Sandbox::new("tracefd");
    let script = r#"
import ctypes, fcntl, os, platform, sys
TRACE = sys.argv[1]
SYS_close = {'x86_64': 3, 'aarch64': 57}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)

def ours():
    for n in os.listdir('/proc/self/fd'):
        try:
            p = os.readlink('/proc/self/fd/' + n)
            if p.startswith(TRACE + '/') and p.endswith('.ev'):
                return int(n)
        except OSError:
            pass

def same(a, b):
    return os.fstat(a).st_ino == os.fstat(b).st_ino

open('a', 'w').write('x')  # written through: the trace fd is open now
t = ours()
assert t is not None and t >= 64, t
v = os.open('victim', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

os.dup2(v, t)  # dup2 onto our number
open('b', 'w').write('x')
assert same(t, v)  # the program's descriptor is left alone
os.close(t)

t = ours()
os.dup2(v, t, inheritable=False)  # dup3
open('c', 'w').write('x')
assert same(t, v)
os.close(t)

t = ours()
os.closerange(t, t + 1)  # close_range, then the number reused without a hook
assert fcntl.fcntl(v, fcntl.F_DUPFD, t) == t
open('d', 'w').write('x')
os.close(t)

t = ours()
os.close(t)  # close, then reused without a hook
assert fcntl.fcntl(v, fcntl.F_DUPFD, t) == t
open('e', 'w').write('x')
os.close(t)

t = ours()
assert libc.syscall(SYS_close, t) == 0  # no hook sees this: EBADF, reopen
open('f', 'w').write('x')

t = ours()
assert libc.syscall(SYS_close, t) == 0  # ... and the number handed out by open
# (opened in the trace dir, which is never recorded: no write-through, so
# the tracer does not reopen its file in the meantime)
held = []
while True:
    fd = os.open(TRACE + '/victim2', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    if fd == t:
        break
    held.append(fd)
for h in held:
    os.close(h)
open('g', 'w').write('x')
assert os.fstat(t).st_ino == os.stat(TRACE + '/victim2').st_ino
os.close(t)
os.close(v)
print('ok')
"#;
    let out = sb
        .cmd(python())
        .args(["-c", script])
        .arg(&sb.trace)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, b"ok\n");
    for victim in [sb.work.join("victim"), sb.trace.join("victim2")] {
        let content = std::fs::read(&victim).unwrap();
        assert!(content.is_empty(), "{}: {content:?}", victim.display());
    }
    assert_eq!(
        sb.mine(),
        s(&["W a", "W victim", "W b", "W c", "W d", "W e", "W f", "W g"])
    );
}

/// Writers racing a thread that keeps closing the trace descriptor's number
/// (close_range, hooked) and grabbing it for its own file (F_DUPFD, not
/// hooked): every record arrives, none lands in the program's file.
#[test]
fn trace_fd_closed_under_concurrent_writers() {
    let sb = Sandbox::new("tracefd-race");
    let script = r#"
import fcntl, os, threading
v = os.open('victim', os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
stop = False
def disrupt():
    while not stop:
        os.closerange(1000, 1024)
        try:
            fcntl.fcntl(v, fcntl.F_DUPFD, 1000)
        except OSError:
            pass
def work(i):
    for j in range(200):
        with open(f'w{i}-{j:03d}', 'w') as f:
            f.write('x')
d = threading.Thread(target=disrupt)
d.start()
ws = [threading.Thread(target=work, args=(i,)) for i in range(4)]
[w.start() for w in ws]
[w.join() for w in ws]
stop = True
d.join()
print('ok')
"#;
    let out = sb.py(script);
    assert!(out.status.success(), "{out:?}");
    let content = std::fs::read(sb.work.join("victim")).unwrap();
    assert!(content.is_empty(), "victim: {} bytes", content.len());
    let mut want: Vec<String> = (0..4)
        .flat_map(|i| (0..200).map(move |j| format!("W w{i}-{j:03}")))
        .collect();
    want.push("W victim".into());
    want.sort();
    assert_eq!(sb.mine_sorted(), want);
}
