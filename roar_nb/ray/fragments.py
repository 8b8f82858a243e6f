"""Merging a spool of Ray task fragments into the store, when the driver job or a cell ends.

It owns turning `<spool>/frag-*.jsonl` lines into jobs (kind `ray_task`, step = function
name, hashes as computed on the worker) with their `ray_tasks` rows, recording tasks whose
worker died mid-task as `lost` (their `tasks/<id>-<attempt>.json` is still there) with
the driver marked `partial`, and dropping Ray's own files from the driver's events. The
caller stores the driver job (or cell) and its tasks in one transaction, the driver
first: it is `@N`, its tasks `@N+1`... in the order they started. It must not re-hash
worker files (a later task may have overwritten them) and must not raise.

A `roar run` command's spool is read once, when the command has exited (`final`): a task
that never reported is lost. A kernel's spool lives as long as the kernel and is read at
the end of every traced cell (`Spool` remembers how far each file was read): a task that
has not reported yet is lost only if its worker process is gone, else it is still running
and is recorded when a later traced cell ends, as the child of the traced cell during
whose window it started (or, if it started outside every traced cell, of the collecting
cell, with a note saying so).
"""

from __future__ import annotations

import glob
import json
import os

from roar_nb.model import CAPTURE_PARTIAL, Edge, Job, new_id

WORKING_DIR = "/runtime_resources/working_dir_files/_ray_pkg_"  # Ray's extracted copy of a job's working_dir
LOST_NOTE = "the Ray worker died during this task: no record of its I/O"


class Spool:
    """One spool directory and what has been read of it already (a kernel reads it cell by cell)."""

    def __init__(self, path: str):
        self.path = path
        self.offsets: dict = {}  # frag file -> bytes already merged
        self.said: set = set()  # driver problems already noted on an earlier cell
        self.windows: list = []  # (start, end, job id) of the traced cells recorded so far
        self.seen: set = set()  # task ids recorded so far (a kernel's spool: by earlier cells)

    def driver_info(self) -> tuple[set, set, list]:
        temps, kinds, problems = set(), set(), []
        for p in glob.glob(os.path.join(self.path, "driver-*.txt")):
            with open(p, errors="replace") as f:
                for line in f:
                    kind, _, text = line.rstrip("\n").partition(" ")
                    kinds.add(kind)
                    if kind == "temp":
                        temps.add(text.rstrip("/") + "/")
                    elif kind == "problem":
                        problems.append(text)
        try:
            with open(os.path.join(self.path, "problems.txt"), errors="replace") as f:
                problems += [line.strip() for line in f if line.strip()]
        except OSError:
            pass
        new = [p for p in dict.fromkeys(problems) if p not in self.said]
        self.said.update(new)
        return temps, kinds, new

    def fragments(self, final: bool) -> dict:
        """(task id, attempt) -> fragment, from the lines not read before. Each line is one
        write(): a line without its newline is a worker killed mid-write (skipped when
        `final`, else left for the next read)."""
        frags = {}
        for p in sorted(glob.glob(os.path.join(self.path, "frag-*.jsonl"))):
            with open(p, "rb") as f:
                f.seek(self.offsets.get(p, 0))
                data = f.read()
            end = len(data) if final else data.rfind(b"\n") + 1
            self.offsets[p] = self.offsets.get(p, 0) + end
            for line in data[:end].splitlines():
                try:
                    t = json.loads(line)
                except ValueError:
                    continue
                frags[(t.get("task_id"), t.get("attempt", 0))] = t
        return frags

    def unreported(self, known: set, final: bool) -> tuple[list, int]:
        """Tasks begun but not reported: (lost ones, how many are still running). Not
        `final`: a task is lost only when its worker process is gone."""
        lost, running = [], 0
        for p in glob.glob(os.path.join(self.path, "tasks", "*.json")):
            try:
                with open(p) as f:
                    t = json.load(f)
            except (OSError, ValueError):
                continue
            if t.get("task_id") in known:
                continue
            if not final and _alive(t.get("pid")):
                running += 1
                continue
            t.update(status="lost", ended_at=t.get("started_at"), capture_level=CAPTURE_PARTIAL, notes=[LOST_NOTE])
            lost.append(t)
            if not final:  # recorded now: not again at the next cell
                _remove(p)
        return lost, running

    def host_paths(self):
        """A function: a worker's path -> (the host's path, a note or None). Paths in Ray's
        extracted copy of a submitted job's working_dir map to the host's working_dir."""
        try:
            with open(os.path.join(self.path, "submit.json")) as f:
                wd = json.load(f).get("working_dir")
        except (OSError, ValueError, AttributeError):
            wd = None
        if not wd:
            return lambda p: (p, None)

        def host(p: str):
            i = p.find(WORKING_DIR)
            if i < 0:
                return p, None
            _pkg, _, rel = p[i + len(WORKING_DIR):].partition("/")
            mapped = os.path.join(wd, rel) if rel else wd
            return mapped, f"written in Ray's copy of the working_dir ({p}), not in this directory"
        return host

    def unseen_by_roar(self, known: set) -> list:
        """Tasks Ray's state API reports finished or failed (driver.state_snapshot) that sent
        roar no record at all, as lost records; the snapshot is consumed."""
        p = os.path.join(self.path, "state.json")
        try:
            with open(p) as f:
                rows = json.load(f)
            os.unlink(p)
        except (OSError, ValueError):
            return []
        out = []
        for r in rows:
            f = r.get("function") or ""
            if r.get("task_id") in known or r.get("task_id") in self.seen or f.startswith("roar_nb.") \
                    or "__ray" in f or ".__init__" in f:
                continue
            out.append({**r, "function": f or r.get("name"), "status": "lost", "capture_level": CAPTURE_PARTIAL,
                        "exception": r.get("error_type"),
                        "notes": [f"Ray's state API reports this task {r.get('state')}, but roar received no record "
                                  "of it (its worker ran without roar's hook, or died before the task began): "
                                  "its file I/O was not captured"]})
        return out

    def parent_for(self, started_at: float, default: str) -> str:
        for t0, t1, job_id in self.windows:
            if t0 <= started_at <= t1:
                return job_id
        return default


