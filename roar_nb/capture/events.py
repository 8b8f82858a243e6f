"""Reading the native event files (rust/EVENTS.md) and reducing events to inputs/outputs.

Reduction is where file semantics live: first-read-before-write makes an input,
a rename moves an output's identity to its new name, a deleted output is not an
output, a read-write open counts as a write only if the file changed. A
pre-existing file changed in place (a read-write or append open of a file that
had content) is an output *and* an update: the version seen at open is an input
of the job, which `session.record_job` turns into an input edge.

Reading a trace directory also turns what the tracer says it did not see into
one-line problems (which make the job partial): `N` records (a static or setuid
program started untraced, io_uring, a syscall it cannot follow, a name it could
not make absolute), `.lost` markers (records that could not be written), and
trace files still locked by a live process (one that outlived the command: its
later I/O is not the job's).
"""

from __future__ import annotations

import os
import struct
import time
from collections.abc import Iterable

from roar_nb.model import (OP_DELETE, OP_EXEC, OP_LINK, OP_MOVE, OP_NOTE, OP_READ, OP_UPDATE,
                           OP_WRITE, Event, factory, record)

MAGIC = b"ROAREV01"
_HEADER = struct.Struct("<8sII")
_RECORD = struct.Struct("<cQQqI")  # op, t_ns, size, mtime_ns, len
_LEN = struct.Struct("<I")
_TWO_PATHS = (OP_MOVE.encode(), OP_LINK.encode(), OP_NOTE.encode())
# Below this much free space on /dev/shm, traces go to the project instead: a trace
# write that fails loses records (the library then leaves a `.lost` marker, and the
# job is partial), and Docker's 64 MiB /dev/shm is often nearly full (PyTorch).
SHM_MIN_FREE = 16 << 20
# `N` record kind written by a nested `roar run` into its parent's trace directory.
NESTED_JOB = "job"
# `N` record kind for a name the tracer saw but could not make absolute (`unresolved ERRNO`).
UNRESOLVED = "unresolved"


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
            vfs = os.statvfs(shm)
            if vfs.f_bavail * vfs.f_frsize < SHM_MIN_FREE:
                raise OSError("/dev/shm is (nearly) full")
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
            if n.startswith("roar-kernel-"):
                _reap_unowned_host(d, uid)
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


