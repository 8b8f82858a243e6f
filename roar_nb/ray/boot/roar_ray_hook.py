"""Entry points that Ray itself imports by name: the driver's runtime-env hook and the
workers' process setup hook (`roar_ray_hook.env_hook`, `roar_ray_hook.setup`).

`roar run` puts this directory at the end of PYTHONPATH and names `env_hook` in
$RAY_RUNTIME_ENV_HOOK, so a Python that runs `ray.init()` imports it without any change
to the user's code. It owns only the hand-over: it finds roar_nb (this file lives inside
it) and calls roar_nb.ray.driver / roar_nb.ray.worker. It must stay stdlib-only and
cheap, and must never raise into Ray: an exception here would fail `ray.init()` or kill
every worker, so failures become notes in the spool (what the merge reports).
"""

import os
import sys


def _roar_nb():
    try:
        import roar_nb  # noqa: F401
    except ImportError:
        # The user's Python has no roar_nb installed: use the tree this file is part of.
        sys.path.append(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def env_hook(runtime_env):
    """$RAY_RUNTIME_ENV_HOOK: called by `ray.init()` in the driver before any daemon starts."""
    user = os.environ.get("ROAR_RAY_USER_ENV_HOOK")
    if user:  # the user's (or another tool's) hook keeps running, first
        mod, _, fn = user.rpartition(".")
        import importlib

        runtime_env = getattr(importlib.import_module(mod), fn)(runtime_env)
    try:
        _roar_nb()
        from roar_nb.ray import driver

        return driver.env_hook(runtime_env)
    except Exception as e:  # noqa: BLE001 - never fail the user's ray.init
        _problem(f"the Ray driver hook failed ({type(e).__name__}: {e}); Ray tasks were not captured")
        return runtime_env


def setup():
    """worker_process_setup_hook: runs once in every Ray worker process, before its first task."""
    try:
        _roar_nb()
        from roar_nb.ray import worker

        worker.setup()
    except Exception as e:  # noqa: BLE001 - a raising setup hook kills the worker
        _problem(f"the Ray worker hook failed in pid {os.getpid()} ({type(e).__name__}: {e})")
    user = os.environ.get("ROAR_RAY_USER_SETUP_HOOK")
    if user:  # the user's own setup hook (a string); its errors are theirs, as without roar
        mod, _, fn = user.rpartition(".")
        import importlib

        getattr(importlib.import_module(mod), fn)()


def _problem(text):
    spool = os.environ.get("ROAR_RAY_SPOOL")
    if not spool:
        return
    try:
        os.makedirs(spool, exist_ok=True)
        with open(os.path.join(spool, "problems.txt"), "a") as f:
            f.write(text.replace("\n", " ") + "\n")
    except OSError:
        pass