def _per_actor(best: dict) -> dict:
    """ray.actor_attribution = per_actor: the calls of one actor become one record (its
    inputs and outputs together, the first input and last output hash of each path)."""
    out, actors = {}, {}
    for key, t in sorted(best.items(), key=lambda kv: kv[1].get("started_at") or 0):
        a = t.get("actor_id")
        if not a:
            out[key] = t
            continue
        g = actors.get(a)
        if g is None:
            cls = (t.get("function") or "?").rpartition(".")[0] or t.get("function")
            g = actors[a] = out[a] = {**t, "function": cls, "task_id": None, "attempt": None, "calls": 0,
                                      "inputs": [], "outputs": [], "notes": [], "_ins": {}, "_outs": {}}
        g["calls"] += 1
        for e in t.get("inputs", ()):
            g["_ins"].setdefault(e[0], e)
        for e in t.get("outputs", ()):
            g["_outs"][e[0]] = e
        g["ended_at"] = max(g.get("ended_at") or 0, t.get("ended_at") or 0)
        if t.get("status") != "ok":
            g["status"], g["exception"] = t.get("status"), t.get("exception")
        levels = {g.get("capture_level"), t.get("capture_level")}
        g["capture_level"] = ("complete" if levels == {"complete"} else
                              "python-only" if levels <= {"complete", "python-only"} else "partial")
        g["notes"] += [n for n in t.get("notes", ()) if n not in g["notes"]]
    for g in actors.values():
        g["inputs"], g["outputs"] = list(g.pop("_ins").values()), list(g.pop("_outs").values())
        g["notes"].insert(0, f"{g['calls']} method call(s) of one actor, one job (ray.actor_attribution = per_actor)")
    return out


def _alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove(json_path: str) -> None:
    import shutil

    shutil.rmtree(json_path[:-len(".json")], ignore_errors=True)
    try:
        os.unlink(json_path)
    except OSError:
        pass


