"""Re-running a recorded command: `roar run @N [--key=value ...]`.

Owns how a recorded job and the user's overrides become the next command: which
argv (`override`), which kind, whether it stays the same step (no overrides: a
re-run replaces the step; with overrides it is a new one), and where it runs.

What it must not do: run anything (session.run_command does), print, or parse
the command line of roar itself (the CLI does). Imports nothing heavy: it sits on
the `roar run` path.
"""

from __future__ import annotations

import os

from roar_nb.errors import UsageError
from roar_nb.model import record


@record
class Rerun:
    """What `roar run @N ARGS` runs: argv, kind, step (None: a new step) and cwd (None: here)."""

    argv: list
    kind: str
    step: str | None
    cwd: str | None


def override(argv: list[str], overrides: list[str]) -> list[str]:
    """Apply `--key=value` / `--key value` overrides to a recorded argv; other words are appended."""
    out = list(argv)
    i = 0
    while i < len(overrides):
        tok = overrides[i]
        if tok.startswith("--"):
            key, eq, val = tok.partition("=")
            if not eq and i + 1 < len(overrides) and not overrides[i + 1].startswith("--"):
                val, i = overrides[i + 1], i + 1
                eq = "="
            replaced = False
            for k, word in enumerate(out):
                if word == key and eq and k + 1 < len(out):
                    out[k + 1] = val
                    replaced = True
                    break
                if word.startswith(key + "="):
                    out[k] = f"{key}={val}" if eq else key
                    replaced = True
                    break
            if not replaced:
                out.append(f"{key}={val}" if eq else key)
        else:
            out.append(tok)
        i += 1
    return out


def plan(project, ref: str, overrides: list[str]) -> Rerun:
    """The re-run of the job `ref` (@N, an id prefix) with `overrides`. Cells are refused:
    they re-run in their notebook or through `roar reproduce`."""
    from roar_nb.resolve import resolve_job

    prev = resolve_job(project, ref)
    if prev.kind == "cell":
        raise UsageError(f"{prev.ref} is a notebook cell; re-run it in its notebook or with `roar reproduce`")
    return Rerun(argv=override(list(prev.argv), overrides), kind=prev.kind,
                 step=prev.step if not overrides else None,
                 cwd=prev.cwd if os.path.isdir(prev.cwd) else None)  # re-run where it ran
