"""What a traced cell inherits from earlier cells and leaves to later ones: open files, running threads.

Responsibility: the cheap begin/end snapshots that keep a cell honest about I/O
that no open() inside its window shows.

* Descriptors opened before the cell (a log file, a sqlite connection, an HDF5
  file kept open across cells): the regular files open in the kernel process at
  begin, with their access mode, file offset and (size, mtime), compared at end.
  A write-capable file that changed is an output; a file whose offset moved was
  read (an input); a readable file whose offset did not move may still have been
  read with pread or through mmap (sqlite does exactly that): nobody can know,
  so the cell is `partial` with a note naming the file.
* Threads: a thread started by a traced cell and still running when it ends
  does its later I/O in some other cell's window, or between cells where
  nothing records it. The starting cell gets a note and is `partial`; a later
  cell during which such a thread did read/write system calls (per-thread
  counters in /proc/self/task/TID/io) gets a note naming the starting cell.

Must not: hash, touch the store, print, import IPython, or cost much more than
an fstat per descriptor (it runs around every traced cell: ~0.12 ms of CPU for
the 68 descriptors of a roar kernel). Everything here reads /proc with os.open/os.read (no Python
`open`, so the audit hook never sees it) and fails soft: no /proc, no snapshot.
"""

from __future__ import annotations

import os
import stat as stat_mod
import threading
import time
from typing import Callable, Optional

from roar_nb.model import OP_READ, OP_UPDATE, OP_WRITE, Event

_O_ACCMODE = 3
_O_PATH = getattr(os, "O_PATH", 0o10000000)
_SKIP = ("/dev/", "/proc/", "/sys/")
# Threads that only wait for a child process to exit (asyncio's ThreadedChildWatcher, used by
# `%%bash` and asyncio subprocesses): the child's I/O is traced as a process, the thread has none.
_WAITERS = ("asyncio-waitpid-",)


def _read_proc(path: str) -> bytes:
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return os.read(fd, 4096)
    finally:
        os.close(fd)


def _fd_pos_flags(fd: int) -> tuple[int, int]:
    """(offset, open flags) of one descriptor of this process, from /proc/self/fdinfo."""
    data = _read_proc(f"/proc/self/fdinfo/{fd}")
    pos = flags = -1
    for line in data.split(b"\n", 2)[:2]:
        if line.startswith(b"pos:"):
            pos = int(line[4:])
        elif line.startswith(b"flags:"):
            flags = int(line[6:], 8)
    return pos, flags


