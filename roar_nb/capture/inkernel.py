"""Capturing one notebook cell inside the kernel process, with the best backend available.

1. Native: the kernel was started by the roar kernelspec with the preload
   library in LD_PRELOAD, dormant. `roar_begin(trace_dir)` / `roar_end()` are
   called through ctypes around the cell, so C extensions (pyarrow, sqlite3)
   and every subprocess are seen. Capture level "complete". The kernel also
   hosts a control block (a shared page; rust/EVENTS.md) that `roar_begin` /
   `roar_end` publish to: worker processes started in one cell and used in a
   later one (a Pool, a forkserver, loky) record into whichever cell runs now,
   and nothing between cells.
2. Python level: the audit hook (capture/audit.py), plus LD_PRELOAD and
   ROAR_TRACE_DIR put into os.environ for the duration of the cell so that
   subprocesses started from the cell are still traced natively. Capture level
   "python-only", with a note saying what was not seen.

This module hands back events and notes; it never hashes, never touches the
store, never imports IPython and never prints (the magic decides what to say).
It also drops the kernel's own bookkeeping files, which are not the user's I/O:
while a cell runs, the kernel's other threads keep writing IPython's history
database (and its -journal) under the IPython dir, Jupyter touches connection
files in its runtime dir, and roar itself reads and writes .roar/ and its trace
files. The native library sees all of those because it traces every thread of
the process, so they are removed here, by path prefix.

What the cell inherits (files opened before it, threads of earlier cells) is
checked by capture/carryover.py around every cell. The kernel's trace directory
(/dev/shm/roar-kernel-<pid>-*) is removed at exit, and those of kernels that
are gone are reaped when the next one starts.
"""

from __future__ import annotations

import atexit
import ctypes
import os
import shutil
import tempfile
from typing import Optional

from roar_nb.capture import audit, carryover
from roar_nb.capture import events as ev_mod
from roar_nb.capture import preload, ptrace
from roar_nb.config import ENV_CONTROL, ENV_PTRACE_BIN, ENV_TRACE_DIR
from roar_nb.model import (CAPTURE_COMPLETE, CAPTURE_PARTIAL, CAPTURE_PYTHON, OP_EXEC, OP_LINK, OP_MOVE,
                           Event, factory, record)

_PTRACE_BIN: list = []


def _ptrace_bin() -> str:
    """The roar-ptrace binary if ptrace can work here, else "" (the library then notes static programs)."""
    if not _PTRACE_BIN:
        _PTRACE_BIN.append((ptrace.binary_path() or "") if ptrace.problem() is None else "")
    return _PTRACE_BIN[0]


HOW_TO_NATIVE = ("roar: python-level capture only (C extensions such as pyarrow are not seen); "
                 "for complete capture run `roar kernel install` and pick the \"Python 3 (roar)\" kernel")


def loaded_library() -> Optional[str]:
    """Path of the preload library if it is mapped into this process (i.e. LD_PRELOADed)."""
    return preload.mapped_library()


class Native:
    """The control functions of the in-process preload library."""

    def __init__(self, path: str):
        # dlopen of an already-loaded object returns the same handle: these are the
        # functions of the copy that LD_PRELOAD put in front of libc.
        lib = ctypes.CDLL(path)
        self.begin_fn = lib.roar_begin
        self.begin_fn.argtypes = [ctypes.c_char_p]
        self.begin_fn.restype = ctypes.c_int
        self.end_fn = lib.roar_end
        self.end_fn.restype = ctypes.c_int
        self.active_fn = lib.roar_active
        self.active_fn.restype = ctypes.c_int
        # Absent from libraries built before the control block: workers then keep the
        # trace directory they started with (the old behaviour).
        self.control_fn = getattr(lib, "roar_control_create", None)
        if self.control_fn is not None:
            self.control_fn.argtypes = [ctypes.c_char_p]
            self.control_fn.restype = ctypes.c_int
            self.control_path_fn = lib.roar_control_path
            self.control_path_fn.restype = ctypes.c_char_p
        self.path = path

    def begin(self, trace_dir: str) -> bool:
        return self.begin_fn(os.fsencode(trace_dir)) == 0

    def end(self) -> bool:
        return self.end_fn() == 0

    def active(self) -> bool:
        return bool(self.active_fn())

    def control(self, path: str) -> bool:
        """Create the control block at `path` and publish begin/end to it from now on."""
        return self.control_fn is not None and self.control_fn(os.fsencode(path)) == 0

    def hosted(self) -> Optional[str]:
        """The control block this process hosts already (made at kernel start), if any."""
        p = self.control_path_fn() if self.control_fn is not None else None
        return os.fsdecode(p) if p else None


