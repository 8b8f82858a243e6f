"""The capture-fidelity corpus: small programs with known file I/O, run under every backend.

Owns: the cases (each with the exact files it reads and writes, relative to its
scratch directory), building the C programs and the native tracers, running a
case under `preload` / `ptrace` / `strace -f` (ground truth), turning each run
into (reads, writes) with the *same* reducer roar uses (`capture.events.reduce`),
and the recall/precision arithmetic. It never asserts (test_fidelity.py does)
and never prints (report.py does).

Ground truth is `strace -f` with hex-escaped strings (`-xx`) and fd paths
(`-y`): its open/rename/link/unlink/mmap/copy calls become the same events the
tracers emit, so the comparison is about *what was seen*, not about semantics.
Only paths inside the case's scratch directory count.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
sys.path.insert(0, str(REPO))

from roar_nb.capture import events as ev_mod  # noqa: E402
from roar_nb.model import Event  # noqa: E402

# "ptrace" takes opens as seccomp notifications where the kernel allows it (Linux >= 6.6);
# "ptrace-stops" forces every traced call to be a ptrace stop (ROAR_PTRACE_NOTIFY=0);
# "ptrace-syscall" runs without the seccomp filter, every syscall a PTRACE_SYSCALL stop
# (ROAR_PTRACE_SECCOMP=0: the mode of an unprivileged user), so that all three are held to the
# same ground truth.
BACKENDS = ("preload", "ptrace", "ptrace-stops", "ptrace-syscall")
PTRACE_ENV = {"ptrace": {}, "ptrace-stops": {"ROAR_PTRACE_NOTIFY": "0"},
              "ptrace-syscall": {"ROAR_PTRACE_SECCOMP": "0"}}
BUSYBOX = "/bin/busybox"
PY = sys.executable


# --- building -------------------------------------------------------------------

@dataclass
class Tools:
    lib: str  # libroar_preload.so
    ptrace: str  # roar-ptrace
    bin_dir: Path  # compiled corpus programs


def build() -> Tools:
    """Build the tracers (cargo) and the C programs (gcc). A failure raises: tests never skip."""
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=REPO / "rust", check=True)
    rel = REPO / "rust" / "target" / "release"
    out = HERE / ".build"
    out.mkdir(exist_ok=True)
    for src in sorted((HERE / "programs").glob("*.c")):
        exe = out / src.stem
        digest = hashlib.sha256(src.read_bytes()).hexdigest()[:16]
        stamp = out / f"{src.stem}.sha"
        if exe.exists() and stamp.exists() and stamp.read_text() == digest:
            continue
        subprocess.run(["gcc", "-O1", "-pthread", "-o", str(exe), str(src)], check=True)
        stamp.write_text(digest)
    for need in (BUSYBOX, shutil.which("strace")):
        if not need or not os.path.exists(need):
            raise RuntimeError(f"missing {need or 'strace'}: run `make system-deps`")
    return Tools(str(rel / "libroar_preload.so"), str(rel / "roar-ptrace"), out)


# --- cases ----------------------------------------------------------------------

@dataclass
class Case:
    """One program: how to set up its directory, its argv, and the exact files it reads/writes."""

    name: str
    argv: Callable[[Tools, Path], list]
    reads: set
    writes: set
    setup: Callable[[Path], None] = lambda d: None
    static: bool = False  # preload cannot see it (reported as partial, excepted from its targets; none now)
    beyond_libc: bool = False  # syscall(2) without libc: no LD_PRELOAD library can see it
    env: dict = field(default_factory=dict)


def _files(**content) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for name, data in content.items():
            p = d / name.replace("__", "/")
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data if isinstance(data, bytes) else data.encode())
    return setup


def _py(code: str) -> Callable[[Tools, Path], list]:
    return lambda t, d: [PY, "-c", textwrap.dedent(code)]


def _long_path_setup(d: Path) -> None:
    pass


def _long_path_argv(t: Tools, d: Path) -> list:
    code = textwrap.dedent("""
        import os, sys
        base = os.getcwd()
        target = 4000
        parts, cur = [], len(base)
        while cur + 201 + 12 < target:
            parts.append("d" * 200); cur += 201
        parts.append("x" * (target - cur - 1 - 1 - 4) + ".txt")
        path = os.path.join(base, *parts)
        assert len(path.encode()) == target - 1, len(path)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write("deep")
        open(os.path.join(base, "longpath.name"), "w").write(os.path.relpath(path, base))
    """)
    return [PY, "-c", code]


def _long_path_expected(d: Path) -> set:
    name = (d / "longpath.name")
    return {name.read_text(), "longpath.name"} if name.exists() else set()


CASES: list[Case] = [
    Case("c_raw_and_stdio", lambda t, d: [str(t.bin_dir / "raw_stdio")],
         {"in.txt", "in2.txt"}, {"out_raw.txt", "out_stdio.txt"}, _files(**{"in.txt": "a\n", "in2.txt": "b\n"})),
    # syscall(2) through libc's generic wrapper (hooked), and syscall instructions without libc,
    # which LD_PRELOAD cannot see by construction.
    Case("c_syscall_direct", lambda t, d: [str(t.bin_dir / "syscall_direct")],
         {"in.txt", "in2.txt"}, {"out_raw.txt", "out_stdio.txt"}, _files(**{"in.txt": "a\n", "in2.txt": "b\n"})),
    Case("c_syscall_libc", lambda t, d: [str(t.bin_dir / "syscall_libc")],
         {"in.txt", "in2.txt"}, {"sub/rel.txt", "sub/moved.txt"},
         _files(**{"in.txt": "a\n", "in2.txt": "b\n", "sub__keep": ""})),
    Case("c_syscall_asm", lambda t, d: [str(t.bin_dir / "syscall_asm")],
         {"in.txt"}, {"out_asm.txt"}, _files(**{"in.txt": "a\n"}), beyond_libc=True),
    Case("static_busybox", lambda t, d: [BUSYBOX, "sh", "-c", "cat in.txt > out.txt; cp in.txt copy.txt"],
         {"in.txt"}, {"out.txt", "copy.txt"}, _files(**{"in.txt": "s\n"})),
    # Issue 11 item 9: static programs started by a dynamic shell; the preload library hands
    # each to `roar-ptrace --attach` before its exec (the static program forks and execs too).
    Case("static_children", lambda t, d: ["sh", "-c", f"{BUSYBOX} cat in.txt > out.txt; "
                                          f"{BUSYBOX} sh -c '{BUSYBOX} cp in.txt copy.txt & wait'"],
         {"in.txt"}, {"out.txt", "copy.txt"}, _files(**{"in.txt": "s\n"})),
    Case("cp", lambda t, d: ["cp", "in.txt", "out.txt"], {"in.txt"}, {"out.txt"}, _files(**{"in.txt": "x" * 5000})),
    Case("mv", lambda t, d: ["mv", "a.txt", "b.txt"], set(), {"b.txt"}, _files(**{"a.txt": "m\n"})),
    # Issue 11 item 12: a directory the job did not write, moved: its files are outputs under
    # their new names (like `mv a.txt b.txt` of a file), whether renamed or moved into another.
    Case("mv_directory", lambda t, d: ["mv", "a", "b"], set(), {"b/x.txt", "b/sub/y.txt"},
         _files(**{"a__x.txt": "x\n", "a__sub__y.txt": "y\n"})),
    Case("mv_directory_into", lambda t, d: ["mv", "a", "dest/"], set(), {"dest/a/x.txt"},
         _files(**{"a__x.txt": "x\n", "dest__keep.txt": "k\n"})),
    Case("rename_dir_mixed", _py("""
        import os
        with open("tmpd/new.txt", "w") as f:
            f.write("new")
        os.rename("tmpd", "final")
    """), set(), {"final/new.txt", "final/old.txt"}, _files(**{"tmpd__old.txt": "o\n"})),
    Case("tar", lambda t, d: ["tar", "cf", "out.tar", "src"], {"src/x.txt", "src/y.txt"}, {"out.tar"},
         _files(**{"src__x.txt": "x\n", "src__y.txt": "y\n"})),
    Case("gzip", lambda t, d: ["gzip", "-k", "in.txt"], {"in.txt"}, {"in.txt.gz"}, _files(**{"in.txt": "g" * 999})),
    Case("sort", lambda t, d: ["sort", "in.txt", "-o", "out.txt"], {"in.txt"}, {"out.txt"},
         _files(**{"in.txt": "c\nb\na\n"})),
    Case("dd", lambda t, d: ["dd", "if=in.bin", "of=out.bin", "bs=1k", "status=none"], {"in.bin"}, {"out.bin"},
         _files(**{"in.bin": b"\0" * 4096})),
    Case("bash_redirects", lambda t, d: ["bash", "-c", "cat < in.txt > out1.txt; echo more >> app.txt; "
                                         "cat > here.txt <<EOF\nhello\nEOF\n"],
         {"in.txt"}, {"out1.txt", "app.txt", "here.txt"}, _files(**{"in.txt": "r\n", "app.txt": "a\n"})),
    Case("o_tmpfile_linkat", lambda t, d: [str(t.bin_dir / "tmpfile_link")], set(), {"tmpfile.txt"}),
    Case("write_then_rename", _py("""
        import os
        with open("ckpt.tmp", "w") as f:
            f.write("weights")
        os.replace("ckpt.tmp", "ckpt.bin")
    """), set(), {"ckpt.bin"}),
    Case("mmap_writes", lambda t, d: [str(t.bin_dir / "mmap_write")], set(), {"mmap_new.bin", "mmap_old.bin"},
         _files(**{"mmap_old.bin": b"\0" * 4096})),
    Case("sendfile", lambda t, d: [str(t.bin_dir / "sendfile_copy"), "s"], {"in.txt"}, {"sf_out.txt"},
         _files(**{"in.txt": "sendfile\n"})),
    Case("copy_file_range", lambda t, d: [str(t.bin_dir / "sendfile_copy"), "c"], {"in.txt"}, {"cfr_dst.txt"},
         _files(**{"in.txt": "cfr\n", "cfr_dst.txt": "start\n"})),
    Case("daemon_grandchild", _py("""
        import os, time
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(0.3)  # the parent and the intermediate child are gone by now
                data = open("in.txt").read()
                open("daemon_out.txt", "w").write(data)
            os._exit(0)
        os._exit(0)
    """), {"in.txt"}, {"daemon_out.txt"}, _files(**{"in.txt": "d\n"})),
    # glibc opens these in the child, inside libc, between clone and exec.
    Case("posix_spawn_file_actions", _py("""
        import os
        pid = os.posix_spawn("/bin/cat", ["cat"], os.environ, file_actions=[
            (os.POSIX_SPAWN_OPEN, 0, "in.txt", os.O_RDONLY, 0),
            (os.POSIX_SPAWN_OPEN, 1, "spawn_out.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)])
        os.waitpid(pid, 0)
    """), {"in.txt"}, {"spawn_out.txt"}, _files(**{"in.txt": "s\n"})),
    Case("threads32", lambda t, d: [str(t.bin_dir / "threads32")], set(), {f"t{i:02d}.txt" for i in range(32)}),
    # Beyond the list: precision traps for a tracer that decides at syscall entry.
    Case("failed_opens", lambda t, d: [str(t.bin_dir / "edge_opens")], {"in.txt", "rw.txt"}, {"out.txt"},
         _files(**{"in.txt": "i\n", "exists.txt": "e\n", "rw.txt": "rw\n"})),
    Case("thread_write_rename", lambda t, d: [str(t.bin_dir / "thread_rename")], set(), {"final.bin"}),
    Case("multiprocessing_pool", _py("""
        import multiprocessing as mp
        def work(i):
            data = open("in.txt").read()
            open(f"mp_{i}.txt", "w").write(data * i)
            return i
        if __name__ == "__main__":
            with mp.get_context("fork").Pool(4) as p:
                p.map(work, range(8))
    """), {"in.txt"}, {f"mp_{i}.txt" for i in range(8)}, _files(**{"in.txt": "p\n"})),
    Case("sqlite3", _py("""
        import sqlite3
        con = sqlite3.connect("db.sqlite")
        con.execute("create table t (x)")
        con.executemany("insert into t values (?)", [(i,) for i in range(100)])
        con.commit()
        con.close()
    """), set(), {"db.sqlite"}),
    # Issue 11 item 11: an O_PATH descriptor reopened through /proc/self/fd/N, /dev/fd/N,
    # /proc/<pid>/fd/N (open, fopen, truncate): the link is the only name in the call.
    Case("fd_link_reopen", lambda t, d: [str(t.bin_dir / "fd_reopen")], {"in.txt", "in2.txt", "in3.txt"},
         {"out.txt", "out2.txt", "trunc.txt"},
         _files(**{"in.txt": "1\n", "in2.txt": "2\n", "in3.txt": "3\n", "out.txt": "o\n", "out2.txt": "o\n",
                   "trunc.txt": "long\n"})),
    Case("path_4000_bytes", _long_path_argv, set(), set()),  # expected filled in from the run
    # Issue 11 item 13: b"x\xff.txt" is displayed as the text x\xff.txt, which is also the
    # ASCII name of the second file: two files, two writes, whatever the display.
    Case("escaped_twin_names", _py(r"""
        open(b"x\xff.txt", "wb").write(b"raw")
        open(b"x\\xff.txt", "wb").write(b"ascii")
    """), set(), {os.fsdecode(b"x\xff.txt"), "x\\xff.txt"}),
    # Issue 11: a descriptor reopened through its magic link (/proc/self/fd/N, /dev/fd/N...).
    Case("fd_magic_links", lambda t, d: [str(t.bin_dir / "fd_magic_links")], {"in.txt", "in2.txt", "in3.txt", "sub/in4.txt"},
         {"out.txt"}, _files(**{"in.txt": "a\n", "in2.txt": "b\n", "in3.txt": "c\n", "sub__in4.txt": "d\n",
                                 "out.txt": "old\n"})),
    # Issue 11: openat2 and chdir/fchdir through syscall(2), then relative opens.
    Case("chdir_openat2", lambda t, d: [str(t.bin_dir / "chdir_openat2")], {"in.txt", "sub/in_sub.txt"},
         {"out2.txt", "sub/out_sub.txt", "after_fchdir.txt"},
         _files(**{"in.txt": "i\n", "sub__in_sub.txt": "s\n"})),
    Case("weird_names", _py(r"""
        import os
        data = open(b"in put.txt", "rb").read()
        open(b"new\nline.txt", "wb").write(data)
        open(b"bad\xff\xfename.txt", "wb").write(data)
    """), {"in put.txt"}, {"new\nline.txt", os.fsdecode(b"bad\xff\xfename.txt")}, _files(**{"in put.txt": "w\n"})),
]


# --- running --------------------------------------------------------------------

REAPER = textwrap.dedent("""
    # Run argv as a child subreaper and wait for *every* descendant (daemons included),
    # then exit like the command: what `strace -f` and `roar-ptrace --wait-all` do.
    import ctypes, os, signal, subprocess, sys
    ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    p = subprocess.Popen(sys.argv[1:])
    rc = p.wait()
    while True:
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    sys.exit(rc if rc >= 0 else 128 - rc)
""")


@dataclass
class Observed:
    reads: set
    writes: set
    returncode: int
    stderr: bytes = b""
    notes: list = field(default_factory=list)  # what the backend said it did not see (job `partial`)


def prepare(case: Case, root: Path) -> Path:
    d = root / case.name
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    case.setup(d)
    return d


def _snapshot(d: Path) -> dict:
    out = {}
    for dirpath, _dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(dirpath, f)
            st = os.stat(p)
            out[p] = (st.st_size, st.st_mtime_ns)
    return out


def _scope(d: Path, reduced: ev_mod.Reduced) -> tuple[set, set]:
    base = str(d) + "/"
    rel = lambda p: p[len(base):]  # noqa: E731
    reads = {rel(p) for p in reduced.inputs if p.startswith(base) and os.path.isfile(p)}
    writes = {rel(p) for p in reduced.outputs if p.startswith(base) and not os.path.isdir(p)}
    reads -= writes
    return reads, writes


def run_case(case: Case, backend: str, tools: Tools, root: Path) -> Observed:
    """Run `case` fresh under `backend` (preload | ptrace | strace | none) and reduce what it saw."""
    d = prepare(case, root)
    trace = root / f"{case.name}.{backend}.trace"
    shutil.rmtree(trace, ignore_errors=True)
    trace.mkdir()
    argv = case.argv(tools, d)
    env = dict(os.environ, **case.env)
    env.pop("LD_PRELOAD", None)
    env.pop("ROAR_TRACE_DIR", None)
    before = _snapshot(d)
    if backend == "preload":
        cmd = [PY, "-c", REAPER, tools.ptrace, "--preload-only", tools.lib, "--trace-dir", str(trace), "--", *argv]
    elif backend in PTRACE_ENV:
        cmd = [tools.ptrace, "--wait-all", "--trace-dir", str(trace), "--", *argv]
        env.update(PTRACE_ENV[backend])
    elif backend == "strace":
        cmd = ["strace", "-f", "-qq", "-xx", "-y", "-s", "8192", "-e", "signal=none",
               "-e", "trace=" + ",".join(STRACE_CALLS), "-o", str(trace / "strace.log"), "--", *argv]
    else:
        cmd = [PY, "-c", REAPER, *argv]
    p = subprocess.run(cmd, cwd=d, env=env, capture_output=True, timeout=120)
    notes: list = []
    if backend == "strace":
        events = strace_events((trace / "strace.log").read_bytes(), str(d), before)
    elif backend == "none":
        events = []
    else:
        events, notes = ev_mod.read_trace_dir(str(trace))
        notes = list(notes) + said_before_and_after(backend, argv, env, str(trace), str(d))
    reduced = ev_mod.reduce(events)
    ev_mod.settle_updates(reduced)
    reads, writes = _scope(d, reduced)
    shutil.rmtree(trace, ignore_errors=True)
    return Observed(reads, writes, p.returncode, p.stderr, notes)


def said_before_and_after(backend: str, argv: list, env: dict, trace: str, cwd: str) -> list:
    """The capture notes `roar run --tracer BACKEND` would add around the event files: what
    `capture/select.py` says before the run (a static program under preload) and what
    roar-ptrace's notes file says after it. With the reader's problems, this is everything
    that makes a job `partial`, so a miss without any note is a *silent* miss."""
    from roar_nb.capture import ptrace as ptrace_mod
    from roar_nb.capture import select as select_mod

    notes = []
    if backend == "preload":
        # Said before the run only when ptrace cannot work here; otherwise the preload
        # launcher or library hands static programs to `roar-ptrace --attach`, and what
        # that could not do is in the notes file.
        info = select_mod.inspect(argv, env.get("PATH"), cwd)
        if info.static and ptrace_mod.problem() is not None:
            notes.append(f"static executable {info.static} ran under preload")
    notes.extend(ptrace_mod.read_notes(trace)[1])
    return notes


def expected(case: Case, d: Path) -> tuple[set, set]:
    if case.name == "path_4000_bytes":
        return set(), _long_path_expected(d)
    return set(case.reads), set(case.writes)


# --- strace ground truth ----------------------------------------------------------

STRACE_CALLS = ("open", "openat", "openat2", "creat", "truncate", "rename", "renameat", "renameat2",
                "link", "linkat", "unlink", "unlinkat", "execve", "execveat", "mmap",
                "copy_file_range", "sendfile", "splice", "chdir", "fchdir")

_LINE = re.compile(rb"^(\d+)\s+(.*)$")
_CALL = re.compile(rb"^(\w+)\((.*)\)\s+=\s+(-?\d+|0x[0-9a-f]+)(?:<((?:\\x[0-9a-f]{2})*)>)?")
# A name that reaches a file through a descriptor: the file is what the descriptor names.
_FD_LINK = re.compile(r"^/(?:proc/(self|thread-self|\d+)(?:/task/\d+)?/fd|dev/fd)/(\d+)(?:/.*)?$|^/dev/std(?:in|out|err)$")
_STR = re.compile(rb'^"((?:\\x[0-9a-f]{2})*)"')
_FDPATH = re.compile(rb"<((?:\\x[0-9a-f]{2})*)>")


def _split_args(s: bytes) -> list:
    out, depth, cur, i = [], 0, bytearray(), 0
    inq = False
    while i < len(s):
        c = s[i:i + 1]
        if c == b'"':
            inq = not inq
        elif not inq and c in b"{[":
            depth += 1
        elif not inq and c in b"}]":
            depth -= 1
        if not inq and depth == 0 and s[i:i + 2] == b", ":
            out.append(bytes(cur))
            cur = bytearray()
            i += 2
            continue
        cur += c
        i += 1
    out.append(bytes(cur))
    return out


def _hex(s: bytes) -> bytes:
    return bytes.fromhex(s.replace(b"\\x", b"").decode())


def _str_arg(a: bytes) -> Optional[bytes]:
    m = _STR.match(a)
    return _hex(m.group(1)) if m else None


def _fd_path(a: bytes) -> Optional[bytes]:
    m = _FDPATH.search(a)
    return _hex(m.group(1)) if m else None


def _norm(base: bytes, p: bytes) -> str:
    full = p if p.startswith(b"/") else base + b"/" + p
    return os.fsdecode(os.path.normpath(full)).replace("//", "/")


def strace_events(log: bytes, cwd: str, before: dict) -> list:
    """Events (rust/EVENTS.md vocabulary) from an `strace -f -xx -y` log, in log order."""
    pending: dict = {}
    fds: dict = {}  # (pid, fd) -> path, from the paths `-y` prints after returned descriptors
    cwds: dict = {}  # pid -> cwd after its chdir/fchdir (the corpus never forks after one)
    events: list = []
    base_default = os.fsencode(cwd)
    t = 0
    for raw in log.splitlines():
        m = _LINE.match(raw)
        if not m:
            continue
        pid, rest = m.group(1), m.group(2)
        if rest.endswith(b"<unfinished ...>"):
            pending[pid] = rest[: -len(b"<unfinished ...>")].rstrip()
            continue
        if rest.startswith(b"<... "):
            head = pending.pop(pid, None)
            if head is None:
                continue
            rest = head + rest.split(b"resumed>", 1)[1]
        cm = _CALL.match(rest)
        if not cm:
            continue
        name, args, ret = cm.group(1).decode(), _split_args(cm.group(2)), cm.group(3)
        if ret.startswith(b"-"):
            continue  # failed call
        t += 1
        ret_path = _norm(b"/", _hex(cm.group(4))) if cm.group(4) else None
        if ret_path is not None:
            fds[(int(pid), int(ret))] = ret_path

        def through_fd(p: Optional[str]) -> Optional[str]:
            """/proc/self/fd/N, /dev/fd/N...: the file the descriptor names (what the call reached)."""
            m = _FD_LINK.match(p or "")
            if not m:
                return p
            if name.startswith("open") and ret_path is not None:
                return ret_path
            if m.group(2) is None:  # /dev/stdin...: only an open's returned path says what it reached
                return p
            owner = int(pid) if m.group(1) in ("self", "thread-self", None) else int(m.group(1))
            return fds.get((owner, int(m.group(2))), p)

        def path_at(i_dirfd: Optional[int], i_path: int) -> Optional[str]:
            p = _str_arg(args[i_path]) if i_path < len(args) else None
            if p is None:
                return None
            base = cwds.get(pid, base_default)
            if i_dirfd is not None:
                fp = _fd_path(args[i_dirfd])
                if fp:
                    base = fp
            return _norm(base, p)

        def emit(op, p, p2=None, size=0, mtime=-1):
            if p is not None:
                events.append(Event(op, p, t, size, mtime, p2, int(pid)))

        if name == "chdir":
            new = path_at(None, 0)
            if new is not None:
                cwds[pid] = os.fsencode(new)
        elif name == "fchdir":
            cwds[pid] = _fd_path(args[0]) or cwds.get(pid, base_default)
        elif name in ("open", "openat", "openat2", "creat"):
            if name == "creat":
                p, flags = path_at(None, 0), {"O_WRONLY", "O_CREAT", "O_TRUNC"}
            elif name == "open":
                p, flags = path_at(None, 0), set(args[1].decode().split("|"))
            else:
                p = path_at(0, 1)
                fl = args[2].decode()
                if name == "openat2":
                    fl = re.search(r"flags=([A-Z_|0-9x]+)", fl).group(1)
                flags = set(fl.split("|"))
            if flags & {"O_PATH", "O_TMPFILE", "O_DIRECTORY"} or p is None:
                continue
            p = through_fd(p)
            wr = "O_WRONLY" in flags
            rw = "O_RDWR" in flags
            if rw and "O_CREAT" in flags and "O_TRUNC" not in flags or rw and not flags & {"O_CREAT", "O_TRUNC"}:
                size, mtime = before.get(p, (0, -1))
                emit("W" if size == 0 else "U", p, size=size, mtime=mtime)
            elif wr or flags & {"O_CREAT", "O_TRUNC"}:
                emit("W", p)
            else:
                emit("R", p)
        elif name == "truncate":
            emit("W", through_fd(path_at(None, 0)))
        elif name == "unlink":
            emit("D", path_at(None, 0))
        elif name == "unlinkat":
            if "AT_REMOVEDIR" not in args[2].decode():
                emit("D", path_at(0, 1))
        elif name in ("rename", "renameat", "renameat2", "link", "linkat"):
            op = "M" if name.startswith("rename") else "L"
            if name in ("rename", "link"):
                a, b = path_at(None, 0), path_at(None, 1)
            else:
                a, b = path_at(0, 1), path_at(2, 3)
            flags = args[4].decode() if len(args) > 4 else ""
            if "RENAME_EXCHANGE" in flags:
                emit("W", a)
                emit("W", b)
            elif name == "linkat" and "AT_EMPTY_PATH" in flags and _str_arg(args[1]) == b"":
                emit("W", b)
            elif a is None or a.startswith("/proc/"):
                emit("W", b)
            else:
                emit(op, a, b)
        elif name in ("mmap", "copy_file_range", "sendfile", "splice"):
            if name == "mmap":
                if not ("PROT_WRITE" in args[2].decode() and "MAP_SHARED" in args[3].decode()):
                    continue
                fp = _fd_path(args[4])
            else:
                fp = _fd_path(args[0] if name == "sendfile" else args[2])
            if fp and fp.startswith(b"/") and not fp.endswith(b" (deleted)"):
                emit("W", _norm(b"/", fp))
    return events


# --- metrics ----------------------------------------------------------------------

@dataclass
class Score:
    tp: int = 0
    fn: int = 0
    fp: int = 0

    def add(self, truth: set, seen: set) -> None:
        self.tp += len(truth & seen)
        self.fn += len(truth - seen)
        self.fp += len(seen - truth)

    @property
    def recall(self) -> float:
        return 1.0 if self.tp + self.fn == 0 else self.tp / (self.tp + self.fn)

    @property
    def precision(self) -> float:
        return 1.0 if self.tp + self.fp == 0 else self.tp / (self.tp + self.fp)


@dataclass
class CaseResult:
    case: str
    backend: str
    truth_reads: set
    truth_writes: set
    reads: set
    writes: set
    returncode: int
    static: bool
    beyond_libc: bool = False
    notes: list = field(default_factory=list)

    @property
    def missed(self) -> bool:
        return bool(self.truth_reads - self.reads or self.truth_writes - self.writes)

    @property
    def silent_miss(self) -> bool:
        """Missed something while saying nothing: the job would have claimed `complete`."""
        return self.missed and not self.notes


def run_corpus(root: Path, backends=BACKENDS, cases: Optional[list] = None,
               tools: Optional[Tools] = None) -> tuple[list, list]:
    """Run every case under strace and each backend. Returns (results, strace-vs-declared mismatches)."""
    tools = tools or build()
    results, mismatches = [], []
    for case in cases or CASES:
        truth = run_case(case, "strace", tools, root)
        exp_r, exp_w = expected(case, root / case.name)
        if (truth.reads, truth.writes) != (exp_r, exp_w):
            mismatches.append((case.name, exp_r, exp_w, truth.reads, truth.writes))
        for b in backends:
            o = run_case(case, b, tools, root)
            results.append(CaseResult(case.name, b, truth.reads, truth.writes, o.reads, o.writes,
                                      o.returncode, case.static, case.beyond_libc, o.notes))
    return results, mismatches


def scores(results: list, backend: str, include_static: bool = True,
           include_beyond_libc: bool = True) -> tuple[Score, Score]:
    r, w = Score(), Score()
    for res in results:
        if res.backend != backend or (res.static and not include_static):
            continue
        if res.beyond_libc and not include_beyond_libc:
            continue
        r.add(res.truth_reads, res.reads)
        w.add(res.truth_writes, res.writes)
    return r, w
