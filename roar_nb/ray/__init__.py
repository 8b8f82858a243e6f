"""Ray integration: every Ray task a traced command or cell runs becomes a job of its own
(kind `ray_task`, step = the function name, child of the driver job or cell).

This package owns the roar side of it: `prepare` gives a `roar run` command's
environment what a `ray.init()` inside it needs (the runtime-env hook, the spool
directory); `merge` turns the spool's per-task fragments into jobs when the command
ends; `arm_kernel` and `collect` do the same for a notebook kernel, cell by cell. The
driver and worker halves run inside the user's processes (driver.py, worker.py,
boot/roar_ray_hook.py); fragments.py does the merge. This module is on the `roar run`
path: at import it must stay stdlib-light (no `ray`, no `json`), and it never imports
Ray at all.

Works now: a script or a notebook cell that starts Ray locally (`ray.init()` with no
running cluster), `ray job submit` to a cluster on this machine (submit.py), tasks and
actor calls (per call, or per actor), and task records carried by a named Ray actor
when a worker does not see the spool (collector.py), and a cross-check with Ray's state
API at shutdown when the dashboard runs. Not yet: attaching to an existing cluster with
`ray.init(address=...)` (see README "Ray").
"""

from __future__ import annotations

import os
import sys

from roar_nb.capture.result import CaptureResult
from roar_nb.model import CAPTURE_PARTIAL

HOOK = "roar_ray_hook.env_hook"
BOOT_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "boot")
ENV_SPOOL = "ROAR_RAY_SPOOL"


def spool_dir(trace_dir: str) -> str:
    return trace_dir.rstrip("/") + "-ray"


def prepare(project, env: dict, trace_dir: str, argv: list, cwd: str, setup) -> list:
    """Arm the Ray hooks in a traced command's environment (a few string operations);
    returns the argv to run: the same, except for `ray job submit` (see submit.py). What
    cannot be captured goes to `setup` (the command's pre-run `CaptureResult`)."""
    if not project.config.get("ray.enabled") or not trace_dir:
        return argv
    spool = spool_dir(trace_dir)
    _arm(env, spool, project)
    if len(argv) > 2 and argv[1] == "job" and argv[2] == "submit" and os.path.basename(argv[0]) == "ray":
        from roar_nb.ray import submit

        n = len(setup.notes)
        argv = submit.rewrite(argv, spool, cwd, setup.notes)
        if len(setup.notes) > n:  # each says what was not captured
            setup.capture_level = CAPTURE_PARTIAL
        if project.config.get("ray.transport") == "actor":
            # A submitted job's driver runs on the cluster: it cannot hand the collector's
            # records to this host yet.
            setup.notes.append("ray.transport = actor is not supported for ray job submit yet: the "
                               "spool directory was used (the cluster must share this filesystem)")
    return argv


def _arm(env, spool: str, project) -> None:
    env["ROAR_RAY_TRANSPORT"] = str(project.config.get("ray.transport"))
    # Made now: a worker that sees it uses it (ray.transport = auto), one that does not
    # uses the collector actor.
    os.makedirs(spool, exist_ok=True)
    old = env.get("RAY_RUNTIME_ENV_HOOK")
    if old and old != HOOK:  # someone's own hook: ours calls it first
        env["ROAR_RAY_USER_ENV_HOOK"] = old
    env["RAY_RUNTIME_ENV_HOOK"] = HOOK
    path = env.get("PYTHONPATH")
    if not path or BOOT_DIR not in path.split(os.pathsep):
        # At the end: the user's own modules keep their precedence.
        env["PYTHONPATH"] = f"{path}{os.pathsep}{BOOT_DIR}" if path else BOOT_DIR
    env[ENV_SPOOL] = spool


def arm_kernel(project, base: str):
    """Arm the Ray hooks in this kernel's own environment (a `ray.init()` in a cell reads
    them; the daemons it starts, hence every worker, inherit them). Returns the kernel's
    spool (a `fragments.Spool`, under the kernel's private directory `base`), or None when
    `ray.enabled` is false. Nothing of Ray is imported."""
    if not project.config.get("ray.enabled"):
        return None
    from roar_nb.ray.fragments import Spool

    spool = os.path.join(base, "ray")
    _arm(os.environ, spool, project)
    if BOOT_DIR not in sys.path:  # the kernel's own ray.init imports the hook module by name
        sys.path.append(BOOT_DIR)
    return Spool(spool)


def collect(project, draft, spool, events: list) -> tuple[list, list, CaptureResult]:
    """At the end of a traced cell: the Ray tasks that reported since the last cell (see
    fragments.py for which cell each is the child of); returns (the cell's events without
    Ray's own files, (task job, ray_tasks row) pairs to store with the cell, what the merge
    could not see as a `CaptureResult` for `record_job`). Never raises."""
    said = CaptureResult()
    try:
        if not os.path.isdir(spool.path):
            return events, [], said
        from roar_nb.ray import fragments

        if os.environ.get("ROAR_RAY_TRANSPORT") != "spool" and "ray" in sys.modules and \
                sys.modules["ray"].is_initialized():
            from roar_nb.ray import driver

            driver.drain(spool.path)  # records that came through the collector actor
        return (*fragments.merge(project, draft, spool, events, said, final=False), said)
    except Exception as e:  # noqa: BLE001 - the cell is still recorded
        said.missed(f"Ray task records could not be merged ({type(e).__name__}: {e})")
        return events, [], said
    finally:
        spool.windows.append((draft.started_at, draft.ended_at or draft.started_at, draft.id))


def merge(project, draft, trace_dir: str, events: list) -> tuple[list, list, CaptureResult]:
    """The Ray tasks of the driver job `draft`; returns (the driver's events without Ray's
    own files, (task job, ray_tasks row) pairs for `session.record_job(..., after=...)`,
    what the merge could not see as a `CaptureResult`). Never raises: failures become notes."""
    said = CaptureResult()
    spool = spool_dir(trace_dir) if trace_dir else ""
    try:
        used = bool(spool) and bool(os.listdir(spool))  # made by prepare: empty unless Ray ran
    except OSError:
        used = False
    if not used:
        if spool:
            try:
                os.rmdir(spool)
            except OSError:
                pass
        if any("/site-packages/ray/_private/" in e.path for e in events[:20000]):
            why = ("ray.enabled is false" if not project.config.get("ray.enabled") else
                   "Ray's runtime-env hook did not run (uv run, Ray Client, or a tracer other than preload)")
            said.missed(f"this command used Ray but roar's Ray integration was off ({why}): "
                           "work done in Ray tasks was not captured")
        return events, [], said
    try:
        from roar_nb.ray import fragments

        return (*fragments.merge(project, draft, fragments.Spool(spool), events, said), said)
    except Exception as e:  # noqa: BLE001 - the driver job is still recorded
        said.missed(f"Ray task records could not be merged ({type(e).__name__}: {e})")
        return events, [], said
    finally:
        import shutil

        shutil.rmtree(spool, ignore_errors=True)