def open_files(exclude: tuple = ()) -> Optional[dict]:
    """{fd: (path, access mode, offset, dev, ino, size, mtime_ns)} of the regular files open
    in this process, outside `exclude` (path prefixes ending in "/"); None without /proc."""
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return None
    out = {}
    for name in names:
        fd = int(name)
        if fd <= 2:
            continue  # stdin/out/err, inherited from whatever started the kernel (a server log)
        try:
            # fstat first: most descriptors of a kernel are sockets, pipes and eventfds, and
            # an fstat is cheaper than a readlink or an fdinfo read.
            st = os.fstat(fd)
            if not stat_mod.S_ISREG(st.st_mode):
                continue
            target = os.readlink("/proc/self/fd/" + name)
            # Deleted files (unlinked temporary files: the kernel keeps some) have no path to record.
            if target.startswith(_SKIP) or target.startswith(exclude) or target.endswith(" (deleted)"):
                continue
            pos, flags = _fd_pos_flags(fd)
            if flags & _O_PATH:
                continue  # names a file but can neither read nor write it
        except (OSError, ValueError):
            continue  # closed meanwhile (or listdir's own descriptor)
        out[fd] = (target, flags & _O_ACCMODE, pos, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def compare(before: Optional[dict], t_ns: int,
            ignore_read: Callable[[str], bool] = lambda p: False) -> tuple[list, list, bool]:
    """Events, notes and whether the cell is partial, for files open since before the cell.

    `before` is what `open_files` said at begin; `t_ns` the begin time (CLOCK_MONOTONIC,
    the clock of every event), so a rename later in the cell still moves these outputs.
    `ignore_read`: the project's read filter (a package file a library keeps open is no
    input even if read, so not knowing whether it was read is nothing to say)."""
    events: list = []
    unknown: list = []
    if not before:
        return events, [], False
    for fd, (path, acc, pos, dev, ino, size, mtime_ns) in before.items():
        new_pos = None
        try:
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != (dev, ino):
                raise OSError  # closed and the number reused
            new_pos, _ = _fd_pos_flags(fd)
        except (OSError, ValueError):
            try:
                st = os.stat(path)  # closed during the cell: the file itself tells if it changed
            except OSError:
                continue  # gone: a delete or rename in the cell was recorded as such
            if (st.st_dev, st.st_ino) != (dev, ino):
                continue
        changed = (st.st_size, st.st_mtime_ns) != (size, mtime_ns)
        moved = new_pos is not None and new_pos != pos
        if changed and acc == os.O_WRONLY:
            events.append(Event(OP_WRITE, path, t_ns, 0, -1, None, os.getpid()))
        elif changed and acc == os.O_RDWR:
            # The version seen at begin, settled like any read-write open at the job's end.
            events.append(Event(OP_UPDATE, path, t_ns, size, mtime_ns, None, os.getpid()))
        elif acc != os.O_WRONLY:
            if moved:
                events.append(Event(OP_READ, path, t_ns, size, mtime_ns, None, os.getpid()))
            elif not ignore_read(path):
                unknown.append(path)
    notes = []
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:3]) + (" ..." if len(set(unknown)) > 3 else "")
        notes.append(f"open since before this cell: {shown}; reads through it that do not move the "
                     "file offset (pread, mmap: sqlite, HDF5) cannot be seen, so it is not recorded as an input")
    return events, notes, bool(unknown)


def _task_io(t: threading.Thread) -> Optional[tuple]:
    """(read calls, write calls) a thread has made, or None when the kernel does not say."""
    tid = getattr(t, "native_id", None)
    if tid is None:
        return None
    try:
        data = _read_proc(f"/proc/self/task/{tid}/io")
    except OSError:
        return None
    vals = dict(line.split(b": ") for line in data.splitlines() if b": " in line)
    try:
        return int(vals[b"syscr"]), int(vals[b"syscw"])
    except (KeyError, ValueError):
        return None


def _describe(t: threading.Thread) -> str:
    target = getattr(t, "_target", None)
    fn = getattr(target, "__qualname__", None) or getattr(target, "__name__", None)
    return f"{t.name!r}" + (f" ({fn})" if fn else "")


# Helper threads of process pools (multiprocessing.Pool's task/result/worker handlers,
# Queue feeders, concurrent.futures' and loky's executor managers) only move pickled
# messages over pipes; the pool's workers do the file I/O, and they are processes that
# follow the kernel's control block cell by cell. Such threads are the pool's machinery.
# Worker *threads* (ThreadPool's `worker`, ThreadPoolExecutor's `_worker`) run user code:
# never on this list.
_POOL_MACHINERY = {
    ("multiprocessing.pool", "Pool._handle_workers"), ("multiprocessing.pool", "Pool._handle_tasks"),
    ("multiprocessing.pool", "Pool._handle_results"), ("multiprocessing.queues", "Queue._feed"),
}
_POOL_THREAD_CLASSES = ("concurrent.futures.process._ExecutorManagerThread",
                        "joblib.externals.loky.process_executor._ExecutorManagerThread",
                        "joblib.externals.loky.backend.queues.Queue._feed")


def pool_machinery(t: threading.Thread) -> bool:
    """Whether `t` is a process pool's own helper thread (see _POOL_MACHINERY)."""
    target = getattr(t, "_target", None)
    if target is not None:
        key = (getattr(target, "__module__", ""), getattr(target, "__qualname__", ""))
        return key in _POOL_MACHINERY or f"{key[0]}.{key[1]}" in _POOL_THREAD_CLASSES
    cls = type(t)
    return any(f"{c.__module__}.{c.__qualname__}" in _POOL_THREAD_CLASSES for c in cls.__mro__)


