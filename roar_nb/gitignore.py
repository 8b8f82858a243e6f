"""`roar init`'s `.gitignore` policy: keep `.roar/` (the database, traces) out of git.

Owns when the entry is wanted (the project is a git work tree and `.gitignore`
does not already ignore `.roar`) and how it is added (appended on its own line,
never rewriting what the user wrote).

What it must not do: prompt or print (the CLI asks and reports), create a
`.gitignore` outside a git work tree, or touch any other line of the file.
"""

from __future__ import annotations

import os

_ENTRIES = (".roar", ".roar/", "/.roar", "/.roar/")


def wanted(root: str) -> bool:
    """Whether `root` is a git work tree whose .gitignore does not ignore .roar/ yet."""
    if not os.path.exists(os.path.join(root, ".git")):
        return False
    try:
        with open(os.path.join(root, ".gitignore")) as f:
            return not any(ln.strip() in _ENTRIES for ln in f.read().splitlines())
    except FileNotFoundError:
        return True


def add(root: str) -> None:
    """Append `.roar/` to root/.gitignore (creating it), on a line of its own."""
    path = os.path.join(root, ".gitignore")
    try:
        with open(path) as f:
            ends_clean = f.read().endswith("\n")
    except FileNotFoundError:
        ends_clean = True
    with open(path, "a") as f:
        f.write(("" if ends_clean else "\n") + ".roar/\n")
