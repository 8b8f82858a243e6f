"""Locating the native preload library (and a shutil-free `which` for the run path).

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

