"""`roar run` start-up budget as a check: the modules on its path must not import the heavy
stdlib and third-party modules that ARCHITECTURE.md "Why these choices" keeps off it.

The command runs as users start it (the `roar` console script, or `python -m roar_nb.cli`
when it is not installed) with `-X importtime`, in a fresh project with the native tracer
built, so the first run (which also stores the environment) and a steady-state run are both
covered.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent

# Each of these costs milliseconds to tens of milliseconds against a 60 ms budget.
FORBIDDEN = ("re", "json", "pathlib", "subprocess", "argparse", "sqlite_utils", "ctypes", "enum", "dataclasses")


def _imported(proj, *args) -> set[str]:
    script = BIN / "roar"
    entry = [str(script)] if script.exists() else ["-m", "roar_nb.cli"]
    env = dict(os.environ)
    env.pop("ROAR_PROJECT", None)
    p = subprocess.run([sys.executable, "-X", "importtime", *entry, *args], cwd=proj.root, env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    mods = set()
    for line in p.stderr.splitlines():
        if line.startswith("import time:") and line.count("|") == 2:
            name = line.rsplit("|", 1)[1].strip()
            if name != "package":  # the header line
                mods.add(name)
    assert "roar_nb.cli" in mods and "roar_nb.session" in mods, p.stderr[-2000:]
    return mods


def test_roar_run_true_imports_nothing_heavy(proj):
    for attempt in ("first run (stores the environment)", "steady state"):
        mods = _imported(proj, "run", "true")
        heavy = sorted(m for m in FORBIDDEN if m in mods)
        assert not heavy, f"{attempt}: `roar run true` imported {heavy}"
    jobs = proj.dag()["jobs"]
    assert jobs and all(j["backend"] == "preload" for j in jobs), jobs


def test_roar_status_imports_nothing_heavy(proj):
    proj.roar("run", "true")
    heavy = sorted(m for m in FORBIDDEN if m in _imported(proj, "status"))
    assert not heavy, f"`roar status` imported {heavy}"
