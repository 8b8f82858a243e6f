"""In-process capture through Python audit hooks (PEP 578): the floor that always works.

Responsibility: turn the audit events CPython raises for file operations
(`open`, `os.rename`/`os.replace`, `os.remove`/`os.unlink`, `os.link`,
`os.truncate`, `shutil.rmtree`, `sqlite3.connect`, process starts) into
`model.Event`s in the vocabulary of rust/EVENTS.md, but only while a traced job
(a notebook cell) runs.

What it must not do: hash, touch the store, print, or slow down the process
when no job runs. Audit hooks cannot be removed once added, so the hook is
installed once per process and gated by a module-level flag; when the flag is
off the hook costs one global lookup and a return.

Limits (reported by the caller as capture level "python-only"): I/O done inside
C extensions that bypass Python's `open` (pyarrow, h5py, the C side of sqlite
after connect, torch) is not seen; subprocesses are seen only through the
native library injected into their environment. A process forked without exec
(`os.fork`, a multiprocessing pool with the fork start method) keeps this hook:
in it, events are written through to `<trace dir>/<pid>.pyev` (pool workers
leave through os._exit, so nothing may wait in memory) and read back by `stop`;
a forked process still running when the cell ends is named in a note (its
later I/O is not recorded). Without a trace directory the note names the fork.
Threads started by an earlier cell (`start(foreign=...)`) are left out: their
I/O is not this cell's.
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
import threading
import time
from typing import Optional

from roar_nb.model import (OP_DELETE, OP_EXEC, OP_LINK, OP_MOVE, OP_READ, OP_UPDATE, OP_WRITE,
                           Event)

NOTE_PYTHON_ONLY = ("python-level capture: file I/O inside C extensions (e.g. pyarrow, "
                    "h5py, torch) was not seen; use the roar kernel (`roar kernel install`) "
                    "for complete capture")

_O_ACCMODE = 3
_O_CREAT = os.O_CREAT
_O_TRUNC = os.O_TRUNC
_O_WRONLY = os.O_WRONLY
_O_RDWR = os.O_RDWR
_O_APPEND = os.O_APPEND

# Gate and buffer. Plain module globals: the hook reads `_active` on every audit
# event of the process (thousands per second: compile, exec, imports), so it
# must be the cheapest possible check. list.append is atomic under the GIL, so
# threads started by the cell can report concurrently without a lock.
_active = False
_events: list = []
_notes: list = []
_installed = False
_install_lock = threading.Lock()
_pid = os.getpid()
_foreign: frozenset = frozenset()  # idents of threads started by earlier cells
_foreign_touched: set = set()  # those of them that did a file operation this cell
_FILE_EVENTS = frozenset(("open", "os.rename", "os.remove", "os.link", "os.truncate", "shutil.rmtree",
                          "sqlite3.connect", "subprocess.Popen", "os.system", "os.posix_spawn",
                          "os.exec", "os.spawn", "os.fork", "os.forkpty"))
_trace_dir: Optional[str] = None  # where forked children write their events
_get_ident = threading.get_ident

NOTE_FORK = ("a process was forked from the kernel without exec (os.fork, e.g. a multiprocessing pool "
             "with the fork start method): its file I/O was not seen by python-level capture; "
             "use the roar kernel (`roar kernel install`) to trace it")


def _abspath(p) -> Optional[str]:
    if isinstance(p, int):
        return None  # open(fd): the file was opened (and reported) elsewhere
    try:
        p = os.fspath(p)
    except TypeError:
        return None
    if isinstance(p, bytes):
        p = os.fsdecode(p)
    # abspath also normalises lexically ("..", ".", "//"), as EVENTS.md requires.
    return os.path.abspath(p)


def _stat(p: str):
    try:
        return os.stat(p)
    except (OSError, ValueError):
        return None


def _on_open(path, flags, events: list) -> None:
    p = _abspath(path)
    if p is None or p.startswith(("/proc/", "/sys/", "/dev/")):
        return
    if not isinstance(flags, int):
        flags = 0
    acc = flags & _O_ACCMODE
    now = time.monotonic_ns()
    if acc == _O_RDWR and not flags & (_O_CREAT | _O_TRUNC):
        st = _stat(p)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return
        events.append(Event(OP_UPDATE, p, now, st.st_size, st.st_mtime_ns, None, _pid))
    elif acc in (_O_WRONLY, _O_RDWR) and flags & _O_APPEND and not flags & _O_TRUNC and \
            (st := _stat(p)) is not None and stat_mod.S_ISREG(st.st_mode) and st.st_size:
        # Appending keeps what was there: the version at open is an input (as the native
        # tracers classify it); a new or empty file is just written.
        events.append(Event(OP_UPDATE, p, now, st.st_size, st.st_mtime_ns, None, _pid))
    elif acc in (_O_WRONLY, _O_RDWR) or flags & (_O_CREAT | _O_TRUNC):
        # The hook runs before the call: whether the open succeeded is decided when
        # the job's events are collected (see `stop`).
        events.append(Event(OP_WRITE, p, now, 0, -1, None, _pid))
    else:
        # A read of a missing or non-regular file (directory listing, FIFO) is no input;
        # stat now, before the call, also gives the (size, mtime) EVENTS.md wants.
        st = _stat(p)
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            return
        events.append(Event(OP_READ, p, now, st.st_size, st.st_mtime_ns, None, _pid))


def _resolve_dir_fd(path, dir_fd) -> Optional[str]:
    # CPython passes -1 (not None) when no dir_fd was given.
    if dir_fd is None or not isinstance(dir_fd, int) or dir_fd < 0 or isinstance(path, int):
        return _abspath(path)
    p = os.fsdecode(os.fspath(path))
    if os.path.isabs(p):
        return os.path.normpath(p)
    try:
        base = os.readlink(f"/proc/self/fd/{dir_fd}")
    except OSError:
        return None
    return os.path.normpath(os.path.join(base, p))


def _hook(name: str, args: tuple) -> None:
    if not _active:
        return
    if _foreign and _get_ident() in _foreign:
        # A thread of an earlier cell (see carryover.ThreadWatch): not this cell's I/O,
        # but the cell's notes say that it did some.
        if name in _FILE_EVENTS:
            _foreign_touched.add(_get_ident())
        return
    translate(name, args, _events, _notes)


def translate(name: str, args: tuple, events: list, notes: list) -> None:
    """Append the `Event`s for one audit event to `events` (what it kept from being seen to
    `notes`). Also used by the Ray worker's per-call hook (roar_nb/ray/worker.py)."""
    try:
        if name == "open":
            _on_open(args[0], args[2], events)
        elif name == "os.rename":  # os.rename and os.replace
            src = _resolve_dir_fd(args[0], args[2])
            dst = _resolve_dir_fd(args[1], args[3])
            # A directory too: events.reduce moves every output recorded under it.
            if src and dst and os.path.lexists(src):
                events.append(Event(OP_MOVE, src, time.monotonic_ns(), 0, -1, dst, _pid))
        elif name == "os.remove":  # os.remove and os.unlink
            p = _resolve_dir_fd(args[0], args[1])
            if p and os.path.lexists(p):
                events.append(Event(OP_DELETE, p, time.monotonic_ns(), 0, -1, None, _pid))
        elif name == "os.link":
            src = _resolve_dir_fd(args[0], args[2])
            dst = _resolve_dir_fd(args[1], args[3])
            if src and dst and os.path.isfile(src):
                events.append(Event(OP_LINK, src, time.monotonic_ns(), 0, -1, dst, _pid))
        elif name == "os.truncate":
            p = _abspath(args[0])
            if p:
                events.append(Event(OP_WRITE, p, time.monotonic_ns(), 0, -1, None, _pid))
        elif name == "shutil.rmtree":
            # rmtree unlinks relative to directory fds; record the files it is about to remove.
            root = _resolve_dir_fd(args[0], args[1] if len(args) > 1 else None)
            if root and os.path.isdir(root) and not os.path.islink(root):
                now = time.monotonic_ns()
                for d, _dirs, files in os.walk(root):
                    for f in files:
                        events.append(Event(OP_DELETE, os.path.join(d, f), now, 0, -1, None, _pid))
        elif name == "sqlite3.connect":
            db = args[0]
            if isinstance(db, (str, bytes, os.PathLike)):
                db = os.fsdecode(os.fspath(db))
                if db and db != ":memory:" and not db.startswith("file:"):
                    p = os.path.abspath(db)
                    st = _stat(p)
                    if st is None:
                        events.append(Event(OP_WRITE, p, time.monotonic_ns(), 0, -1, None, _pid))
                    elif stat_mod.S_ISREG(st.st_mode):
                        events.append(Event(OP_UPDATE, p, time.monotonic_ns(), st.st_size,
                                             st.st_mtime_ns, None, _pid))
        elif name == "subprocess.Popen":
            exe, argv, _cwd, env = args
            prog = exe if exe is not None else (argv[0] if isinstance(argv, (list, tuple)) and argv
                                                else argv)
            p = _abspath(prog) if prog and "/" in os.fsdecode(os.fspath(prog)) else None
            if p:
                events.append(Event(OP_EXEC, p, time.monotonic_ns(), 0, -1, None, _pid))
            if env is not None and "ROAR_TRACE_DIR" not in env:
                notes.append(f"subprocess {os.fsdecode(os.fspath(prog))!s:.60} was started with its "
                              "own environment: its file I/O was not seen")
        elif name in ("os.fork", "os.forkpty") and _trace_dir is None:
            notes.append(NOTE_FORK)
        elif name in ("os.system", "os.posix_spawn", "os.exec", "os.spawn"):
            if name != "os.system":
                prog = args[1] if name == "os.spawn" else args[0]
                p = _abspath(prog)
                if p:
                    events.append(Event(OP_EXEC, p, time.monotonic_ns(), 0, -1, None, _pid))
                env = args[-1]
                if isinstance(env, dict) and "ROAR_TRACE_DIR" not in env and b"ROAR_TRACE_DIR" not in env:
                    notes.append(f"{name}({prog!s:.60}) with its own environment: its file I/O "
                                  "was not seen")
    except Exception as e:  # noqa: BLE001 - a tracing bug must never break the traced program
        try:  # ... but what it kept the hook from seeing is said, never silently dropped
            notes.append(f"python-level capture failed on a {name} event ({type(e).__name__}): "
                          "that operation's file I/O was not seen")
        except Exception:  # noqa: BLE001
            pass


