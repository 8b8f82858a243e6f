"""Locating the native preload library, and what it cannot see before a command runs.

The library is found at $ROAR_PRELOAD_LIB, else roar_nb/_native/ (where `make`
copies it), else the Cargo target directory of a source checkout.
"""

from __future__ import annotations

import os
from roar_nb.config import ENV_PRELOAD_LIB

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


def which(program: str, path: str | None = None) -> str | None:
    """Like shutil.which, without importing shutil (and bz2, lzma) on `roar run`'s hot path."""
    for d in (path if path is not None else os.environ.get("PATH", os.defpath)).split(os.pathsep):
        cand = os.path.join(d or ".", program)
        if os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def static_reason(program: str, path_env: str | None) -> str | None:
    """A note when `program` is a static ELF executable, which LD_PRELOAD cannot enter."""
    exe = program if "/" in program else which(program, path_env)
    if not exe:
        return None
    try:
        with open(exe, "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    if head[:4] != b"\x7fELF" or head[4] != 2:  # only 64-bit ELF is inspected
        return None
    import struct

    e_phoff = struct.unpack_from("<Q", head, 0x20)[0]
    e_phentsize, e_phnum = struct.unpack_from("<HH", head, 0x36)
    for i in range(e_phnum):
        off = e_phoff + i * e_phentsize
        if off + 4 > len(head):
            return None  # program headers beyond what we read: don't guess
        if struct.unpack_from("<I", head, off)[0] == 3:  # PT_INTERP: dynamically linked
            return None
    return f"static binary {exe} ran under preload: its own file I/O was not seen"
