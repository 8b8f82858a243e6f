"""Content identity: blake3 of file bytes, parallel, cached by (dev, inode, size, mtime_ns, ctime_ns).

This module reads files and the store's hash cache; it never decides what is an
input or an output (that is the session's job) and never writes job rows.
Small files are hashed serially (a thread hop costs more than hashing 4 KiB);
large ones go to a thread pool and use blake3's own multithreading, since
blake3 releases the GIL on large buffers. Every file is streamed through one
fixed buffer (memory does not grow with file size; no mmap, whose pages count
against the process), and the holes of sparse files are never read.
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import sys
import time

import blake3
from collections.abc import Iterable

from roar_nb.model import factory, record

LARGE = 1 << 20  # files from 1 MiB are hashed in the pool (and checked for holes)
HUGE = 64 << 20  # from 64 MiB, blake3 also splits one file across cores


@record
class Hashed:
    """Result of hashing one path: `hash` is None when the file could not be read."""

    path: str
    hash: str | None = None
    size: int = 0
    key: tuple | None = None  # (dev, ino, size, mtime_ns, ctime_ns) at hashing time
    digests: dict = factory(dict)
    error: str | None = None
    changed: bool = False  # modified while we hashed it (re-hashed once)


def stat_key(st: os.stat_result) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


_CHUNK = 16 << 20  # one reusable read buffer per hashing thread: memory stays bounded whatever the size
_zeros: memoryview | None = None  # what a hole reads as, fed without reading it (made on first use)


def _zero_buffer() -> memoryview:
    global _zeros
    if _zeros is None:
        _zeros = memoryview(bytes(_CHUNK))
    return _zeros


def _regions(fd: int, size: int, sparse: bool):
    """(start, end, is_data) covering [0, size): holes found with SEEK_DATA/SEEK_HOLE when the
    file has fewer allocated blocks than its size; otherwise one data region."""
    if not sparse:
        yield 0, size, True
        return
    pos = 0
    while pos < size:
        try:
            data = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno != errno.ENXIO:  # no SEEK_DATA on this file system: read the rest
                yield pos, size, True
                return
            data = size  # ENXIO: nothing but a hole after pos
        if data > pos:
            yield pos, min(data, size), False
        if data >= size:
            return
        try:
            hole = os.lseek(fd, data, os.SEEK_HOLE)
        except OSError:
            hole = size
        yield data, min(hole, size), True
        pos = hole


def _stream(f):
    """The bytes of a large file as views of one reusable buffer; holes as views of zeros."""
    fd = f.fileno()
    st = os.fstat(fd)
    size = st.st_size
    buf = memoryview(bytearray(_CHUNK))
    for start, end, is_data in _regions(fd, size, st.st_blocks * 512 < size):
        if is_data:
            os.lseek(fd, start, os.SEEK_SET)
        pos = start
        while pos < end:
            n = min(end - pos, _CHUNK)
            if not is_data:
                yield _zero_buffer()[:n]
            else:
                n = f.readinto(buf[:n])
                if not n:  # shrank while we read: the caller re-hashes on the changed stat
                    break
                yield buf[:n]
            pos += n


def _digest(path: str, size: int, extra: tuple, progress=None) -> tuple[str, dict]:
    """blake3 (and `extra` hashlib digests) of the file's bytes, streamed through one buffer.

    Holes of a sparse file are not read: a run of zero bytes is fed from a shared
    zero buffer, which is still the true digest of the file's bytes (blake3's chunk
    counter makes every 1 KiB chunk's value depend on its offset, so zeros cannot be
    skipped, only not read). Large files use blake3's own threads per buffer.
    """
    hashers = []
    if extra:
        import hashlib

        hashers = [(name, hashlib.new(name)) for name in extra]
    h = blake3.blake3(max_threads=blake3.blake3.AUTO if size >= HUGE else 1)
    with open(path, "rb", buffering=0) as f:
        if size < LARGE:  # the common case: two reads, no stat, no buffer to set up
            pieces = iter(lambda: f.read(LARGE), b"")
        else:
            pieces = _stream(f)
        for piece in pieces:
            h.update(piece)
            for _, x in hashers:
                x.update(piece)
            if progress is not None:
                progress.add_bytes(len(piece))
    return h.hexdigest(), {name: x.hexdigest() for name, x in hashers}


def hash_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def hash_file(path: str) -> str:
    """blake3 hex of one file, uncached."""
    st = os.stat(path)
    return _digest(path, st.st_size, ())[0]


class _Progress:
    """A one-line stderr progress bar that appears only once the work has taken `after` seconds.

    It advances per buffer, not per file, so one huge file shows progress too; it redraws at
    most ten times a second. Hashing (or transfer) threads call it; a lost update under a race
    only delays a redraw. `label` names the work (`roar get`/`roar put` reuse it)."""

    def __init__(self, total_files: int, total_bytes: int, after: float, label: str = "hashing"):
        self.total_files, self.total_bytes, self.after, self.label = total_files, total_bytes, after, label
        self.files = self.bytes = 0
        self.start = time.monotonic()
        self.drawn_at = 0.0
        self.shown = False
        self.enabled = after >= 0 and sys.stderr.isatty()

    def add_bytes(self, n: int) -> None:
        self.bytes += n
        self._draw()

    def file_done(self) -> None:
        self.files += 1
        self._draw()

    def _draw(self) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < self.after or (self.shown and now - self.drawn_at < 0.1):
            return
        self.drawn_at = now
        frac = min(1.0, self.bytes / self.total_bytes if self.total_bytes else self.files / max(1, self.total_files))
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\rroar: {self.label} [{bar:<30}] {self.files}/{self.total_files} files"
            f" {self.bytes / 2**20:.0f}/{self.total_bytes / 2**20:.0f} MiB"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()
            self.shown = False  # cleared: a second close writes nothing


def hash_paths(paths: Iterable[str], store=None, extra: Iterable[str] = (),
               progress_after: float = 1.0) -> dict[str, Hashed]:
    """Hash every path (deduplicated); reuse and refresh the store's cache when given."""
    extra = tuple(extra)
    results: dict[str, Hashed] = {}
    todo: list[Hashed] = []
    for p in dict.fromkeys(paths):
        r = Hashed(p)
        results[p] = r
        try:
            st = os.stat(p)
        except OSError as e:
            r.error = e.strerror or str(e)
            continue
        if not stat_mod.S_ISREG(st.st_mode):
            r.error = "not a regular file"
            continue
        r.size, r.key = st.st_size, stat_key(st)
        todo.append(r)

    if store is not None and todo and not extra:
        cached = store.cache_lookup([r.key for r in todo])
        misses = []
        for r in todo:
            h = cached.get(r.key)
            if h is None:
                misses.append(r)
            else:
                r.hash = h
        todo = misses

    progress = _Progress(len(todo), sum(r.size for r in todo), progress_after)

    def work(r: Hashed) -> None:
        try:
            r.hash, r.digests = _digest(r.path, r.size, extra, progress)
            st = os.stat(r.path)
            if stat_key(st) != r.key:  # written while we read it: hash the settled bytes
                r.changed = True
                r.size, r.key = st.st_size, stat_key(st)
                r.hash, r.digests = _digest(r.path, r.size, extra)
        except OSError as e:
            r.hash, r.error = None, e.strerror or str(e)
        progress.file_done()

    small = [r for r in todo if r.size < LARGE]
    large = [r for r in todo if r.size >= LARGE]
    try:
        for r in small:
            work(r)
        if len(large) == 1:
            work(large[0])
        elif large:
            from concurrent.futures import ThreadPoolExecutor  # lazily: it imports logging

            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 2)) as pool:
                list(pool.map(work, large))
    finally:
        progress.close()

    if store is not None:
        rows = [(*r.key, r.hash) for r in todo if r.hash and not r.changed]
        try:
            store.cache_store(rows)
        except Exception:  # a cache write failure must never lose the job itself
            pass
    return results
