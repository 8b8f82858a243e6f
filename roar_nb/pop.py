"""`roar pop`: forget the last job of the session and delete the files it created.

The use case behind the CLI command (the CLI only confirms and prints). Its one
rule: never delete a file the job did not create. A file is deleted only when
every one of these holds, otherwise it is kept and the plan says why:

* the tracer saw the job create it: the first event on the path was a creating
  open or a link (`Edge.created`, decided by `capture.events.reduce`); a path
  first read, updated, deleted, or replaced by a rename existed or may have;
* its inode was born after the job started (statx birth time): this settles an
  `O_CREAT` open of a file that already existed (`>>` appends, `O_TRUNC`), which
  the event alone cannot tell apart from a creation;
* it still holds the bytes the job wrote (same blake3), and is not a symlink;
* the job changed no file that existed before it (or may have): pop cannot undo
  those, and they may refer to the new ones. `roar run git commit` creates
  objects and rewrites the branch ref to point at them; deleting the objects
  alone would leave a repository whose HEAD names a missing commit;
* the job's capture was complete: when roar did not see all the job did (a static
  binary under preload, a process killed before flushing), it cannot tell whether
  the job changed files that existed.

When a fact cannot be had (no birth time on this file system, a job recorded
before roar tracked creation) the file is kept: in doubt, never delete.

Must not: print, prompt, or delete anything outside the job's recorded outputs.
"""

from __future__ import annotations

import os
import stat
import time

from roar_nb.errors import UsageError
from roar_nb.model import CAPTURE_COMPLETE, Job, record

_STATX_BTIME = 0x800
_AT_SYMLINK_NOFOLLOW = 0x100
_AT_FDCWD = -100

_EXISTED = "existed before the job"
_UNKNOWN = "roar cannot tell whether it existed before the job"
_HELD = ("created by the job, kept because the job also changed files that existed before"
         " (pop cannot undo those, and they may refer to this one)")


@record
class PopPlan:
    """What `apply` will do: the job, the paths it deletes, and (path, reason) for those it keeps."""

    job: Job
    delete: list
    keep: list


def birth_time(path: str) -> float | None:
    """The inode's birth time (epoch seconds) via statx(2), or None when the kernel, libc or
    file system does not report it. (os.stat has no birth time on Linux before Python 3.15.)"""
    import ctypes
    import struct

    try:
        statx = ctypes.CDLL(None, use_errno=True).statx
    except (OSError, AttributeError):
        return None
    statx.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_uint, ctypes.c_void_p)
    buf = ctypes.create_string_buffer(256)  # sizeof(struct statx)
    if statx(_AT_FDCWD, os.fsencode(path), _AT_SYMLINK_NOFOLLOW, _STATX_BTIME, buf) != 0:
        return None
    if not struct.unpack_from("<I", buf.raw, 0)[0] & _STATX_BTIME:  # stx_mask
        return None
    sec, nsec = struct.unpack_from("<qI", buf.raw, 80)  # stx_btime: {s64 tv_sec; u32 tv_nsec}
    return sec + nsec / 1e9


def _verdict(job: Job, e, current_hash: str | None) -> str | None:
    """None when the job created `e.path` and it still holds the job's bytes; else why it is kept."""
    if e.created is False:
        return _EXISTED
    if e.created is None:
        return f"{_UNKNOWN} (replaced by a rename, or recorded by an older roar)"
    try:
        st = os.lstat(e.path)
    except OSError:
        return "already gone"
    if not stat.S_ISREG(st.st_mode):
        return "no longer a regular file"
    if not e.hash or current_hash != e.hash:
        return "changed since the job"
    born = birth_time(e.path)
    if born is None:
        return f"{_UNKNOWN} (this file system does not tell when a file was created)"
    if born < job.started_at - _stamp_lag():
        return f"{_EXISTED} (opened for writing, not created)"
    return None


def _stamp_lag() -> float:
    """How far an inode's birth time may lag the clock `job.started_at` was read from: the
    kernel stamps inodes from its coarse clock (one tick, typically 4 ms), so a file the job
    created in its first milliseconds can look born before the job. roar's own start-up
    (tens of ms between the shell's previous command and `started_at`) keeps files that
    existed before the job well outside this window."""
    try:  # CLOCK_REALTIME_COARSE is 5 on Linux; Python < 3.13 has no name for it
        return max(time.clock_getres(getattr(time, "CLOCK_REALTIME_COARSE", 5)), 0.001)
    except (AttributeError, OSError):  # pragma: no cover - other systems
        return 0.01


def plan(project) -> PopPlan:
    """The last job of the CLI session and what popping it would delete and keep."""
    from roar_nb.hashing import hash_paths

    store = project.store
    session = store.active_session(create=False)
    jobs = store.jobs(session.id, newest_first=True, limit=1) if session else []
    if not jobs:
        raise UsageError("nothing to pop: the session has no jobs")
    job = jobs[0]
    current = hash_paths([e.path for e in job.outputs], progress_after=-1)
    delete, keep = [], []
    for e in job.outputs:
        why = _verdict(job, e, current[e.path].hash)
        if why is None:
            delete.append(e.path)
        else:
            keep.append((e.path, why))
    if delete and job.capture_level != CAPTURE_COMPLETE:
        keep.extend((path, f"created by the job, kept because its capture was {job.capture_level}: roar did not"
                     " see all it did, so cannot tell whether it also changed files that existed")
                    for path in delete)
        delete = []
    elif any(why.startswith((_EXISTED, _UNKNOWN)) for _, why in keep):
        keep.extend((path, _HELD) for path in delete)
        delete = []
    return PopPlan(job, delete, keep)


def apply(project, p: PopPlan) -> tuple[list[str], list[tuple[str, str]]]:
    """Delete what the plan deletes (each re-checked just before), forget the job.
    Returns (deleted paths, kept (path, reason))."""
    from roar_nb.hashing import hash_file

    deleted, keep = [], list(p.keep)
    edges = {e.path: e for e in p.job.outputs}
    for path in p.delete:
        try:
            why = _verdict(p.job, edges[path], hash_file(path))  # the file may have moved on since planning
        except OSError:
            why = "already gone"
        if why is None:
            try:
                os.unlink(path)
                deleted.append(path)
                continue
            except OSError as exc:
                why = f"could not delete: {exc.strerror}"
        keep.append((path, why))
    project.store.delete_job(p.job.id)
    return deleted, keep
