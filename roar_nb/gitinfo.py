"""Git commit, branch and dirty flag of a working directory, read cheaply.

Commit and branch are read from .git files directly (no subprocess); the dirty
flag needs git itself, so `git diff --quiet HEAD` is started in the background
and collected after the job ran, hiding its cost behind the job's own time. Its
exit status is the answer (0 clean, 1 dirty), so no pipe can fill up, and the
child is started with os.posix_spawnp: importing subprocess would cost `roar
run` ~8 ms.
"""

from __future__ import annotations

import os
import time

from roar_nb.model import record


class _Background:
    """A child whose exit status is all we want; stdio goes to /dev/null."""

    def __init__(self, argv: list[str]):
        null = os.open(os.devnull, os.O_RDWR)
        try:
            acts = [(os.POSIX_SPAWN_DUP2, null, fd) for fd in (0, 1, 2)]
            self.pid = os.posix_spawnp(argv[0], argv, os.environ, file_actions=acts)
        finally:
            os.close(null)
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            pid, status = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float) -> int | None:
        """The exit status, or None (and the child killed) after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        delay = 0.0005
        while self.poll() is None:
            if time.monotonic() > deadline:
                os.kill(self.pid, 9)
                os.waitpid(self.pid, 0)
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.02)
        return self.returncode


@record
class GitInfo:
    root: str | None = None
    commit: str | None = None
    branch: str | None = None
    dirty: bool | None = None
    _proc: _Background | None = None

    def settle(self) -> "GitInfo":
        """Collect the dirty flag from the background git."""
        if self._proc is not None:
            try:
                rc = self._proc.wait(timeout=10)
            except OSError:
                rc = None
            self.dirty = {0: False, 1: True}.get(rc)
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
            # Tracked files only (like `git status -uno`): new outputs are untracked by nature.
            info._proc = _Background(["git", "-C", root, "diff", "--quiet", "HEAD", "--"])
        except OSError:
            pass
    return info
