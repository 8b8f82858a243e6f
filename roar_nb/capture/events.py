"""Reading the native event files (rust/EVENTS.md) and reducing events to inputs/outputs.

Reduction is where file semantics live: first-read-before-write makes an input,
a rename moves an output's identity to its new name, a deleted output is not an
output, a read-write open counts as a write only if the file changed.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable

from roar_nb.model import (OP_DELETE, OP_EXEC, OP_LINK, OP_MOVE, OP_READ, OP_UPDATE, OP_WRITE,
                           Event, factory, record)

MAGIC = b"ROAREV01"
_HEADER = struct.Struct("<8sII")
_RECORD = struct.Struct("<cQQqI")  # op, t_ns, size, mtime_ns, len
_LEN = struct.Struct("<I")
_TWO_PATHS = (OP_MOVE.encode(), OP_LINK.encode())


def make_trace_dir(name: str, fallback_parent: str) -> str:
    """Create the trace directory of one job (or cell) and return its path.

    On /dev/shm when it is usable: event files are written while the job runs
    (write-through for outputs), and on a tmpfs that costs nothing; on a slow disk
    5000 outputs cost hundreds of ms. The per-user parent is 0700 and must be a
    real directory we own (a shared tmpfs invites symlink games). Otherwise the
    directory goes under `fallback_parent` (the project's .roar/traces/).
    """
    shm = f"/dev/shm/roar-traces-{os.getuid()}"
    try:
        os.mkdir(shm, 0o700)
    except FileExistsError:
        pass
    except OSError:
        shm = None
    if shm is not None:
        try:
            st = os.lstat(shm)
            import stat

            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700:
                reap_stale(shm, "")  # directories of runs that were killed before cleaning up
                path = os.path.join(shm, name)
                os.mkdir(path, 0o700)
                write_owner(path)
                return path
        except OSError:
            pass
    path = os.path.join(fallback_parent, name)
    os.makedirs(path, exist_ok=True)
    return path


OWNER = "owner"  # "<pid> <start time>" of the process that made a trace directory


def _start_time(pid) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/PID/stat)."""
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY)
        try:
            data = os.read(fd, 1024)
        finally:
            os.close(fd)
        return data[data.rindex(b")") + 2:].split()[19].decode()
    except (OSError, ValueError, IndexError):
        return None


def write_owner(path: str) -> None:
    """Record who owns a trace directory, so that `reap_stale` knows when it is orphaned.

    Not an `.ev` file: `read_trace_dir` never reads it."""
    try:
        fd = os.open(os.path.join(path, OWNER), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"{os.getpid()} {_start_time('self')}".encode())
        finally:
            os.close(fd)
    except OSError:
        pass


