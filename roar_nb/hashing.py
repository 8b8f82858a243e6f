"""Content identity: blake3 of file bytes, parallel, cached by (dev, inode, size, mtime_ns, ctime_ns).

This module reads files and the store's hash cache; it never decides what is an
input or an output (that is the session's job) and never writes job rows.
Small files are hashed serially (a thread hop costs more than hashing 4 KiB);
large ones go to a thread pool and use blake3's own multithreading, since
blake3 releases the GIL on large buffers.
"""

from __future__ import annotations

import os
import stat as stat_mod
import sys
import time

import blake3
from collections.abc import Iterable

from roar_nb.model import factory, record

LARGE = 1 << 20  # files from 1 MiB are hashed in the pool, mmapped
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


def _digest(path: str, size: int, extra: tuple) -> tuple[str, dict]:
    extras = {}
    if extra:
        import hashlib

        hashers = {name: hashlib.new(name) for name in extra}
    if size >= LARGE and not extra:
        threads = blake3.blake3.AUTO if size >= HUGE else 1
        h = blake3.blake3(max_threads=threads)
        h.update_mmap(path)
        return h.hexdigest(), extras
    h = blake3.blake3()
    with open(path, "rb", buffering=0) as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
            for x in hashers.values() if extra else ():
                x.update(chunk)
    if extra:
        extras = {name: x.hexdigest() for name, x in hashers.items()}
    return h.hexdigest(), extras


def hash_bytes(data: bytes) -> str:
    return blake3.blake3(data).hexdigest()


def hash_file(path: str) -> str:
    """blake3 hex of one file, uncached."""
    st = os.stat(path)
    return _digest(path, st.st_size, ())[0]


class _Progress:
    """A one-line stderr progress bar that appears only once hashing has taken `after` seconds."""

    def __init__(self, total_files: int, total_bytes: int, after: float):
        self.total_files, self.total_bytes, self.after = total_files, total_bytes, after
        self.files = self.bytes = 0
        self.start = time.monotonic()
        self.shown = False
        self.enabled = after >= 0 and sys.stderr.isatty()

    def advance(self, nbytes: int) -> None:
        self.files += 1
        self.bytes += nbytes
        if not self.enabled:
            return
        if time.monotonic() - self.start < self.after:
            return
        frac = self.bytes / self.total_bytes if self.total_bytes else self.files / max(1, self.total_files)
        bar = "#" * int(frac * 30)
        sys.stderr.write(
            f"\rroar: hashing [{bar:<30}] {self.files}/{self.total_files} files"
            f" {self.bytes / 2**20:.0f}/{self.total_bytes / 2**20:.0f} MiB"
        )
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 78 + "\r")
            sys.stderr.flush()


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
            r.hash, r.digests = _digest(r.path, r.size, extra)
            st = os.stat(r.path)
            if stat_key(st) != r.key:  # written while we read it: hash the settled bytes
                r.changed = True
                r.size, r.key = st.st_size, stat_key(st)
                r.hash, r.digests = _digest(r.path, r.size, extra)
        except OSError as e:
            r.hash, r.error = None, e.strerror or str(e)
        progress.advance(r.size)

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
