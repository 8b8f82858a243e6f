"""Git commit, branch and dirty flag of a working directory, read cheaply.

Commit and branch are read from .git files directly (no subprocess); the dirty
flag needs `git status`, so it is started as a background process that the
caller collects after the job ran, hiding its cost behind the job's own time.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass


@dataclass
class GitInfo:
    root: str | None = None
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    _proc: subprocess.Popen | None = None

    def settle(self) -> "GitInfo":
        """Collect the dirty flag from the background `git status`."""
        if self._proc is not None:
            try:
                out, _ = self._proc.communicate(timeout=10)
                self.dirty = bool(out.strip()) if self._proc.returncode == 0 else None
            except (subprocess.TimeoutExpired, OSError):
                self._proc.kill()
                self.dirty = None
            self._proc = None
        return self


def find_git_root(start: str) -> str | None:
    d = os.path.abspath(start)
    while True:
        if os.path.exists(os.path.join(d, ".git")):
            return d
        parent = os.path.dirname(d)
        if parent == d:
            return None
        d = parent


def _git_dir(root: str) -> str:
    g = os.path.join(root, ".git")
    if os.path.isfile(g):  # worktree or submodule: "gitdir: <path>"
        with open(g) as f:
            line = f.read().strip()
        if line.startswith("gitdir:"):
            p = line.split(":", 1)[1].strip()
            return p if os.path.isabs(p) else os.path.normpath(os.path.join(root, p))
    return g


def _resolve_ref(git_dir: str, ref: str) -> str | None:
    common = git_dir
    cd = os.path.join(git_dir, "commondir")
    if os.path.exists(cd):
        with open(cd) as f:
            common = os.path.normpath(os.path.join(git_dir, f.read().strip()))
    for base in (git_dir, common):
        try:
            with open(os.path.join(base, ref)) as f:
                return f.read().strip()
        except OSError:
            pass
    try:
        with open(os.path.join(common, "packed-refs")) as f:
            for line in f:
                parts = line.split()
                if len(parts) == 2 and parts[1] == ref:
                    return parts[0]
    except OSError:
        pass
    return None


def read_git(cwd: str, dirty: bool = True) -> GitInfo:
    """Commit and branch of the repository containing `cwd` (empty GitInfo outside git)."""
    root = find_git_root(cwd)
    if root is None:
        return GitInfo()
    info = GitInfo(root=root)
    try:
        git_dir = _git_dir(root)
        with open(os.path.join(git_dir, "HEAD")) as f:
            head = f.read().strip()
        if head.startswith("ref:"):
            ref = head[4:].strip()
            info.branch = ref.rsplit("refs/heads/", 1)[-1]
            info.commit = _resolve_ref(git_dir, ref)  # None on an unborn branch
        else:
            info.commit = head
    except OSError:
        return info
    if dirty and info.commit:
        try:
            info._proc = subprocess.Popen(
                ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            )
        except OSError:
            pass
    return info