def reap_stale(parent: str, prefix: str) -> None:
    """Remove the trace directories under `parent` (names starting with `prefix`) whose
    owner process is gone: only ours (same uid), only with an owner file naming a pid
    that no longer runs with that start time. Without an owner file (made by an older
    roar, or being made right now) a directory is left alone. Errors are ignored."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    uid = os.getuid()
    for n in names:
        if not n.startswith(prefix):
            continue
        d = os.path.join(parent, n)
        try:  # one failed open for the common case, a directory without an owner file
            fd = os.open(os.path.join(d, OWNER), os.O_RDONLY | os.O_NOFOLLOW)
        except OSError:
            continue
        try:
            if os.fstat(fd).st_uid != uid:
                continue
            pid, start = os.read(fd, 100).decode().split()
        except (OSError, ValueError):
            continue
        finally:
            os.close(fd)
        if _start_time(pid) == start:
            continue  # still running
        try:
            st = os.lstat(d)
        except OSError:
            continue
        import stat
        import shutil

        if stat.S_ISDIR(st.st_mode) and st.st_uid == uid:  # a real directory of ours, not a link
            shutil.rmtree(d, ignore_errors=True)


def encode_header(pid: int, ppid: int) -> bytes:
    """The header of an event file (for writers in Python: the audit hook's forked children)."""
    return _HEADER.pack(MAGIC, pid, ppid)


def encode_event(e: Event) -> bytes:
    """One record of an event file, as `read_trace_file` reads it."""
    p = os.fsencode(e.path)
    out = _RECORD.pack(e.op.encode(), e.t_ns, max(e.size, 0), e.mtime_ns, len(p)) + p
    if e.op in (OP_MOVE, OP_LINK):
        p2 = os.fsencode(e.path2 or "")
        out += _LEN.pack(len(p2)) + p2
    return out


class TraceFileError(ValueError):
    """An event file is truncated or not in the expected format."""


def read_trace_file(path: str) -> tuple[list[Event], bool]:
    """Events of one per-process file, and whether it was complete (not truncated)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < _HEADER.size:
        return [], len(data) == 0
    magic, pid, _ppid = _HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise TraceFileError(f"{path}: not a roar event file")
    events: list[Event] = []
    off, n = _HEADER.size, len(data)
    fsdecode = os.fsdecode
    while off < n:
        if off + _RECORD.size > n:
            return events, False
        op, t_ns, size, mtime_ns, plen = _RECORD.unpack_from(data, off)
        off += _RECORD.size
        if off + plen > n:
            return events, False
        p = fsdecode(data[off:off + plen])
        off += plen
        p2 = None
        if op in _TWO_PATHS:
            if off + 4 > n:
                return events, False
            (l2,) = _LEN.unpack_from(data, off)
            off += 4
            if off + l2 > n:
                return events, False
            p2 = fsdecode(data[off:off + l2])
            off += l2
        events.append(Event(op.decode("ascii", "replace"), p, t_ns, size, mtime_ns, p2, pid))
    return events, True


def read_trace_dir(trace_dir: str) -> tuple[list[Event], list[str]]:
    """All events of a job's trace directory in time order, and problems worth telling the user."""
    events: list[Event] = []
    problems: list[str] = []
    try:
        names = os.listdir(trace_dir)
    except OSError as e:
        return [], [f"trace directory unreadable: {e.strerror}"]
    for name in names:
        if not name.endswith(".ev"):
            continue
        try:
            evs, complete = read_trace_file(os.path.join(trace_dir, name))
        except (OSError, TraceFileError) as e:
            problems.append(str(e))
            continue
        if not complete:
            problems.append(f"process {name.split('-')[0]} was killed before flushing all its events")
        events.extend(evs)
    events.sort(key=lambda e: e.t_ns)
    return events, problems


@record
class Reduced:
    """What a job did to files, by absolute path."""

    inputs: dict = factory(dict)  # path -> (size, mtime_ns) seen at first read
    outputs: dict = factory(dict)  # path -> True
    updates: dict = factory(dict)  # path -> (size, mtime_ns): read-write, undecided
    deleted: set = factory(set)
    executed: set = factory(set)


def reduce(events: Iterable[Event], ignore_read=lambda p: False) -> Reduced:
    """Fold time-ordered events into inputs and outputs (see module docstring)."""
    r = Reduced()
    written: set[str] = set()  # paths this job has written (so later reads are internal)
    for e in events:
        op, p = e.op, e.path
        if op == OP_READ:
            if p not in written and p not in r.inputs and not ignore_read(p):
                r.inputs[p] = (e.size, e.mtime_ns)
        elif op == OP_WRITE:
            written.add(p)
            r.outputs[p] = True
            r.deleted.discard(p)
            r.updates.pop(p, None)
        elif op == OP_UPDATE:
            if p not in written and p not in r.updates:
                r.updates[p] = (e.size, e.mtime_ns)
        elif op == OP_DELETE:
            r.outputs.pop(p, None)
            r.updates.pop(p, None)
            written.discard(p)
            r.deleted.add(p)
        elif op == OP_MOVE and e.path2:
            dst = e.path2
            if p in r.updates and p not in written:
                # A pre-existing file updated in place then renamed: its content was read.
                r.inputs.setdefault(p, r.updates.pop(p))
            r.outputs.pop(p, None)
            written.discard(p)
            r.deleted.add(p)
            r.deleted.discard(dst)
            # A directory rename moves every output recorded under it.
            under = p + "/"
            for q in [q for q in r.outputs if q.startswith(under)]:
                del r.outputs[q]
                moved = dst + q[len(p):]
                r.outputs[moved] = True
                written.add(moved)
            r.updates.pop(dst, None)
            written.add(dst)
            r.outputs[dst] = True
        elif op == OP_LINK and e.path2:
            written.add(e.path2)
            r.outputs[e.path2] = True
        elif op == OP_EXEC:
            r.executed.add(p)
    return r


def settle_updates(r: Reduced) -> None:
    """Decide read-write opens once the job has ended: changed -> output, unchanged -> input."""
    for p, (size, mtime_ns) in list(r.updates.items()):
        try:
            st = os.stat(p)
        except OSError:
            continue  # vanished: neither
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            r.outputs[p] = True
        else:
            r.inputs.setdefault(p, (size, mtime_ns))
    r.updates.clear()
