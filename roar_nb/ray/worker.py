"""Per-task capture inside a Ray worker process (run once per worker by the setup hook).

It owns the task window: the preload library, inherited dormant through LD_PRELOAD, is
switched on (`roar_begin(<spool>/tasks/<task>-<attempt>)`) when a task or actor method
starts and off (`roar_end()`) when it returns or raises (a generator: when it is
exhausted; a coroutine of an async actor: when it completes); the window's events are then
reduced, the inputs and outputs hashed (blake3) here, where the bytes are and before a
later task can overwrite them, and one JSON line per task is appended to
`<spool>/frag-<pid>.jsonl`. The task directory is removed only after its line is
written, so a directory left behind means the worker died mid-task (the merge records
that task as `lost`).

Calls that overlap in one worker (an async actor, or a threaded one with
max_concurrency > 1) cannot be told apart by the library (its begin/end is per process,
its records carry no thread): each such call is captured at the Python level instead,
through an audit hook that attributes every file operation to the call whose context
(a ContextVar, which asyncio tasks and the threads a call starts inherit) made it; such a
call is `python-only` and says so. A thread started by a call keeps that call's context;
if it is still running when the call ends, the call says so, and what it does later
through Python is kept out of the next call's window (what it does in C cannot be told
apart: that call is then `partial`). It must never raise into Ray (a failure becomes a
note), never touch the store and never print.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
import os
import shutil
import sys
import threading
import time

from roar_nb.capture import audit
from roar_nb.capture import events as ev_mod
from roar_nb.capture import inkernel
from roar_nb.hashing import hash_paths

WORKING_DIR = "/runtime_resources/working_dir_files/_ray_pkg_"
OVERLAP = ("ran at the same time as another call in this Ray worker (an async or threaded actor): "
           "python-level capture for this call (file I/O inside C extensions and subprocesses was not seen)")
LINGER = ("a thread this call started was still running when it ended: its later file I/O is not "
          "attributed to this call")
FOREIGN = ("a thread started by an earlier call in this Ray worker was running during this call: what it did "
           "through Python was left out, what it did in C could not be told apart")
_state: dict = {}
_active: list = []  # the calls running now in this worker
_lock = threading.Lock()
_call: contextvars.ContextVar = contextvars.ContextVar("roar_ray_call", default=None)
_late: list = []  # (t_ns, path) of Python file operations by threads whose call had ended
_lingering: list = []  # threads that outlived their call
_PRIVATE = ("py", "py_notes", "threads", "overlap", "foreign", "t0_ns")  # not part of a fragment


def setup() -> None:
    if _state:
        return
    spool = os.environ.get("ROAR_RAY_SPOOL")
    if not spool:
        return
    _state["spool"] = spool
    transport = os.environ.get("ROAR_RAY_TRANSPORT") or "auto"
    # No shared filesystem (or forced): records go through a named Ray actor (collector.py);
    # the task windows' trace files then live in a directory of this node's own.
    _state["actor"] = transport == "actor" or (transport == "auto" and not os.path.isdir(spool))
    if _state["actor"]:
        import tempfile

        _state["local"] = tempfile.mkdtemp(prefix="roar-ray-", dir="/dev/shm" if os.access("/dev/shm", os.W_OK) else None)
    else:
        _state["local"] = spool
    lib = inkernel.loaded_library()
    _state["native"] = inkernel.Native(lib) if lib else None
    from ray._private import function_manager

    cls = function_manager.FunctionActorManager
    original = cls.get_execution_info

    def get_execution_info(self, job_id, function_descriptor):
        info = original(self, job_id, function_descriptor)
        fn = info.function
        if getattr(fn, "_roar_wrapped", False) or info.function_name.startswith("__ray") or \
                getattr(function_descriptor, "module_name", "").startswith("roar_nb."):  # roar's collector
            return info
        wrapped = info._replace(function=_wrap(fn, info.function_name))
        # Ray caches the info per function id: the wrapper is what later calls get.
        self._function_execution_info[function_descriptor.function_id] = wrapped
        return wrapped

    cls.get_execution_info = get_execution_info
    _state["ignore"] = _ray_noise()
    _patch_thread_start()
    sys.addaudithook(_hook)


def _hook(name: str, args: tuple) -> None:
    """Every audit event of the worker: file operations go to the call whose context made them."""
    if name not in audit._FILE_EVENTS:
        return
    t = _call.get()
    if t is None:
        return
    if "ended_at" in t:  # a thread that outlived its call
        late: list = []
        audit.translate(name, args, late, [])
        _late.extend((e.t_ns, e.path) for e in late)
        _late.extend((e.t_ns, e.path2) for e in late if e.path2)
        return
    audit.translate(name, args, t["py"], t["py_notes"])


def _patch_thread_start() -> None:
    original = threading.Thread.start

    def start(self, *a, **k):
        t = _call.get()
        if t is not None:
            run = self.run

            def run_in_call():
                _call.set(t)
                return run()

            self.run = run_in_call
            t["threads"].append(self)
        return original(self, *a, **k)

    threading.Thread.start = start


def _ray_noise() -> tuple:
    prefixes = [_state["spool"] + "/", _state["local"] + "/", "/dev/shm/plasma"]
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
        token = _call.set(t)
        try:
            result = fn(*args, **kwargs)
        except BaseException as e:
            _end(t, "failed", type(e).__name__)
            raise
        finally:
            _call.reset(token)
        # The body of a coroutine or generator runs later: the call ends when it does.
        if inspect.iscoroutine(result):
            return _coroutine(t, result)
        if inspect.isgenerator(result):
            return _generator(t, result)
        if inspect.isasyncgen(result):
            return _async_generator(t, result)
        _end(t, "ok", None)
        return result

    roar_task._roar_wrapped = True
    return roar_task


async def _coroutine(t, coro):
    _call.set(t)  # this asyncio task's own context
    try:
        result = await coro
    except BaseException as e:
        _end(t, "failed", type(e).__name__)
        raise
    _end(t, "ok", None)
    return result


def _generator(t, gen):
    status, exc = "ok", None
    try:
        while True:
            _call.set(t)
            try:
                item = next(gen)
            except StopIteration as stop:
                return stop.value
            _call.set(None)
            yield item
    except BaseException as e:
        if not isinstance(e, GeneratorExit):
            status, exc = "failed", type(e).__name__
        raise
    finally:
        _call.set(None)
        _end(t, status, exc)


async def _async_generator(t, agen):
    status, exc = "ok", None
    _call.set(t)  # this asyncio task's own context
    try:
        async for item in agen:
            yield item
    except BaseException as e:
        if not isinstance(e, GeneratorExit):
            status, exc = "failed", type(e).__name__
        raise
    finally:
        _end(t, status, exc)


def _begin(name: str) -> dict:
    t = {"function": name, "started_at": time.time(), "notes": [], "partial": False, "pid": os.getpid(),
         "py": [], "py_notes": [], "threads": [], "t0_ns": time.monotonic_ns()}
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
        d = os.path.join(_state["local"], "tasks", f"{t['task_id']}-{t['attempt']}")
        os.makedirs(d, exist_ok=True)
        marker = json.dumps({k: v for k, v in t.items() if k not in _PRIVATE})
        if _state["actor"]:
            _send("begin", marker)
        else:
            with open(d + ".json", "w") as f:  # what the merge knows of a task whose worker dies
                f.write(marker)
        t["dir"] = d
        native = _state.get("native")
        t["foreign"] = any(th.is_alive() for th in _lingering)  # threads of earlier calls, running now
        with _lock:
            others = list(_active)
            _active.append(t)
            if others:  # begin/end is per process: every call involved is captured per context
                for o in [t, *others]:
                    o["overlap"] = True
        if others:
            pass
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


def hashed_io(events: list, ignore: tuple) -> tuple[list, list]:
    """([path, hash, size] inputs, [path, hash, size, created] outputs) of a window's events,
    hashed here (where the bytes are), without Ray's own files."""
    # The job's working_dir is extracted under Ray's temp dir: the user's files (the
    # merge maps them back to the host's working_dir), not Ray's.
    events = [e for e in events if not e.path.startswith(ignore) or WORKING_DIR in e.path]
    r = ev_mod.reduce(events)
    ev_mod.settle_updates(r)
    inputs, outputs = list(r.inputs), list(r.outputs)
    hashed = hash_paths(inputs + outputs, progress_after=1e9)
    return ([[p, hashed[p].hash, hashed[p].size] for p in inputs],
            [[p, hashed[p].hash, hashed[p].size, r.created.get(p)] for p in outputs
             if hashed[p].error != "not a regular file"])


