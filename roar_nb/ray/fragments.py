"""Merging a spool of Ray task fragments into the store, when the driver job ends.

It owns turning `<spool>/frag-*.jsonl` lines into jobs (kind `ray_task`, step = function
name, hashes as computed on the worker), recording tasks whose worker died mid-task as
`lost` (their `tasks/<id>-<attempt>.json` is still there) with the driver marked
`partial`, and dropping Ray's own files from the driver's events. The driver job itself
is stored by the caller, which makes it the tasks' parent. It must not re-hash worker
files (a later task may have overwritten them) and must not raise.
"""

from __future__ import annotations

import glob
import json
import os

from roar_nb.model import CAPTURE_PARTIAL, Edge, Job, new_id
from roar_nb.errors import RoarError


def _driver_info(spool: str) -> tuple[set, set, list]:
    temps, kinds, problems = set(), set(), []
    for p in glob.glob(os.path.join(spool, "driver-*.txt")):
        with open(p, errors="replace") as f:
            for line in f:
                kind, _, text = line.rstrip("\n").partition(" ")
                kinds.add(kind)
                if kind == "temp":
                    temps.add(text.rstrip("/") + "/")
                elif kind == "problem":
                    problems.append(text)
    try:
        with open(os.path.join(spool, "problems.txt"), errors="replace") as f:
            problems += [line.strip() for line in f if line.strip()]
    except OSError:
        pass
    return temps, kinds, problems


def _fragments(spool: str) -> dict:
    """(task id, attempt) -> fragment; a truncated last line (a killed worker) is skipped."""
    frags = {}
    for p in sorted(glob.glob(os.path.join(spool, "frag-*.jsonl"))):
        with open(p, errors="replace") as f:
            for line in f:
                try:
                    t = json.loads(line)
                except ValueError:
                    continue
                frags[(t.get("task_id"), t.get("attempt", 0))] = t
    return frags


def merge(project, draft, spool: str, events: list) -> tuple[list, list]:
    temps, kinds, problems = _driver_info(spool)
    noise = tuple(temps | {spool + "/", "/dev/shm/plasma", "/tmp/ray/"})
    events = [e for e in events if not e.path.startswith(noise)]
    for p in dict.fromkeys(problems):
        draft.capture_notes.append(p)
        draft.capture_level = CAPTURE_PARTIAL
    if "hook" in kinds and "raylet" not in kinds:
        draft.capture_notes.append("Ray attached to a cluster it did not start here: tasks on it were not captured "
                                   "(only a local ray.init() is supported yet)")
        draft.capture_level = CAPTURE_PARTIAL
    frags = _fragments(spool)
    # Retries: keep the last successful attempt of a task, else its last attempt.
    best: dict = {}
    for (task, attempt), t in sorted(frags.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
        prev = best.get(task)
        if prev is None or t.get("status") == "ok" or prev.get("status") != "ok":
            best[task] = t
    lost = []
    for p in glob.glob(os.path.join(spool, "tasks", "*.json")):
        try:
            with open(p) as f:
                t = json.load(f)
        except (OSError, ValueError):
            continue
        if t.get("task_id") not in best:
            t.update(status="lost", ended_at=t.get("started_at"), capture_level=CAPTURE_PARTIAL,
                     notes=["the Ray worker died during this task: no record of its I/O"])
            best[t["task_id"]] = t
            lost.append(t)
    if lost:
        draft.capture_notes.append(f"{len(lost)} Ray task(s) lost: their worker died before reporting")
        draft.capture_level = CAPTURE_PARTIAL
    if not best:
        return events, []
    try:
        store = project.store
    except RoarError as e:
        draft.capture_notes.append(f"{len(best)} Ray task(s) not recorded: {e}")
        draft.capture_level = CAPTURE_PARTIAL
        return events, []
    from roar_nb import environment

    env_row = environment.snapshot()
    env_id = env_row[0]
    ignore = project.read_filter()
    sid = draft.session_id or store.active_session().id
    ids = []
    for t in sorted(best.values(), key=lambda t: t.get("started_at") or 0):
        ins = tuple(Edge("in", p, h, s or 0) for p, h, s in t.get("inputs", ()) if not ignore(p))
        outs = tuple(Edge("out", p, h, s or 0, False, None, c) for p, h, s, c in t.get("outputs", ())
                     if not p.startswith(project.roar_dir + "/"))
        status = t.get("status", "lost")
        notes = list(t.get("notes", ()))
        if t.get("exception"):
            notes.append(f"raised {t['exception']}")
        job = Job(
            id=new_id(), session_id=sid, seq=0, kind="ray_task", step=t.get("function") or "?",
            command=f"ray task {t.get('function')} (task {t.get('task_id')}, attempt {t.get('attempt', 0)})",
            cwd=draft.cwd, started_at=t.get("started_at") or draft.started_at,
            ended_at=t.get("ended_at") or t.get("started_at") or draft.started_at,
            exit_code=0 if status == "ok" else None if status == "lost" else 1, status=status,
            backend="preload", capture_level=t.get("capture_level") or CAPTURE_PARTIAL,
            capture_notes=tuple(notes), env_id=env_id, parent_job_id=draft.id, inputs=ins, outputs=outs,
        )
        try:
            ids.append(store.insert_job(job, environment=env_row).id)
        except RoarError as e:
            draft.capture_notes.append(f"Ray task {job.step} not recorded: {e}")
            draft.capture_level = CAPTURE_PARTIAL
    return events, ids