class _WriteThrough(list):
    """The event list of a forked child: every event goes to its file at once."""

    def __init__(self, fd: int):
        super().__init__()
        self.fd = fd

    def append(self, e) -> None:
        from roar_nb.capture.events import encode_event

        try:
            os.write(self.fd, encode_event(e))
        except (OSError, ValueError, TypeError):
            pass


def _after_fork_in_child() -> None:
    global _events, _pid
    if not _active or _trace_dir is None:
        return
    try:
        from roar_nb.capture.events import encode_header

        pid = os.getpid()
        fd = os.open(os.path.join(_trace_dir, f"{pid}.pyev"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        os.write(fd, encode_header(pid, os.getppid()))
        _events, _pid = _WriteThrough(fd), pid
    except Exception:  # noqa: BLE001 - never break the forked program; the parent's note stays
        pass


def install() -> None:
    """Add the hook once per process (it can never be removed; it stays dormant)."""
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_hook)
            os.register_at_fork(after_in_child=_after_fork_in_child)
            _installed = True


def start(foreign: frozenset = frozenset(), trace_dir: Optional[str] = None) -> None:
    """Begin collecting: every thread's file operations count from now on, except those of
    the threads in `foreign` (idents of threads that earlier cells started); processes
    forked meanwhile write theirs into `trace_dir`."""
    global _active, _events, _notes, _pid, _foreign, _trace_dir
    install()
    _events = []
    _notes = []
    _pid = os.getpid()
    _foreign = frozenset(foreign)
    _foreign_touched.clear()
    _trace_dir = trace_dir
    _active = True


def active() -> bool:
    return _active


def stop() -> tuple[list[Event], list[str]]:
    """Stop collecting; return (events in time order, notes about what was not seen)."""
    global _active
    _active = False
    events, notes = _events, list(dict.fromkeys(_notes))
    if _trace_dir is not None:
        events, more = _forked_events(events)
        notes.extend(more)
    return settle(events), notes


def settle(events: list) -> list:
    """`events` without the write-opens that failed."""
    # The hook runs before each call, so a write-open that then failed (missing
    # directory, permission) would look like an output. Keep a write only if the
    # file exists now, or a later rename/delete in this job explains why not.
    moved_or_deleted = {e.path for e in events if e.op in (OP_MOVE, OP_DELETE)}
    moved_dirs = tuple(e.path + "/" for e in events if e.op == OP_MOVE)
    kept = []
    exists: dict = {}
    for e in events:
        if e.op == OP_WRITE and e.path not in moved_or_deleted and not e.path.startswith(moved_dirs):
            ok = exists.get(e.path)
            if ok is None:
                ok = exists[e.path] = os.path.exists(e.path)
            if not ok:
                continue
        kept.append(e)
    return kept


def _forked_events(events: list) -> tuple[list, list]:
    """The parent's events plus those its forked children wrote through, and notes about
    children that are still running (their later I/O goes nowhere)."""
    from roar_nb.capture.events import read_trace_file

    try:
        names = [n for n in os.listdir(_trace_dir) if n.endswith(".pyev")]
    except OSError:
        return events, []
    if not names:
        return events, []
    events = list(events)
    running = []
    for n in names:
        try:
            evs, _complete = read_trace_file(os.path.join(_trace_dir, n))
        except (OSError, ValueError):
            continue
        events.extend(evs)
        pid = int(n.split(".")[0])
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] != b"Z":
                    running.append(pid)
        except (OSError, IndexError):
            pass
    events.sort(key=lambda e: e.t_ns)
    notes = []
    if running:
        notes.append(f"{len(running)} process(es) forked during this cell (e.g. a multiprocessing pool) "
                     f"were still running at its end (pid {', '.join(map(str, sorted(running)[:4]))}): "
                     "their later file I/O is not recorded")
    return events, notes


def foreign_touched() -> set:
    """Idents of the `foreign` threads that did a file operation since `start`."""
    return set(_foreign_touched)
