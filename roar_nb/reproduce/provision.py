"""Provisioning `--in DIR`: a fresh clone of the recorded commit and a venv holding exactly the recorded packages.

The venv is made without the host's site-packages. Each recorded distribution
installed here at the recorded version is reused file by file: its own files
(from its RECORD) are linked into the venv, so a package that sits beside it in
the host's site-packages but was never recorded stays out, and a step that needs
it fails as it would on another machine. Every other recorded distribution is
installed with `pip --no-deps` at the recorded version (pip's configured index or
find-links); those pip cannot get are listed in `Workspace.not_installed`, never
fetched from anywhere else. Steps get the venv through the environment overlay in
`Workspace.env` (PATH, VIRTUAL_ENV, no PYTHONPATH); this module never writes
`os.environ`. It owns no planning and runs no step.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable

from roar_nb.errors import RoarError, UsageError
from roar_nb.model import record


class PathMap:
    """Maps recorded paths under the original git root to the fresh clone (identity in place)."""

    def __init__(self, old_root: str | None, new_root: str | None):
        self.old, self.new = old_root, new_root

    def to_new(self, path: str) -> str:
        if not self.old:
            return path
        if path == self.old or path.startswith(self.old.rstrip("/") + "/"):
            return self.new + path[len(self.old):]
        return path


@record
class Workspace:
    """Where and with what the steps run: identity and no overlay in place."""

    mapper: PathMap
    env: dict  # laid over os.environ for each step and kernel (a copy, never os.environ itself)
    python: str | None  # the venv's interpreter, replacing a recorded `python...` argv[0]
    not_installed: list  # "name==version: reason" for recorded packages the venv lacks


def prepare_directory(plan, directory: str, progress: Callable[[str], None]) -> Workspace:
    """--in DIR: clone the recorded repository at its commit, copy sources, build a venv."""
    env = plan.environment
    root, commit = env.get("git_root"), env.get("git_commit")
    if not root or not commit:
        raise RoarError("--in needs the steps to have been recorded inside a git repository with a commit")
    if len(env.get("git_commits", [])) > 1:
        progress(f"note: steps span {len(env['git_commits'])} commits; using the last, {commit[:12]}")
    target = os.path.abspath(directory)
    if os.path.exists(target) and os.listdir(target):
        raise UsageError(f"{target} exists and is not empty")
    progress(f"cloning {root} at {commit[:12]} into {target}")
    _git(["clone", "--quiet", "--no-checkout", root, target])
    _git(["-C", target, "checkout", "--quiet", commit])
    mapper = PathMap(root, target)
    for s in plan.sources:  # data that is not in git comes from where it was found
        dst = mapper.to_new(s.path)
        if os.path.isfile(dst):
            from roar_nb.hashing import hash_file

            if hash_file(dst) == s.hash:
                continue
        src = s.found_at or s.path
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    venv = os.path.join(target, ".venv")
    missing = build_venv(venv, env.get("packages", {}), progress)
    for m in missing:
        progress(f"not installed in the venv: {m}")
    bin_dir = os.path.join(venv, "bin")
    # PYTHONPATH/PYTHONHOME set to "" are ignored by Python, as if unset: host directories
    # named there would otherwise put unrecorded packages back in front of the venv.
    overlay = {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": venv,
               "PYTHONPATH": "", "PYTHONHOME": ""}
    # The clone gets its own .roar/ excluded from git by its .gitignore; jobs are recorded in
    # the original project, which is where the reproduction record belongs.
    return Workspace(mapper, overlay, os.path.join(bin_dir, "python"), missing)


def _git(args: list[str]) -> None:
    p = subprocess.run(["git", *args], check=False, capture_output=True, text=True)
    if p.returncode != 0:
        raise RoarError(f"git {' '.join(args[:2])} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")


def _key(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")  # as environment._packages names them


def build_venv(venv: str, packages: dict, progress: Callable[[str], None]) -> list[str]:
    """A venv holding exactly `packages` ({name: version}); returns those it could not get."""
    import sysconfig
    from importlib import metadata

    progress(f"creating venv {venv}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    purelib = sysconfig.get_paths(vars={"base": venv, "platbase": venv})["purelib"]
    os.makedirs(purelib, exist_ok=True)
    here = {}
    for d in metadata.distributions():  # sys.path order: the first of a name is the one imported
        name = d.metadata["Name"] if d.metadata else None
        if name:
            here.setdefault(_key(name), d)
    to_install = []
    for name, version in sorted(packages.items()):
        dist = here.get(_key(name))
        if dist is not None and dist.version == version and _link_distribution(dist, purelib):
            continue
        to_install.append((name, version))
    missing = []
    if to_install:
        progress(f"installing {len(to_install)} package(s) at recorded versions with pip --no-deps")
    for name, version in to_install:  # one by one: one that cannot be had must not block the rest
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
                            "--target", purelib, "--no-deps", f"{name}=={version}"],
                           check=False, capture_output=True, text=True)
        if p.returncode != 0:
            why = next((ln.strip() for ln in reversed(p.stderr.splitlines()) if ln.strip().startswith("ERROR")),
                       (p.stderr.strip().splitlines() or [f"pip exited {p.returncode}"])[-1].strip())
            missing.append(f"{name}=={version}: {why}")
    return missing


def _link_distribution(dist, purelib: str) -> bool:
    """Link each file `dist` installed (its RECORD) into `purelib`; False when it has no file list.

    Links per file, not per directory: namespace packages and shared top-level
    directories would otherwise bring other distributions' files along. Files
    outside its site directory (scripts, data) are not linked."""
    files = dist.files
    if not files:
        return False
    base = os.path.realpath(str(dist.locate_file("")))
    planned = []
    for f in files:
        src = os.path.realpath(str(dist.locate_file(f)))
        if not src.startswith(base + os.sep):
            continue
        if not os.path.isfile(src):
            if str(f).endswith(".pyc"):
                continue  # bytecode is rebuilt on import
            return False  # files went missing: let pip install it properly
        planned.append((src, os.path.join(purelib, os.path.relpath(src, base))))
    for src, dst in planned:
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        if not os.path.lexists(dst):
            os.symlink(src, dst)
    return True