def _remove_task_dir(d: str) -> None:
    shutil.rmtree(d, ignore_errors=True)
    try:
        os.unlink(d + ".json")
    except OSError:
        pass


def _send(kind: str, payload: str) -> None:
    """One record to the collector actor; waits for it, so the record is held before the
    task's result reaches the driver."""
    import ray

    from roar_nb.ray import collector

    h = _state.get("collector")
    if h is None:
        h = _state["collector"] = collector.handle(_state["spool"], create=True)
    ray.get(h.put.remote(kind, payload))


def _end(t: dict, status: str, exc_type) -> None:
    _call.set(None)  # our own files below are no call's
    try:
        t["ended_at"] = time.time()
        t1_ns = time.monotonic_ns()
        with _lock:
            _active[:] = [o for o in _active if o is not t]
        if t.pop("on", False):
            _state["native"].end()
        t["status"] = status
        t["exception"] = exc_type
        d = t.get("dir")
        if d is None:
            return
        level = "complete"
        if t.get("overlap"):
            events, problems = audit.settle(t["py"]), list(dict.fromkeys(t["py_notes"]))
            t["notes"].append(OVERLAP)
            level = "python-only"
        else:
            events, problems = ev_mod.read_trace_dir(d)
            alive_now = [th for th in _lingering if th.is_alive()]
            _lingering[:] = alive_now
            if alive_now or t.get("foreign"):
                # Threads of earlier calls ran in this window: drop what Python saw them touch.
                theirs = {p for ns, p in _late if t["t0_ns"] <= ns <= t1_ns}
                mine = {e.path for e in t["py"]}
                events = [e for e in events if e.path not in theirs or e.path in mine]
                t["notes"].append(FOREIGN)
                t["partial"] = True
        _late[:] = [x for x in _late if x[0] > t1_ns]
        alive = [th for th in t["threads"] if th.is_alive()]
        if alive:
            _lingering.extend(alive)
            t["notes"].append(LINGER)
        t["inputs"], t["outputs"] = hashed_io(events, _state["ignore"])
        inputs, outputs = t["inputs"], t["outputs"]
        if problems:
            t["notes"].extend(problems)
            t["partial"] = True
        t["capture_level"] = "partial" if t["partial"] else level
        if t["function"].endswith("__init__") and status == "ok" and not (inputs or outputs or problems):
            # An actor's constructor that touched no file: not a job of its own.
            if _state["actor"]:
                _send("frag", json.dumps({**{k: v for k, v in t.items() if k not in _PRIVATE}, "skip": True}))
            _remove_task_dir(d)
            return
        line = json.dumps({k: v for k, v in t.items() if k not in _PRIVATE}) + "\n"
        if _state["actor"]:
            _send("frag", line)
        else:
            # One write per line: a worker killed in the middle leaves at most a truncated last line.
            fd = os.open(os.path.join(_state["spool"], f"frag-{os.getpid()}.jsonl"),
                         os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        _remove_task_dir(d)
    except Exception:  # noqa: BLE001 - the user's task result must not depend on ours
        pass
