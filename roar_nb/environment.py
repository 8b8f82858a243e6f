"""The Python environment a job ran in: interpreter version, platform, installed packages.

Packages are read from the names of *.dist-info / *.egg-info directories on
sys.path (no pip subprocess, no METADATA parsing): about a millisecond for a few
hundred packages. The snapshot's id is the blake3 of its canonical JSON, so the
store keeps one row per distinct environment.
"""

from __future__ import annotations

import os
import sys

_cache: tuple | None = None


def _packages() -> dict[str, str]:
    pkgs: dict[str, str] = {}
    for d in sys.path:
        if not d or not os.path.isdir(d):
            continue
        try:
            names = os.listdir(d)
        except OSError:
            continue
        for n in names:
            if n.endswith(".dist-info") or n.endswith(".egg-info"):
                stem = n.rsplit(".", 1)[0]
                name, _, version = stem.partition("-")
                if name and version:
                    key = name.lower().replace("_", "-").replace(".", "-")
                    pkgs.setdefault(key, version.split("-")[0])
    return pkgs


def snapshot() -> tuple[str, str, str, dict]:
    """(env_id, python version, platform, {package: version}); computed once per process."""
    global _cache
    if _cache is None:
        from roar_nb.hashing import hash_bytes

        py = "%d.%d.%d" % sys.version_info[:3]
        plat = f"{sys.platform}-{os.uname().machine}"
        pkgs = _packages()
        # A canonical text of the snapshot (not JSON: json imports `re`, see lean.py).
        doc = "\n".join([py, plat, *(f"{k}=={v}" for k, v in sorted(pkgs.items()))])
        _cache = (hash_bytes(doc.encode("utf-8", "surrogateescape"))[:32], py, plat, pkgs)
    return _cache