@record
class CellTrace:
    """What capture found out about one cell."""

    events: list
    backend: str
    capture_level: str
    notes: list = factory(list)
    threads: list = factory(list)  # threads the cell started that were still running at its end


class CellCapture:
    """Begins and ends capture around cells; one per kernel (one cell runs at a time)."""

    def __init__(self, exclude: tuple = (), ignore_thread=lambda t: False):
        self.native: Optional[Native] = None
        self.problem: Optional[str] = None  # why native capture is unavailable, once
        lib = loaded_library()
        if lib:
            try:
                self.native = Native(lib)
            except (OSError, AttributeError) as e:
                self.problem = f"roar: the preload library in this kernel has no control functions ({e})"
        # A library for subprocesses in python-level mode (found even without the kernelspec).
        self.child_lib = lib
        if self.child_lib is None and preload.problem() is None:
            self.child_lib = preload.library_path()
        if self.child_lib is not None:
            from roar_nb.errors import TracerUnavailable

            try:  # a path with a space or colon cannot go into LD_PRELOAD as is
                self.child_lib = preload.injectable_path(self.child_lib)
            except TracerUnavailable:
                self.child_lib = None
        if self.native is None and self.problem is None:
            self.problem = HOW_TO_NATIVE
        # Trace files live in a private temporary directory, not in .roar/, so a
        # read-only project still gets native capture of subprocesses.
        # /dev/shm when possible: a per-cell mkdir/rmdir on tmpfs costs microseconds,
        # on an overlay or network filesystem it can cost a large part of the cell budget.
        shm = "/dev/shm" if os.access("/dev/shm", os.W_OK | os.X_OK) else None
        ev_mod.reap_stale(shm or tempfile.gettempdir(), "roar-kernel-")
        # The control block: processes that outlive a cell (pool workers, a forkserver,
        # loky) follow the kernel's begin/end through it instead of the trace directory
        # frozen in their environment when they started (rust/EVENTS.md). Inherited by
        # every descendant through the environment; `roar run` drops it (a job of its own).
        # The roar kernelspec has the library make it when the kernel starts (so workers
        # created before `%load_ext roar` follow too), in a private directory that then
        # serves as ours; otherwise (another launcher, a reload) it is made here.
        self.control: Optional[str] = None
        if os.environ.get(ENV_CONTROL) == "host":
            # The kernelspec asked for a host, but no library in this process answered:
            # children that load one must not each become a host of their own.
            del os.environ[ENV_CONTROL]
        hosted = self.native.hosted() if self.native is not None else None
        if hosted and os.environ.get(ENV_CONTROL) == hosted and os.path.isfile(hosted):
            self.trace_base = os.path.dirname(hosted)
            self.control = hosted
        else:
            # The pid in the name helps a human; the owner file lets the next kernel reap it.
            self.trace_base = tempfile.mkdtemp(prefix=f"roar-kernel-{os.getpid()}-", dir=shm)
            path = os.path.join(self.trace_base, "control")
            if self.native is not None and self.native.control(path):
                self.control = path
                os.environ[ENV_CONTROL] = path
        # An owner file (pid + start time) lets the next kernel reap this directory if we die.
        ev_mod.write_owner(self.trace_base)
        atexit.register(shutil.rmtree, self.trace_base, True)
        self.exclude = tuple(p.rstrip("/") + "/" for p in exclude if p) + (self.trace_base + "/",)
        self.threads = carryover.ThreadWatch(ignore_thread)
        self._fds: Optional[dict] = None
        self.ignore_read = lambda p: False  # the project's read filter, set by the magic
        self._t_begin = 0
        self._n = 0
        self._trace_dir: Optional[str] = None
        self._mode: Optional[str] = None
        self._saved_env: dict = {}
        self._fallback_note: Optional[str] = None

    @property
    def backend(self) -> str:
        return "preload" if self.native is not None else "audit"

    def running(self) -> bool:
        return self._mode is not None

    def begin(self) -> None:
        self._n += 1
        trace_dir = os.path.join(self.trace_base, str(self._n))
        os.mkdir(trace_dir)
        self._trace_dir = trace_dir
        # Subprocesses: the native library propagates itself into exec'd children
        # while active; setting the variables here as well covers python-level
        # mode, and children that build their environment from os.environ.
        self._set_env(trace_dir)
        foreign = self.threads.begin()
        self._fds = carryover.open_files(self.exclude)  # before the window: our /proc reads are not the cell's
        self._t_begin = carryover.now_ns()
        if self.native is not None:
            if self.native.begin(trace_dir):
                self._mode = "preload"
                return
            self._fallback_note = "the native library refused to begin; python-level capture for this cell"
        audit.start(foreign, trace_dir)
        self._mode = "audit"

    def _set_env(self, trace_dir: str) -> None:
        self._saved_env = {k: os.environ.get(k) for k in ("LD_PRELOAD", ENV_TRACE_DIR, ENV_PTRACE_BIN)}
        if self.child_lib:
            os.environ["LD_PRELOAD"] = preload.compose(self.child_lib, os.environ.get("LD_PRELOAD"))
            os.environ[ENV_TRACE_DIR] = trace_dir
            # Static programs a cell starts are handed to the ptrace tracer (roar-preload's attach.rs).
            os.environ[ENV_PTRACE_BIN] = _ptrace_bin()

    def _restore_env(self) -> None:
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        self._saved_env = {}

    def end(self) -> CellTrace:
        """Stop capture (I/O from now on is not the cell's) and collect the cell's events."""
        mode, trace_dir = self._mode, self._trace_dir
        self._mode = None
        notes: list[str] = []
        events: list[Event] = []
        if mode == "preload":
            self.native.end()
            level = CAPTURE_COMPLETE
        elif mode == "audit":
            events, notes = audit.stop()
            level = CAPTURE_PYTHON
            if self._fallback_note:
                notes.insert(0, self._fallback_note)
                self._fallback_note = None
            else:
                notes.insert(0, audit.NOTE_PYTHON_ONLY if self.problem in (None, HOW_TO_NATIVE)
                             else f"python-level capture ({self.problem})")
        else:
            return CellTrace([], self.backend, CAPTURE_PARTIAL, ["capture was not running"])
        self._restore_env()
        # Pool workers, a forkserver and resource trackers outlive cells by design (they follow
        # the control block): not "processes still running when the job ended".
        native_events, problems = (ev_mod.read_trace_dir(trace_dir, exempt=carryover.pool_process_pids())
                                   if trace_dir else ([], []))
        if trace_dir:
            problems += ptrace.read_notes(trace_dir)[1]  # from `roar-ptrace --attach` (static programs)
        if problems:
            notes.extend(problems)
            if level == CAPTURE_COMPLETE:
                level = CAPTURE_PARTIAL
        fd_events, fd_notes, fd_partial = carryover.compare(self._fds, self._t_begin, self.ignore_read)
        lingering, th_notes, th_partial = self.threads.end(
            counted_here=mode == "preload", touched=audit.foreign_touched() if mode == "audit" else ())
        self._fds = None
        notes.extend(fd_notes + th_notes)
        if (fd_partial or th_partial) and level == CAPTURE_COMPLETE:
            level = CAPTURE_PARTIAL
        events = sorted(events + native_events + fd_events, key=lambda e: e.t_ns) \
            if events or fd_events else native_events
        if mode == "audit" and self.child_lib is None and any(e.op == OP_EXEC for e in events):
            notes.append("subprocesses ran untraced (native library not found)")
        shutil.rmtree(trace_dir, ignore_errors=True)
        self._trace_dir = None
        return CellTrace(self._drop_excluded(events), mode, level, notes, lingering)

    def _drop_excluded(self, events: list) -> list:
        ex = self.exclude
        out = []
        for e in events:
            if e.path.startswith(ex):
                if e.op in (OP_MOVE, OP_LINK) and e.path2 and not e.path2.startswith(ex):
                    # Something of ours moved into the user's space: it appears as written there.
                    out.append(Event("W", e.path2, e.t_ns, 0, -1, None, e.pid))
                continue
            if e.path2 and e.path2.startswith(ex):
                continue
            out.append(e)
        return out

    def close(self) -> None:
        if self._mode is not None:
            self.end()
        if self.control is not None and os.environ.get(ENV_CONTROL) == self.control:
            del os.environ[ENV_CONTROL]
        shutil.rmtree(self.trace_base, ignore_errors=True)
