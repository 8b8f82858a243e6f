"""Per-task capture inside a Ray worker process (run once per worker by the setup hook).

It owns the task window: the preload library, inherited dormant through LD_PRELOAD, is
switched on (`roar_begin(<spool>/tasks/<task>-<attempt>)`) when a task or actor method
starts and off (`roar_end()`) when it returns or raises; the window's events are then
reduced, the inputs and outputs hashed (blake3) here, where the bytes are and before a
later task can overwrite them, and one JSON line per task is appended to
`<spool>/frag-<pid>.jsonl`. The task directory is removed only after its line is
written, so a directory left behind means the worker died mid-task (the merge records
that task as `lost`).

Limits (said in each fragment's notes, and the task is `partial`, where they apply):
begin/end is process-wide, so calls that overlap in one worker (a threaded actor) are not
told apart; a generator or coroutine (async actors) is captured only until it is returned. It must never raise into
Ray (a failure becomes a note), never touch the store and never print.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import shutil
import threading
import time

from roar_nb.capture import events as ev_mod
from roar_nb.capture import inkernel
from roar_nb.hashing import hash_paths

WORKING_DIR = "/runtime_resources/working_dir_files/_ray_pkg_"
_state: dict = {}
_active: list = []  # the calls running now in this worker (more than one: a threaded actor)
_lock = threading.Lock()
OVERLAP = ("ran at the same time as another call in this Ray worker (a threaded actor): file I/O of "
           "overlapping calls may be missing or attributed to the other call")


def setup() -> None:
    if _state:
        return
    spool = os.environ.get("ROAR_RAY_SPOOL")
    if not spool:
        return
    _state["spool"] = spool
    lib = inkernel.loaded_library()
    _state["native"] = inkernel.Native(lib) if lib else None
    from ray._private import function_manager

    cls = function_manager.FunctionActorManager
    original = cls.get_execution_info

    def get_execution_info(self, job_id, function_descriptor):
        info = original(self, job_id, function_descriptor)
        fn = info.function
        if getattr(fn, "_roar_wrapped", False) or info.function_name.startswith("__ray"):
            return info
        wrapped = info._replace(function=_wrap(fn, info.function_name))
        # Ray caches the info per function id: the wrapper is what later calls get.
        self._function_execution_info[function_descriptor.function_id] = wrapped
        return wrapped

    cls.get_execution_info = get_execution_info
    _state["ignore"] = _ray_noise()


def _ray_noise() -> tuple:
    prefixes = [_state["spool"] + "/", "/dev/shm/plasma"]
    try:
        import ray

        prefixes.append(ray.get_runtime_context().get_temp_dir().rstrip("/") + "/")
    except Exception:  # noqa: BLE001 - Ray internals moved: keep what we have
        pass
    return tuple(prefixes)


def _wrap(fn, name: str):
    @functools.wraps(fn)
    def roar_task(*args, **kwargs):
        t = _begin(name)
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            _end(t, "failed", type(e).__name__)
            raise
        if inspect.isgenerator(result) or inspect.iscoroutine(result) or inspect.isasyncgen(result):
            t["notes"].append("a generator or coroutine: only its creation was captured, not its body")
            t["partial"] = True
        _end(t, "ok", None)
        return result

    roar_task._roar_wrapped = True
    return roar_task


def _begin(name: str) -> dict:
    t = {"function": name, "started_at": time.time(), "notes": [], "partial": False, "pid": os.getpid()}
    try:
        import ray

        ctx = ray.get_runtime_context()
        t["task_id"] = ctx.get_task_id()
        t["actor_id"] = ctx.get_actor_id()
        t["node_id"] = ctx.get_node_id()
        t["worker_id"] = ctx.get_worker_id()
        t["job_id"] = ctx.get_job_id()
        try:  # qualified: `__main__.prep`, `__main__.Writer.put` (the execution info has `put`)
            t["function"] = ctx.get_task_function_name() or name
        except Exception:  # noqa: BLE001
            pass
        try:  # private: the attempt number is not in the public context
            t["attempt"] = ray._private.worker.global_worker.core_worker.get_current_task_attempt_number()
        except Exception:  # noqa: BLE001
            t["attempt"] = 0
        d = os.path.join(_state["spool"], "tasks", f"{t['task_id']}-{t['attempt']}")
        os.makedirs(d, exist_ok=True)
        with open(d + ".json", "w") as f:  # what the merge knows of a task whose worker dies
            json.dump(t, f)
        t["dir"] = d
        native = _state.get("native")
        with _lock:
            others = list(_active)
            _active.append(t)
        if others:  # begin/end is process-wide: say so on every call involved
            for o in [t, *others]:
                if OVERLAP not in o["notes"]:
                    o["notes"].append(OVERLAP)
                o["partial"] = True
        elif native is None:
            t["notes"].append("the preload library is not loaded in this Ray worker; file I/O not captured")
            t["partial"] = True
        elif not native.begin(d):
            t["notes"].append("roar_begin failed in this Ray worker; file I/O not captured")
            t["partial"] = True
        else:
            t["on"] = True
    except Exception as e:  # noqa: BLE001
        t["notes"].append(f"task capture could not start ({type(e).__name__}: {e})")
        t["partial"] = True
    return t


def _end(t: dict, status: str, exc_type) -> None:
    try:
        with _lock:
            _active[:] = [o for o in _active if o is not t]
        if t.pop("on", False):
            _state["native"].end()
        t["ended_at"] = time.time()
        t["status"] = status
        t["exception"] = exc_type
        d = t.get("dir")
        if d is None:
            return
        events, problems = ev_mod.read_trace_dir(d)
        ignore = _state["ignore"]
        # The job's working_dir is extracted under Ray's temp dir: the user's files (the
        # merge maps them back to the host's working_dir), not Ray's.
        events = [e for e in events if not e.path.startswith(ignore) or WORKING_DIR in e.path]
        r = ev_mod.reduce(events)
        ev_mod.settle_updates(r)
        inputs = list(r.inputs)
        outputs = list(r.outputs)
        hashed = hash_paths(inputs + outputs, progress_after=1e9)
        t["inputs"] = [[p, hashed[p].hash, hashed[p].size] for p in inputs]
        t["outputs"] = [[p, hashed[p].hash, hashed[p].size, r.created.get(p)] for p in outputs
                        if hashed[p].error != "not a regular file"]
        if problems:
            t["notes"].extend(problems)
            t["partial"] = True
        t["capture_level"] = "partial" if t["partial"] else "complete"
        if t["function"].endswith("__init__") and status == "ok" and not (inputs or outputs or problems):
            # An actor's constructor that touched no file: not a job of its own.
            shutil.rmtree(d, ignore_errors=True)
            os.unlink(d + ".json")
            return
        line = json.dumps(t) + "\n"
        # One write per line: a worker killed in the middle leaves at most a truncated last line.
        fd = os.open(os.path.join(_state["spool"], f"frag-{os.getpid()}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        shutil.rmtree(d, ignore_errors=True)
        os.unlink(d + ".json")
    except Exception:  # noqa: BLE001 - the user's task result must not depend on ours
        pass
