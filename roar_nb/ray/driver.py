"""The Ray driver side, inside the traced Python (a `roar run` command or a roar kernel)
that calls `ray.init()` (run from
$RAY_RUNTIME_ENV_HOOK by boot/roar_ray_hook.py, before Ray starts any daemon).

It owns two things: Ray's daemons start untraced (the driver job must not fill with
Ray's own log and socket files, and worker writes must not be counted twice), and the
raylet's environment carries what every worker needs (the dormant preload library is
already in LD_PRELOAD; our setup hook and the spool directory are added), so that no
non-empty runtime_env is forced on the user (that would cost fresh workers per job).
The user's own `worker_process_setup_hook`, a string or a callable, is chained, not
replaced. It must not import Ray before Ray imports it, must not change the user's
runtime_env beyond that chaining, and must never raise into `ray.init()`.
"""

from __future__ import annotations

import os

SETUP_HOOK = "roar_ray_hook.setup"
SUBMIT_SETUP_HOOK = "roar_nb.ray.boot.roar_ray_hook.setup"  # the name a py_modules copy of roar_nb serves
HOOK_VAR = "__RAY_WORKER_PROCESS_SETUP_HOOK_ENV_VAR"  # ray_constants.WORKER_PROCESS_SETUP_HOOK_ENV_VAR
_patched = False


def _note(kind: str, text: str) -> None:
    """One line into the spool's driver file (read by the merge); the spool is never a job's I/O."""
    spool = os.environ.get("ROAR_RAY_SPOOL")
    if not spool:
        return
    os.makedirs(spool, exist_ok=True)
    with open(os.path.join(spool, f"driver-{os.getpid()}.txt"), "a") as f:
        f.write(f"{kind} {text}\n")


def env_hook(runtime_env):
    _note("hook", "ran")
    if os.environ.get("ROAR_RAY_SUBMIT"):
        # The entrypoint of a job `roar run ray job submit` sent: Ray's daemons run already,
        # so the job's workers get roar's setup hook through the job's runtime_env.
        _note("submit", "ran")
        _capture_entrypoint()
        runtime_env = dict(runtime_env or {})
        if not runtime_env.get("worker_process_setup_hook"):
            runtime_env["worker_process_setup_hook"] = SUBMIT_SETUP_HOOK
            return runtime_env
        return chain_user_hook(runtime_env, SUBMIT_SETUP_HOOK)
    runtime_env = chain_user_hook(runtime_env)
    _patch_daemon_start()
    _drain_before_shutdown()
    return runtime_env


def drain(spool: str, final: bool = False) -> None:
    """Move what the collector actor holds (collector.py) into the spool, as the workers
    would have written it there: fragment lines, and begin markers of tasks that have not
    reported (a lost task's only trace). `final`: the actor is then killed."""
    import json

    import ray

    from roar_nb.ray import collector

    if not ray.is_initialized():
        return
    h = collector.handle(spool, create=False)
    if h is None:
        return
    msgs = ray.get(h.take.remote(), timeout=120)
    os.makedirs(os.path.join(spool, "tasks"), exist_ok=True)
    begun, lines = {}, []
    for kind, payload in msgs:
        t = json.loads(payload)
        key = f"{t.get('task_id')}-{t.get('attempt', 0)}"
        if kind == "begin":
            begun[key] = payload
            continue
        begun.pop(key, None)
        try:  # its marker from an earlier drain (a cell)
            os.unlink(os.path.join(spool, "tasks", key + ".json"))
        except OSError:
            pass
        if not t.get("skip"):
            lines.append(payload if payload.endswith("\n") else payload + "\n")
    with open(os.path.join(spool, "frag-actor.jsonl"), "a") as f:
        f.write("".join(lines))
    for key, payload in begun.items():
        with open(os.path.join(spool, "tasks", key + ".json"), "w") as f:
            f.write(payload)
    if final:
        ray.kill(h)


def state_snapshot(spool: str) -> None:
    """Ray's own list of this job's finished and failed tasks (the state API, served by the
    dashboard: absent without it), into `<spool>/state.json` for the merge to cross-check:
    a task Ray ran that sent roar no record becomes `lost`. Never raises."""
    try:
        import json

        import ray

        if not ray.is_initialized():
            return
        node = getattr(ray._private.worker, "_global_node", None)
        if node is not None and not node.address_info.get("webui_url"):
            return  # Ray started here without its dashboard: no state API to ask
        from ray.util.state import list_tasks  # 0.2 s to import: only when there is one

        job = ray.get_runtime_context().get_job_id()
        rows = list_tasks(filters=[("job_id", "=", job)], limit=10000, timeout=10, raise_on_missing_output=False)
        out = [{"task_id": r.task_id, "attempt": r.attempt_number, "state": r.state, "type": r.type,
                "function": r.func_or_class_name, "name": r.name, "actor_id": r.actor_id, "node_id": r.node_id,
                "worker_id": r.worker_id, "pid": r.worker_pid, "error_type": r.error_type}
               for r in rows if r.state in ("FINISHED", "FAILED") and r.type in ("NORMAL_TASK", "ACTOR_TASK")]
        with open(os.path.join(spool, "state.json"), "w") as f:
            json.dump(out, f)
    except Exception:  # noqa: BLE001 - no dashboard, or the state API moved: no cross-check
        pass


