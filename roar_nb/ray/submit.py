"""`roar run ray job submit ...`: the submission is changed so that the job's tasks are captured.

It owns rewriting the command's `--runtime-env-json` (adding one when absent): `env_vars`
gain roar's runtime-env hook (a hook the user named there still runs first), the spool
directory, `ROAR_RAY_SUBMIT=1` (the entrypoint's `ray.init()` then attaches roar's worker
setup hook to the job, chaining the user's) and the preload library in `LD_PRELOAD`
(dormant in the entrypoint and every worker; an absolute path: the cluster must share
this machine's filesystem); `py_modules` gains the roar_nb package (so a cluster Python
imports the hooks without an install of its own); `excludes` gains `.roar` when a working_dir is uploaded. The host path of the
working_dir goes to `<spool>/submit.json`, for the merge to map the workers' paths under
Ray's extracted copy back to it. The user's command line is recorded as they typed it;
only what runs is changed. It must not change anything else of the submission, and
anything it cannot rewrite (a `--runtime-env` YAML file, JSON that is not an object) is
left as is, with a note saying tasks were not captured.
"""

from __future__ import annotations

import json
import os

from roar_nb.ray import BOOT_DIR, ENV_SPOOL, HOOK

SUBMIT_FILE = "submit.json"
QUALIFIED = "roar_nb.ray.boot.roar_ray_hook."  # the hooks by a name a py_modules copy of roar_nb serves


def rewrite(argv: list, spool: str, cwd: str, notes: list) -> list:
    """The argv to run for the user's `ray job submit` argv (unchanged when it cannot be done)."""
    end = argv.index("--") if "--" in argv else len(argv)
    opts = list(argv[3:end])
    value, at = None, None
    working_dir = None
    for k, a in enumerate(opts):
        if a == "--runtime-env" or a.startswith("--runtime-env="):
            notes.append("ray job submit --runtime-env FILE is not rewritten by roar: the job's tasks were not "
                         "captured (use --runtime-env-json)")
            return list(argv)
        if a == "--runtime-env-json" and k + 1 < len(opts):
            value, at = opts[k + 1], (k, k + 2)
        elif a.startswith("--runtime-env-json="):
            value, at = a.split("=", 1)[1], (k, k + 1)
        elif a == "--working-dir" and k + 1 < len(opts):
            working_dir = opts[k + 1]
        elif a.startswith("--working-dir="):
            working_dir = a.split("=", 1)[1]
        elif a == "--no-wait":
            notes.append("ray job submit --no-wait: tasks that ran after this command ended were not captured")
    try:
        renv = json.loads(value) if value is not None else {}
    except ValueError:
        renv = None
    if not isinstance(renv, dict):
        notes.append("ray job submit: --runtime-env-json is not a JSON object, left as is: the job's tasks were "
                     "not captured")
        return list(argv)
    working_dir = working_dir if working_dir is not None else renv.get("working_dir")
    env_vars = dict(renv.get("env_vars") or {})
    user_hook = env_vars.get("RAY_RUNTIME_ENV_HOOK")
    if user_hook and user_hook not in (HOOK, QUALIFIED + "env_hook"):
        env_vars["ROAR_RAY_USER_ENV_HOOK"] = user_hook
    env_vars.update({"RAY_RUNTIME_ENV_HOOK": QUALIFIED + "env_hook", ENV_SPOOL: spool, "ROAR_RAY_SUBMIT": "1",
                     "ROAR_RAY_TRANSPORT": "spool"})
    from roar_nb.capture import preload
    from roar_nb.errors import RoarError

    try:
        lib = os.path.abspath(preload.library_path())
        old = env_vars.get("LD_PRELOAD")
        env_vars["LD_PRELOAD"] = f"{lib}:{old}" if old else lib
    except RoarError as e:
        notes.append(f"the job's Ray workers run without the preload library ({e}): tasks not captured")
    renv["env_vars"] = env_vars
    # roar_nb itself (1-2 MB): a cluster Python without roar-nb still imports the hooks.
    renv["py_modules"] = [*(renv.get("py_modules") or []), os.path.dirname(os.path.dirname(BOOT_DIR))]
    info = {}
    if isinstance(working_dir, str) and "://" not in working_dir:
        renv["excludes"] = [*(renv.get("excludes") or []), ".roar"]  # the database is never uploaded
        info["working_dir"] = os.path.abspath(os.path.join(cwd, working_dir))
    os.makedirs(spool, exist_ok=True)
    with open(os.path.join(spool, SUBMIT_FILE), "w") as f:
        json.dump(info, f)
    new = json.dumps(renv)
    if at is None:
        opts += ["--runtime-env-json", new]
    else:
        opts[at[0]:at[1]] = ["--runtime-env-json", new]
    return [*argv[:3], *opts, *argv[end:]]