def _reap_unowned_host(d: str, uid: int) -> None:
    """A kernel's private directory made by the preload library itself (`ROAR_CONTROL=host`,
    before any `%load_ext roar` wrote an owner file) holds only its control block, whose
    header names the host's pid (rust/EVENTS.md). The host keeps the block mapped while it
    lives, so a directory whose block no live process of that pid maps was left by a kernel
    that was killed: removed. Anything unexpected leaves the directory alone."""
    import struct

    block = os.path.join(d, "control")
    try:
        fd = os.open(block, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        if os.fstat(fd).st_uid != uid:
            return
        head = os.read(fd, 36)
    except OSError:
        return
    finally:
        os.close(fd)
    if len(head) < 36 or head[:8] != b"ROARCTL1":
        return  # being made right now, or not ours
    pid = struct.unpack_from("<I", head, 32)[0]
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            if os.fsencode(block) in f.read():
                return  # its host still runs
    except OSError:
        pass  # no such process
    try:
        if sorted(os.listdir(d)) != ["control"]:
            return
    except OSError:
        return
    import shutil

    shutil.rmtree(d, ignore_errors=True)


def encode_header(pid: int, ppid: int) -> bytes:
    """The header of an event file (for writers in Python: the audit hook's forked children)."""
    return _HEADER.pack(MAGIC, pid, ppid)


def encode_event(e: Event) -> bytes:
    """One record of an event file, as `read_trace_file` reads it."""
    p = os.fsencode(e.path)
    out = _RECORD.pack(e.op.encode(), e.t_ns, max(e.size, 0), e.mtime_ns, len(p)) + p
    if e.op.encode() in _TWO_PATHS:
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


def read_trace_dir(trace_dir: str, exempt: Iterable = ()) -> tuple[list[Event], list[str]]:
    """All events of a job's trace directory in time order, and problems worth telling the user.

    `exempt`: pids (text) of processes meant to outlive the job (a kernel's pool workers,
    which follow its control block), never reported as still running."""
    events: list[Event] = []
    problems: list[str] = []
    try:
        names = os.listdir(trace_dir)
    except OSError as e:
        return [], [f"trace directory unreadable: {e.strerror}"]
    alive: list[str] = []
    unresolved: list = []  # `N unresolved` records: one note for all of them
    pids: set[str] = set()
    todo, listed = list(names), set(names)
    while todo:
        name = todo.pop(0)
        if name.endswith(".lost"):
            problems.append(_lost_text(name))
            continue
        if name.endswith(".fork"):  # created for a child at fork; held by it until it claims it
            fork_path = os.path.join(trace_dir, name)
            if _still_held(fork_path):
                alive.append("a child of " + name.split("-")[0])
            elif not os.path.exists(fork_path):
                # Claimed (renamed to the child's .ev) since we listed the directory: list
                # again, or a daemon that was just starting would go unseen.
                try:
                    again = os.listdir(trace_dir)
                except OSError:
                    again = []
                fresh = [n for n in again if n not in listed]
                listed.update(fresh)
                todo.extend(fresh)
            continue
        if not name.endswith(".ev"):
            continue
        pid = name.split("-")[0]
        pids.add(pid)
        path = os.path.join(trace_dir, name)
        try:
            evs, complete = read_trace_file(path)
        except (OSError, TraceFileError) as e:
            problems.append(str(e))
            continue
        if not complete:
            problems.append(f"process {name.split('-')[0]} was killed before flushing all its events")
        # Most processes of a job are gone: one stat of /proc/PID spares the lock test.
        if os.path.exists(f"/proc/{pid}") and _still_held(path):
            alive.append(name.split("-")[0])
        for e in evs:
            if e.op == OP_NOTE and (e.path2 or "").startswith(UNRESOLVED):
                unresolved.append(e)
            elif e.op == OP_NOTE and e.path2 != NESTED_JOB:
                text = note_text(e)
                if text not in problems:
                    problems.append(text)
            else:
                events.append(e)
    # Between exec and the new image's start-up its old file is released and the new one not
    # created yet: a pid still running with this trace directory in its environment is alive.
    marker = b"ROAR_TRACE_DIR=" + os.fsencode(trace_dir) + b"\0"
    alive += [p for p in pids - set(alive) if os.path.exists(f"/proc/{p}") and _runs_with(p, marker)]
    exempt = set(exempt)
    alive = [a for a in alive if a not in exempt and a.rpartition(" ")[2] not in exempt]
    if alive:
        who = sorted(set(alive), key=lambda p: (not p.isdigit(), int(p) if p.isdigit() else 0, p))
        problems.append(f"{len(who)} process(es) were still running when the job ended (pid "
                        f"{', '.join(who)}: a daemon or background job?); their later file I/O is not "
                        "part of this job")
    if unresolved:
        problems.append(_unresolved_note(unresolved))
    events.sort(key=lambda e: e.t_ns)
    return _drop_nested_roar(events), problems


def _drop_nested_roar(events: list) -> list:
    """Drop what a nested `roar run` process itself did before it detached from our trace
    (importing roar, reading its config): from its exec (the last X of its pid) to its
    announcement. Its command's I/O is recorded by its own job."""
    spans = []
    for e in events:
        if e.op == OP_NOTE and e.path2 == NESTED_JOB:
            start = max((x.t_ns for x in events if x.pid == e.pid and x.op == OP_EXEC and x.t_ns < e.t_ns),
                        default=-1)
            spans.append((e.pid, start, e.t_ns))
    if not spans:
        return events
    return [e for e in events
            if not any(e.pid == pid and start < e.t_ns < end for pid, start, end in spans)]


def announce_nested_job(outer_trace_dir: str, job_id: str) -> None:
    """Tell the job tracing us (its trace directory) that `job_id` records its own I/O.

    Written by a `roar run` started inside a traced command or cell, which detached
    itself from that trace: the parent records this job as its child
    (`jobs.parent_job_id`). Best effort: a parent that cannot be told only loses the link."""
    t = time.monotonic_ns()
    jid = job_id.encode()
    data = (_HEADER.pack(MAGIC, os.getpid(), os.getppid())
            + _RECORD.pack(OP_NOTE.encode(), t, 0, -1, len(jid)) + jid
            + _LEN.pack(len(NESTED_JOB)) + NESTED_JOB.encode())
    try:
        fd = os.open(os.path.join(outer_trace_dir, f"{os.getpid()}-{t}.ev"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        os.write(fd, data)
    except OSError:
        pass
    finally:
        os.close(fd)


def _still_held(path: str) -> bool:
    """Whether a live process still holds its trace file (the library keeps a shared flock
    on it until the process exits or execs)."""
    import fcntl

    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also drops our lock
    return False


def _runs_with(pid: str, marker: bytes) -> bool:
    """Whether process `pid` exists and its environment holds `marker` (a zombie's is empty,
    and a reused pid's has no reason to name this job's trace directory)."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            env = b"\0" + f.read()
    except OSError:
        return False
    return marker in env


def _lost_text(name: str) -> str:
    """`<pid>-<t0>.<errno>.lost`: records of that process could not be written;
    `<pid>-<t0>.panic.lost`: the preload library hit a bug there and switched itself off."""
    pid = name.split("-")[0]
    if name.endswith(".panic.lost"):
        return (f"the tracer hit an internal error in process {pid} and stopped tracing it: "
                "some of its file I/O was not seen")
    try:
        err = int(name.split(".")[-2])
        why = os.strerror(err) if err else "write failed"
    except (ValueError, IndexError):
        why = "write failed"
    return (f"process {pid} could not write its trace records ({why}; is the trace directory's "
            "filesystem full?): some of its file I/O was not seen")


_NOTES = {
    "static": "static binary {subject} started by {detail} ran untraced: its file I/O was not seen",
    "setuid": "setuid program {subject} started by {detail} ran untraced: the loader ignores LD_PRELOAD for it",
    "io_uring": "process {pid} set up io_uring: file operations submitted through the ring were not seen",
    "syscall": "process {pid} called {subject} through syscall(2){detail}: the file it named was not recorded",
    "spawn": "process {pid}: posix_spawn file action {detail} {subject!r} was not recorded (its directory "
             "is unknown)",
}


def note_text(e: Event) -> str:
    """One line for an `N` record (rust/EVENTS.md): what the tracer did not see, and why."""
    kind, _, detail = (e.path2 or "").partition(" ")
    template = _NOTES.get(kind)
    if template is None:
        return f"process {e.pid}: {e.path} {e.path2} (not seen by the tracer)"
    if kind == "syscall" and detail:
        detail = f" with {detail}"
    return template.format(subject=e.path, detail=detail or "?", pid=e.pid)


def _unresolved_note(unresolved: list) -> str:
    """One note for the names a tracer saw but could not record (what they were, and why).
    Each is an `N` record of kind `unresolved ERRNO` (the errno of the failed resolution)."""
    import errno

    e = unresolved[0]
    try:
        err = int((e.path2 or "").partition(" ")[2] or 0)
    except ValueError:
        err = 0
    why = {errno.ENAMETOOLONG: "its directory's path is longer than PATH_MAX",
           errno.ENOENT: "its directory was deleted"}.get(err, "outside the visible filesystem")
    name = e.path if len(e.path) <= 60 else "..." + e.path[-57:]
    more = f" and {len(unresolved) - 1} more" if len(unresolved) > 1 else ""
    return (f"file name(s) used but not recorded, as their absolute path is unknown ({why}):"
            f" {ascii(name)}{more}")


@record
class Reduced:
    """What a job did to files, by absolute path."""

    inputs: dict = factory(dict)  # path -> (size, mtime_ns) seen at first read
    outputs: dict = factory(dict)  # path -> True
    updates: dict = factory(dict)  # path -> (size, mtime_ns): read-write, undecided
    # path -> (size, mtime_ns) at open: pre-existing files this job changed in place. Each is
    # also in `outputs`; the version at open is an input (not in `inputs`, which holds what
    # the job read as it was).
    updated: dict = factory(dict)
    deleted: set = factory(set)
    executed: set = factory(set)
    moved_to: set = factory(set)  # rename destinations: a directory among them is expanded at job end
    # path -> did the job create it? Decided by the first event on the path: True for a
    # creating open or a link (a W on an existing file is settled by `roar pop` with the
    # file's birth time), False when it was read, updated, deleted or renamed away first
    # (so it existed), None when a rename replaced it (whatever was there is unknowable).
    created: dict = factory(dict)
    nested_jobs: list = factory(list)  # ids of jobs recorded by a `roar run` inside this one


def reduce(events: Iterable[Event], ignore_read=lambda p: False) -> Reduced:
    """Fold time-ordered events into inputs and outputs (see module docstring)."""
    r = Reduced()
    written: set[str] = set()  # paths this job has written (so later reads are internal)
    created = r.created
    for e in events:
        op, p = e.op, e.path
        if p not in created and op != OP_EXEC:
            created[p] = op == OP_WRITE
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
            r.moved_to.discard(p)
        elif op == OP_MOVE and e.path2:
            dst = e.path2
            if p in r.updates and p not in written:
                # A pre-existing file updated in place then renamed: its content was read.
                r.inputs.setdefault(p, r.updates.pop(p))
            r.outputs.pop(p, None)
            written.discard(p)
            r.deleted.add(p)
            r.deleted.discard(dst)
            # A directory rename moves every output (and earlier destination) recorded under it.
            under = p + "/"
            for q in [q for q in r.outputs if q.startswith(under)]:
                del r.outputs[q]
                moved = dst + q[len(p):]
                r.outputs[moved] = True
                written.add(moved)
                # The target directory was absent or empty, so nothing existed at `moved`.
                created.setdefault(moved, created.get(q))
            for q in [q for q in r.moved_to if q == p or q.startswith(under)]:
                r.moved_to.discard(q)
                r.moved_to.add(dst + q[len(p):])
            r.moved_to.add(dst)
            if created.get(dst, True) is True:
                created[dst] = None  # replaced by a rename: it may have existed, and the inode is another
            r.updates.pop(dst, None)
            written.add(dst)
            r.outputs[dst] = True
        elif op == OP_LINK and e.path2:
            created.setdefault(e.path2, True)  # link(2) fails when the new name exists
            written.add(e.path2)
            r.outputs[e.path2] = True
        elif op == OP_EXEC:
            r.executed.add(p)
        elif op == OP_NOTE and e.path2 == NESTED_JOB and p not in r.nested_jobs:
            r.nested_jobs.append(p)
    return r


def settle_updates(r: Reduced) -> None:
    """Settle what only the end of the job can tell (call once, when the job has ended).

    Read-write and append opens: unchanged -> input; changed -> output, and `updated` (the
    version at open is an input too: updated in place). A rename destination that is
    a directory (`mv a b` of a directory, `os.rename(tmpdir, final)`): the regular files
    under it now are outputs under their new names, whether or not the job wrote them,
    as `mv a.txt b.txt` makes b.txt an output; the directory itself is not an artifact.
    """
    for d in sorted(r.moved_to):
        if d in r.outputs and os.path.isdir(d) and not os.path.islink(d):
            del r.outputs[d]
            for f in _files_under(d):
                r.outputs.setdefault(f, True)
    r.moved_to.clear()
    for p, (size, mtime_ns) in list(r.updates.items()):
        try:
            st = os.stat(p)
        except OSError:
            continue  # vanished: neither
        if st.st_size != size or st.st_mtime_ns != mtime_ns:
            r.outputs[p] = True
            r.updated[p] = (size, mtime_ns)
        else:
            r.inputs.setdefault(p, (size, mtime_ns))
    r.updates.clear()


def _files_under(top: str) -> list:
    """Regular files below `top` (symlinks not followed, unreadable subdirectories skipped), sorted."""
    found, stack = [], [top]
    while stack:
        try:
            it = os.scandir(stack.pop())
        except OSError:
            continue
        with it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    found.append(e.path)
    return sorted(found)