def merge(project, draft, spool: Spool, events: list, said, final: bool = True) -> tuple[list, list]:
    """The tasks found in `spool` as jobs (children of `draft`, or of an earlier cell whose
    window they started in); returns (the draft's events without Ray's own files, a list of
    (task job, ray_tasks row) in the order they started), for the caller to store with
    `draft` in one transaction (`session.record_job(..., after=...)`). What it could not see
    goes to `said` (a `CaptureResult`, folded into the job by record_job)."""
    temps, kinds, problems = spool.driver_info()
    noise = tuple(temps | {spool.path + "/", "/dev/shm/plasma", "/tmp/ray/"})
    events = [e for e in events if not e.path.startswith(noise)]
    for p in problems:
        said.missed(p)
    frags = spool.fragments(final)
    if "submit" in kinds:
        if not any(t.get("kind") == "entrypoint" for t in frags.values()):
            said.missed("the job's entrypoint ran on the Ray cluster and sent roar no record: its "
                           "own file I/O outside Ray tasks was not captured")
    elif "hook" in kinds and "raylet" not in kinds and "attach" not in spool.said:
        spool.said.add("attach")
        said.missed("Ray attached to a cluster it did not start here: tasks on it were not captured "
                       "(only a local ray.init() is supported yet)")
    # Retries: keep the last successful attempt of a task, else its last attempt.
    best: dict = {}
    for (task, attempt), t in sorted(frags.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        prev = best.get(task)
        if prev is None or t.get("status") == "ok" or prev.get("status") != "ok":
            best[task] = t
    if project.config.get("ray.actor_attribution") == "per_actor":
        best = _per_actor(best)
    reported = set(best) | {t.get("task_id") for t in frags.values()}
    lost, running = spool.unreported(reported, final)
    for t in lost:
        best[t["task_id"]] = t
    if lost:
        said.missed(f"{len(lost)} Ray task(s) lost: their worker died before reporting")
    unseen = spool.unseen_by_roar(reported | {t["task_id"] for t in lost})
    for t in unseen:
        best[t["task_id"]] = t
    if unseen:
        said.missed(f"{len(unseen)} Ray task(s) that Ray's state API reports as run sent roar no "
                       "record: recorded as lost")
    spool.seen.update(reported | set(best))
    if running:
        said.notes.append(f"{running} Ray task(s) still running when this cell ended: each is recorded "
                          "when the next traced cell ends, as the child of the cell it started in")
    if not best:
        return events, []
    from roar_nb import environment

    env_id = environment.snapshot()[0]
    ignore = project.read_filter()
    host = spool.host_paths()
    out = []
    for t in sorted(best.values(), key=lambda t: t.get("started_at") or 0):
        ins = tuple(Edge("in", host(p)[0], h, s or 0) for p, h, s in t.get("inputs", ()) if not ignore(host(p)[0]))
        outs = tuple(Edge("out", q, h, s or 0, False, note, c) for (q, note), h, s, c in
                     ((host(p), h, s, c) for p, h, s, c in t.get("outputs", ()))
                     if not q.startswith(project.roar_dir + "/"))
        status = t.get("status", "lost")
        notes = list(t.get("notes", ()))
        if t.get("exception"):
            notes.append(f"raised {t['exception']}")
        started = t.get("started_at") or draft.started_at
        parent = draft.id
        if not final and started < draft.started_at:
            parent = spool.parent_for(started, draft.id)
            if parent == draft.id:
                notes.append("started before this cell began, outside any traced cell: recorded with this cell, "
                             "the first traced cell to end after it")
            else:
                notes.append("ended after the cell it started in: recorded when a later traced cell ended")
        job = Job(
            id=new_id(), session_id=draft.session_id, seq=0, kind="ray_task", step=t.get("function") or "?",
            command=f"ray task {t.get('function')} (task {t.get('task_id')}, attempt {t.get('attempt', 0)})",
            cwd=draft.cwd, started_at=started,
            ended_at=t.get("ended_at") or started,
            exit_code=0 if status == "ok" else None if status == "lost" else 1, status=status,
            backend="preload", capture_level=t.get("capture_level") or CAPTURE_PARTIAL,
            capture_notes=tuple(notes), env_id=env_id, parent_job_id=parent, inputs=ins, outputs=outs,
        )
        row = {k: t.get(k) for k in ("task_id", "attempt", "actor_id", "node_id", "worker_id", "pid", "function")}
        row.update(status=status, exception_type=t.get("exception"))
        out.append((job, row))
    return events, out
