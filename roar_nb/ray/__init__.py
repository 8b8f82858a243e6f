"""Ray integration: every Ray task a traced command runs becomes a job of its own
(kind `ray_task`, step = the function name, child of the driver job).

This package owns the roar side of it: `prepare` gives a `roar run` command's
environment what a `ray.init()` inside it needs (the runtime-env hook, the spool
directory); `merge` turns the spool's per-task fragments into jobs when the command
ends. The driver and worker halves run inside the user's processes (driver.py,
worker.py, boot/roar_ray_hook.py); fragments.py does the merge. This module is on the `roar run` path: at import it
must stay stdlib-light (no `ray`, no `json`), and it never imports Ray at all.

Works now: a script that starts Ray locally (`ray.init()` with no running cluster),
tasks and sync actor calls. Not yet: attaching to an existing cluster, `ray job submit`,
notebook cells, concurrent (async/threaded) actor calls told apart, the state-API
cross-check (see README "Ray").
"""

from __future__ import annotations

import os

HOOK = "roar_ray_hook.env_hook"
BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")
ENV_SPOOL = "ROAR_RAY_SPOOL"


def spool_dir(trace_dir: str) -> str:
    return trace_dir.rstrip("/") + "-ray"


def prepare(project, env: dict, trace_dir: str) -> None:
    """Arm the Ray hooks in a traced command's environment (a few string operations)."""
    if not project.config.get("ray.enabled") or not trace_dir:
        return
    old = env.get("RAY_RUNTIME_ENV_HOOK")
    if old and old != HOOK:  # someone's own hook: ours calls it first
        env["ROAR_RAY_USER_ENV_HOOK"] = old
    env["RAY_RUNTIME_ENV_HOOK"] = HOOK
    path = env.get("PYTHONPATH")
    if not path or BOOT_DIR not in path.split(os.pathsep):
        # At the end: the user's own modules keep their precedence.
        env["PYTHONPATH"] = f"{path}{os.pathsep}{BOOT_DIR}" if path else BOOT_DIR
    env[ENV_SPOOL] = spool_dir(trace_dir)


def merge(project, draft, trace_dir: str, events: list) -> tuple[list, list]:
    """Store the Ray tasks of the driver job `draft`; returns (the driver's events without
    Ray's own files, ids of the task jobs). Never raises: failures become notes."""
    spool = spool_dir(trace_dir) if trace_dir else ""
    if not spool or not os.path.isdir(spool):
        if any("/site-packages/ray/_private/" in e.path for e in events[:20000]):
            why = ("ray.enabled is false" if not project.config.get("ray.enabled") else
                   "Ray's runtime-env hook did not run (uv run, Ray Client, or a tracer other than preload)")
            draft.capture_notes.append(f"this command used Ray but roar's Ray integration was off ({why}): "
                                       "work done in Ray tasks was not captured")
            draft.capture_level = "partial"
        return events, []
    try:
        from roar_nb.ray import fragments

        return fragments.merge(project, draft, spool, events)
    except Exception as e:  # noqa: BLE001 - the driver job is still recorded
        draft.capture_notes.append(f"Ray task records could not be merged ({type(e).__name__}: {e})")
        draft.capture_level = "partial"
        return events, []
    finally:
        import shutil

        shutil.rmtree(spool, ignore_errors=True)
