"""Locating the native preload library (and a shutil-free `which` for the run path).

The library is found at $ROAR_PRELOAD_LIB, else roar_nb/_native/ (where `make`
copies it), else the Cargo target directory of a source checkout.
"""

from __future__ import annotations

import os
from roar_nb.config import ENV_PRELOAD_LIB
from roar_nb.lean import which  # noqa: F401 - re-exported: capture.select calls preload.which

LIB_NAME = "libroar_preload.so"
_PKG = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))  # roar_nb/


def candidates() -> list[str]:
    env = os.environ.get(ENV_PRELOAD_LIB)
    out = [env] if env else []
    out.append(os.path.join(_PKG, "_native", LIB_NAME))
    out.append(os.path.join(os.path.dirname(_PKG), "rust", "target", "release", LIB_NAME))
    return out


def library_path() -> str:
    for c in candidates():
        if os.path.isfile(c):
            return c
    from roar_nb.errors import TracerUnavailable

    raise TracerUnavailable("native tracer not built (run `make build`)")


def problem() -> str | None:
    """None if the preload library can be used, else why not (one line)."""
    for c in candidates():
        if os.path.isfile(c):
            return None
    return "native tracer library not found (run `make build`); file I/O was not captured"


# ld.so splits LD_PRELOAD on these: a library path containing one cannot be preloaded as is.
_LD_SEPARATORS = (" ", ":", "\t", "\n")


def compose(lib: str, current: str | None) -> str:
    """The LD_PRELOAD value that loads `lib` (an `injectable_path`) first and keeps the
    user's own libraries (jemalloc, tcmalloc) after it, in their order; any other copy of
    roar's library is dropped, so no process loads two. The one rule for every place
    Python hands the library to a child (`roar run`, the roar kernel, a python-level cell)."""
    kept = [p for p in (current or "").replace(" ", ":").split(":")
            if p and os.path.basename(p) != LIB_NAME]
    return ":".join([lib, *kept])


def injectable_path(lib: str | None = None) -> str:
    """A path of the library that LD_PRELOAD can carry: `lib` itself, or, when it contains a
    space or a colon (ld.so would split it, print two errors in every process and load
    nothing), a symlink to it in a private directory of ours without either.

    Raises TracerUnavailable (one line) when no such directory can be made."""
    lib = os.path.abspath(lib or library_path())
    if not any(c in lib for c in _LD_SEPARATORS):
        return lib
    import hashlib
    import stat

    tag = hashlib.blake2b(os.fsencode(lib), digest_size=6).hexdigest()
    uid = os.getuid()
    for base in (f"/dev/shm/roar-traces-{uid}", f"/tmp/roar-{uid}"):
        d = os.path.join(base, f"lib-{tag}")
        try:
            for p in (base, d):
                try:
                    os.mkdir(p, 0o700)
                except FileExistsError:
                    pass
                st = os.lstat(p)  # a directory of ours, not a planted symlink
                if not stat.S_ISDIR(st.st_mode) or st.st_uid != uid or stat.S_IMODE(st.st_mode) & 0o077:
                    raise OSError(f"{p} is not a private directory")
            link = os.path.join(d, LIB_NAME)
            try:
                if os.readlink(link) == lib:
                    return link
            except OSError:
                pass
            tmp = f"{link}.{os.getpid()}"
            os.symlink(lib, tmp)
            os.replace(tmp, link)
            return link
        except OSError:
            continue
    from roar_nb.errors import TracerUnavailable

    raise TracerUnavailable(f"the preload library's path contains a space or colon ({lib!r}), which "
                            "LD_PRELOAD cannot carry, and no private directory for a link to it could be made")


def detach_from_outer_trace() -> str | None:
    """Stop the preload library in *this* process from recording into $ROAR_TRACE_DIR.

    For a `roar run` started inside a traced command or cell: its command must be
    traced into its own job, and its own hashing of that job's files is not the outer
    job's I/O. Returns the outer trace directory, or None when nothing here records
    (no trace directory, or the library is not loaded in this process)."""
    from roar_nb.config import ENV_TRACE_DIR

    outer = os.environ.get(ENV_TRACE_DIR)
    lib = mapped_library()
    if not outer or lib is None:
        return None
    import ctypes

    try:
        ctypes.CDLL(lib).roar_end()
    except (OSError, AttributeError):
        return None
    # Nor are the helpers roar itself starts (git): without a trace directory the
    # library they inherit stays dormant.
    os.environ.pop(ENV_TRACE_DIR, None)
    return outer


def mapped_library() -> str | None:
    """Path of the preload library if it is mapped into this process (LD_PRELOADed)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            for line in f:
                if line.endswith(b"/" + LIB_NAME.encode() + b"\n"):
                    return os.fsdecode(line.split(None, 5)[5].strip())
    except OSError:
        pass
    return None