def pool_process_pids() -> set:
    """Pids (as text) of the processes multiprocessing and joblib/loky keep for this process:
    pool workers of any start method, the forkserver, the resource trackers. They live on
    between cells by design and follow the kernel's control block; any other process a
    cell left running is a daemon or background job the cell's note must name.

    Reads module state only (never `active_children()`, which reaps children)."""
    import sys

    pids: set = set()
    proc = sys.modules.get("multiprocessing.process")
    for p in list(getattr(proc, "_children", ()) or ()):
        popen = getattr(p, "_popen", None)
        if getattr(popen, "pid", None):
            pids.add(str(popen.pid))
    fs = getattr(sys.modules.get("multiprocessing.forkserver"), "_forkserver", None)
    for mod, attr in (("multiprocessing.resource_tracker", "_resource_tracker"),
                      ("joblib.externals.loky.backend.resource_tracker", "_resource_tracker")):
        rt = getattr(sys.modules.get(mod), attr, None)
        if getattr(rt, "_pid", None):
            pids.add(str(rt._pid))
    if getattr(fs, "_forkserver_pid", None):
        pids.add(str(fs._forkserver_pid))
    return pids


class ThreadWatch:
    """Threads that outlive the traced cell that started them.

    `ignore` says which threads are the kernel's own machinery (e.g. the event-loop
    thread IPython starts for the first `%%bash`), never reported."""

    def __init__(self, ignore: Callable[[threading.Thread], bool] = lambda t: False):
        self.ignore = ignore
        self.started_by: dict = {}  # Thread -> ref of the cell that started it ("@3")
        self._before: set = set()
        self._foreign: dict = {}  # Thread -> (ref, task io at begin)

    def begin(self) -> set:
        """Snapshot at cell begin; returns the idents of threads started by earlier cells."""
        self._before = set(threading.enumerate())
        self._foreign = {}
        for t, ref in list(self.started_by.items()):
            if t.is_alive():
                self._foreign[t] = (ref, _task_io(t))
            else:
                del self.started_by[t]
        return {t.ident for t in self._foreign}

    def end(self, counted_here: bool, touched=()) -> tuple[list, list, bool]:
        """(threads this cell started that still run, notes, partial).

        `counted_here`: the I/O of other threads during the window is in this cell's
        events (native capture traces every thread); otherwise it was left out.
        `touched`: idents of earlier cells' threads known to have done file operations
        (the audit hook sees opens and renames that make no read/write call)."""
        notes: list = []
        partial = False
        for t, (ref, io0) in self._foreign.items():
            io1 = _task_io(t) if t.is_alive() else None
            if io0 is not None and io1 is not None and io1 == io0 and t.ident not in touched:
                continue  # it made no read/write system call during this cell
            if counted_here:
                partial = True
                notes.append(f"a thread started by {ref} ({_describe(t)}) was running during this cell: "
                             "its file I/O, if any, is counted as this cell's")
            else:
                notes.append(f"a thread started by {ref} ({_describe(t)}) was running during this cell: "
                             f"its file I/O is not counted as this cell's (and not recorded for {ref})")
        # Dummy threads are C threads that once called into Python: threading cannot tell
        # whether they still run (is_alive is always True), so they would be named forever.
        lingering = [t for t in threading.enumerate()
                     if t not in self._before and t.is_alive() and not t.name.startswith(_WAITERS)
                     and not isinstance(t, threading._DummyThread) and not self.ignore(t)
                     and not pool_machinery(t)]
        if lingering:
            partial = True
            names = ", ".join(_describe(t) for t in lingering[:3]) + (" ..." if len(lingering) > 3 else "")
            notes.append(f"a thread started by this cell was still running at its end ({names}): "
                         "its later file I/O is not attributed to this cell")
        self._before = set()
        self._foreign = {}
        return lingering, notes, partial

    def adopt(self, threads: list, ref: str) -> None:
        """Remember which cell started `threads` (called once the cell's job has its ref)."""
        for t in threads:
            self.started_by[t] = ref


def now_ns() -> int:
    return time.monotonic_ns()