def _drain_before_shutdown() -> None:
    """Drain the collector before Ray goes away: when the program calls ray.shutdown(), or
    at exit (registered now, after Ray's own atexit handler, so it runs first)."""
    spool = os.environ.get("ROAR_RAY_SPOOL")
    if not spool:
        return
    import atexit

    import ray

    original = ray.shutdown
    if getattr(original, "_roar", False):
        return

    def quietly():
        state_snapshot(spool)
        try:
            drain(spool, final=True)
        except Exception as e:  # noqa: BLE001 - never fail the user's shutdown
            _note("problem", f"Ray task records could not be fetched from roar's collector actor "
                             f"({type(e).__name__}: {e}); tasks that used it are missing")

    def shutdown(*a, **k):
        quietly()
        return original(*a, **k)

    shutdown._roar = True
    ray.shutdown = shutdown
    atexit.register(quietly)


def _capture_entrypoint() -> None:
    """A submitted job's entrypoint (the Ray driver on the cluster): its own file I/O from
    `ray.init()` to exit, as one record in the spool (`kind: entrypoint`), which the merge
    makes a child job of the submitting one. The preload library is dormant in it (the
    job's LD_PRELOAD); outside tasks, nothing else would see this process."""
    spool = os.environ.get("ROAR_RAY_SPOOL")
    from roar_nb.capture import inkernel

    lib = inkernel.loaded_library()
    if not spool or lib is None:
        return
    import sys
    import time

    native = inkernel.Native(lib)
    d = os.path.join(spool, f"entrypoint-{os.getpid()}")
    os.makedirs(d, exist_ok=True)
    if not native.begin(d):
        return
    t = {"kind": "entrypoint", "task_id": f"entrypoint-{os.getpid()}", "attempt": 0, "pid": os.getpid(),
         "function": "entrypoint " + " ".join(sys.argv), "started_at": time.time(), "notes": []}

    def finish():
        import json
        import shutil

        native.end()
        try:
            import ray

            from roar_nb.capture import events as ev_mod
            from roar_nb.ray import worker

            ignore = [spool + "/", "/dev/shm/plasma", "/tmp/ray/"]
            if ray.is_initialized():
                ignore.append(ray.get_runtime_context().get_temp_dir().rstrip("/") + "/")
            events, problems = ev_mod.read_trace_dir(d)
            t["inputs"], t["outputs"] = worker.hashed_io(events, tuple(ignore))
            t.update(ended_at=time.time(), status="ok",
                     notes=["the entrypoint of the submitted job, captured from its ray.init() to its exit", *problems],
                     capture_level="partial" if problems else "complete")
            with open(os.path.join(spool, f"frag-entrypoint-{os.getpid()}.jsonl"), "a") as f:
                f.write(json.dumps(t) + "\n")
        except Exception as e:  # noqa: BLE001 - never fail the user's exit
            _note("problem", f"the submitted job's entrypoint I/O could not be recorded ({type(e).__name__}: {e})")
        shutil.rmtree(d, ignore_errors=True)

    import atexit

    atexit.register(finish)  # after Ray's own handler: runs first, while Ray is still up


def chain_user_hook(runtime_env, ours: str = SETUP_HOOK):
    """Put roar's worker setup hook in front of the user's, which still runs after it."""
    if not runtime_env or not runtime_env.get("worker_process_setup_hook"):
        return runtime_env
    runtime_env = dict(runtime_env)
    user = runtime_env["worker_process_setup_hook"]
    if user in (SETUP_HOOK, SUBMIT_SETUP_HOOK):  # ours already (a runtime_env passed on): no recursion
        return runtime_env
    if isinstance(user, str):
        env_vars = dict(runtime_env.get("env_vars") or {})
        env_vars["ROAR_RAY_USER_SETUP_HOOK"] = user
        runtime_env["env_vars"] = env_vars
        runtime_env["worker_process_setup_hook"] = ours
    elif callable(user):
        def roar_then_user(_user=user):
            try:
                import roar_ray_hook
            except ImportError:  # a submitted job: roar_nb came through py_modules
                from roar_nb.ray.boot import roar_ray_hook

            roar_ray_hook.setup()
            return _user()

        runtime_env["worker_process_setup_hook"] = roar_then_user
    return runtime_env


def _trace_dir_now() -> str:
    # roar_begin sets ROAR_TRACE_DIR with C setenv, which os.environ never sees.
    import ctypes

    v = ctypes.CDLL(None).getenv
    v.restype = ctypes.c_char_p
    got = v(b"ROAR_TRACE_DIR")
    return os.fsdecode(got) if got else ""


def _patch_daemon_start() -> None:
    global _patched
    if _patched:
        return
    from ray._private import services  # Ray is being imported by ray.init already

    from roar_nb.capture import inkernel

    lib = inkernel.loaded_library()
    if lib is None:
        _note("problem", "the preload library is not loaded in the driver (another tracer?); Ray tasks were not captured")
        return
    native = inkernel.Native(lib)
    original = services.start_ray_process

    def start_ray_process(command, process_type, fate_share, env_updates=None, *a, **k):
        env_updates = dict(env_updates or {})
        env_updates["ROAR_TRACE_DIR"] = ""  # the daemon (and what it starts) loads the library dormant
        # ... and, in a roar kernel, does not follow the kernel's control block (which would
        # put the daemons' and workers' files into whichever cell runs).
        env_updates["ROAR_CONTROL"] = ""
        for arg in command:
            if isinstance(arg, str) and arg.startswith(("--temp-dir=", "--temp_dir=")):
                _note("temp", arg.split("=", 1)[1])
        if process_type == "raylet":
            env_updates[HOOK_VAR] = SETUP_HOOK
            _note("raylet", "local")
        trace_dir = _trace_dir_now()
        # Dormant while spawning: an active library would hand the child this job's directory.
        if trace_dir:
            native.end()
        try:
            return original(command, process_type, fate_share, env_updates, *a, **k)
        finally:
            if trace_dir:
                native.begin(trace_dir)

    services.start_ray_process = start_ray_process
    _patched = True
