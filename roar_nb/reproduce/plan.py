"""Planning a reproduction: the minimal sub-DAG that produced an artifact, its sources and environment.

The plan walks producers back from the target to artifacts with no recorded
producer (sources) and orders the jobs by time; re-runs of a step collapse to the
run that produced the version needed, because producers are chosen by the path
and version (hash) each consumer read, never by bytes alone. `make_plan` reads
only the store; `check` then looks for each source on disk (its hash) and compares
the recorded packages with this interpreter's (drift). Neither runs, moves or
writes anything: executing is `execute`, building a clone and venv is `provision`,
rendering as a script or notebook is `roar_nb.export`.
"""

from __future__ import annotations

import os

from roar_nb.errors import UsageError
from roar_nb.model import Job, factory, record
from roar_nb.session import UNKNOWN_VERSION

UNKNOWN = "unknown"  # a source status: updated in place from a version roar never recorded
UNCHECKED = "unchecked"  # a source status until `check` has looked for it on disk


@record
class Source:
    """An artifact the plan needs but no recorded job produced."""

    path: str
    hash: str
    status: str  # "ok" | "elsewhere" | "missing" | "differs" | "unknown" (no hash: see UNKNOWN) | "unchecked"
    found_at: str | None = None


@record
class Plan:
    target: str
    target_hashes: list  # blake3 of what was asked for
    steps: list  # Job, in execution order
    sources: list  # Source
    environment: dict  # python, packages, git_commit, git_root, git_branch, git_dirty
    drift: list = factory(list)  # one line per package/python difference (filled by `check`)
    # What actually runs, in order: [cli job] or [cell jobs] units. A cell unit replays the
    # notebook session's successful cells up to the last one needed (each after its
    # untraced preamble): cells that only import or define things build the kernel state
    # the producing cells rely on.
    replay: list = factory(list)
    # The recorded paths asked for (a path or a job's outputs); empty for a bare hash, which
    # names the bytes wherever they were written.
    target_paths: list = factory(list)
    checked: bool = False  # sources located and drift computed (`check`)

    @property
    def missing_sources(self) -> list:
        # A source whose bytes changed (an edited script) does not block: re-running with
        # it is how a user finds out whether the outputs still match (verdict `differs`).
        # An unknown version blocks as well: the step would update whatever is on disk now.
        return [s for s in self.sources if s.status in ("missing", UNKNOWN)]


# --- planning ---------------------------------------------------------------------

def resolve_target(project, ref: str) -> tuple[list[str], Job | None]:
    """Hashes named by `ref`: an artifact (path, prefix) or all outputs of a job (@N, id)."""
    from roar_nb.resolve import resolve_any

    what, obj = resolve_any(project, ref)
    if what == "job":
        hashes = [e.hash for e in obj.outputs if e.hash]
        if not hashes:
            raise UsageError(f"{obj.ref} has no recorded outputs to reproduce")
        return hashes, obj
    return [obj], None


def make_plan(project, ref: str) -> Plan:
    """The plan for `ref`, from the store alone: steps, replay units, sources (status
    `unchecked`) and the recorded environment. `check` adds what needs the disk."""
    store = project.store
    target_hashes, target_job = resolve_target(project, ref)
    all_jobs = store.jobs()  # oldest first
    at_path: dict[tuple, list[Job]] = {}  # (path, hash) -> jobs that wrote that version there
    by_hash: dict[str, list[Job]] = {}
    for j in all_jobs:
        for e in j.outputs:
            if e.hash:
                at_path.setdefault((e.path, e.hash), []).append(j)
                by_hash.setdefault(e.hash, []).append(j)

    def latest(cands: list, before: float | None) -> Job | None:
        timely = [j for j in cands if before is None or j.ended_at <= before]
        ok = [j for j in timely if j.status == "ok"]
        return (ok or timely or [None])[-1]

    def producer(path: str | None, h: str, before: float | None) -> Job | None:
        # The job that wrote this version at the path it was read from; only when none did,
        # one that wrote the same bytes elsewhere (a copy made outside roar). Producers end
        # before their consumer starts, so byte-identical content never forms a cycle.
        found = latest(at_path.get((path, h), []), before) if path else None
        return found or latest(by_hash.get(h, []), before)

    if target_job is not None:
        seeds = [(e.path, e.hash, None) for e in target_job.outputs if e.hash]
    else:
        path = ref if ref.startswith("s3://") else os.path.abspath(ref)
        seeds = [(path if (path, h) in at_path else None, h, None) for h in target_hashes]
    chosen: dict[str, Job] = {}
    sources: dict[tuple, Source] = {}  # (path, hash) -> an input nobody recorded writing
    stack = list(seeds)
    while stack:
        path, h, before = stack.pop()
        job = producer(path, h, before)
        if job is None:
            if (path, h) not in sources:
                if path is None:
                    uses = store.uses_of_artifact(h)
                    path = uses[-1].path if uses else "?"
                sources[(path, h)] = None
            continue
        if job.id in chosen:
            continue
        if job.kind == "ray_task":  # its command is a description, not something to run
            raise UsageError(f"{ref}: produced by the Ray task {job.ref} ({job.step}); reproducing Ray tasks is "
                             "not supported yet: re-run the command that started Ray")
        chosen[job.id] = job
        for e in job.inputs:
            if e.hash:
                stack.append((e.path, e.hash, job.started_at))
            elif _unknown_version(e):
                sources[(e.path, None)] = Source(e.path, "", UNKNOWN)
    steps = sorted(chosen.values(), key=lambda j: (j.started_at, j.seq))
    if not steps:
        raise UsageError(f"{ref}: no recorded job produced it (it is a source artifact)")
    produced = {e.hash for j in steps for e in j.outputs if e.hash}
    src = [s if s is not None else Source(p, h, UNCHECKED)
           for (p, h), s in sources.items() if s is not None or h not in produced]
    return Plan(ref, target_hashes, steps, src, _environment(project, steps), [], _replay_units(store, steps),
                [p for p, _, _ in seeds if p is not None])


def check(project, plan: Plan) -> Plan:
    """The plan with what make_plan leaves out: each source looked up on disk (by hash, at
    its path or another recorded one) and drift against this interpreter's packages.
    Reads files and sys.path, writes nothing; a plan already checked is returned as is."""
    if plan.checked:
        return plan
    in_place = set(updated_in_place(plan))
    sources = []
    for s in plan.sources:
        if s.status == UNCHECKED:
            s = _locate_source(project, s.hash, s.path)
        if s.status == "differs" and s.path in in_place:
            # A step updates this file from the recorded version, which is no longer anywhere:
            # running it on today's bytes would only update them further.
            s = Source(s.path, s.hash, "missing")
        sources.append(s)
    return Plan(plan.target, plan.target_hashes, plan.steps, sources, plan.environment,
                _drift(plan.environment), plan.replay, plan.target_paths, checked=True)


def _unknown_version(e) -> bool:
    """An input edge recorded without a hash because the job changed the file in place and
    roar had never seen the bytes it started from (see session._version_edge)."""
    return e.hash is None and bool(e.note) and UNKNOWN_VERSION in e.note


def updated_in_place(plan: Plan) -> list[str]:
    """Paths a planned step changed in place (it read the version at open and wrote the next).

    Re-running in place must start them from the version the plan's first step expects,
    not from the final one now on disk (a step that creates a database would find it)."""
    paths = []
    for j in plan.steps:
        outs = {e.path for e in j.outputs}
        paths += [e.path for e in j.inputs if e.path in outs and (e.hash or _unknown_version(e))]
    return list(dict.fromkeys(paths))


def _replay_units(store, steps: list[Job]) -> list[list[Job]]:
    units, history = [], {}
    for group in _step_groups(steps):
        if group[0].kind != "cell":
            units.append(group)
            continue
        sid, last = group[0].session_id, group[-1]
        if sid not in history:
            history[sid] = [j for j in store.jobs(sid) if j.kind == "cell" and j.status == "ok"]
        units.append([j for j in history[sid] if j.started_at <= last.started_at] or group)
    return units


def _locate_source(project, h: str, path: str) -> Source:
    from roar_nb.hashing import hash_paths

    if path.startswith("s3://"):  # present when the object upstream has the recorded bytes
        from roar_nb.proxy import object_hashes

        got = object_hashes(project, [path])[path]
        return Source(path, h, "missing" if got is None else "ok" if got == h else "differs")
    store = project.store
    candidates = [path] + [u.path for u in store.uses_of_artifact(h) if u.path != path]
    existing = [p for p in dict.fromkeys(candidates) if os.path.isfile(p)]
    hashed = hash_paths(existing, store=store, progress_after=-1) if existing else {}
    if path in hashed and hashed[path].hash == h:
        return Source(path, h, "ok")
    for p in existing:
        if hashed[p].hash == h:
            return Source(path, h, "elsewhere", p)
    return Source(path, h, "differs" if path in hashed else "missing")


def _environment(project, steps: list[Job]) -> dict:
    store = project.store
    env_ids = [j.env_id for j in steps if j.env_id]
    env = store.environment(env_ids[-1]) if env_ids else None
    last = steps[-1]
    commits = {j.git_commit for j in steps if j.git_commit}
    return {
        "python": env.python if env else None,
        "platform": env.platform if env else None,
        "packages": env.packages if env else {},
        "git_commit": last.git_commit, "git_branch": last.git_branch, "git_root": last.git_root,
        "git_dirty": any(j.git_dirty for j in steps),
        "git_commits": sorted(commits),
    }


def requirements(plan: Plan) -> list[str]:
    """The plan's recorded environment as a pip requirements file: a comment naming the
    Python version, then one `name==version` line per package (all of them, sorted)."""
    env = plan.environment
    lines = [f"# python {env.get('python') or 'unknown'}"]
    if not env.get("packages"):
        lines.append("# no packages were recorded for these steps")
    lines += [f"{n}=={v}" for n, v in sorted(env.get("packages", {}).items(), key=lambda kv: kv[0].lower())]
    return lines


def _drift(env: dict) -> list[str]:
    from roar_nb import environment

    _, py, _, pkgs = environment.snapshot()
    out = []
    if env.get("python") and env["python"] != py:
        out.append(f"python {env['python']} recorded, {py} running")
    for name, version in sorted(env.get("packages", {}).items()):
        now = pkgs.get(name)
        if now is None:
            out.append(f"{name} {version} recorded, not installed")
        elif now != version:
            out.append(f"{name} {version} recorded, {now} installed")
    return out


def _step_groups(steps: list[Job]) -> list[list[Job]]:
    """Steps in order, consecutive cells of one notebook session grouped: they share one
    kernel (or one Python process in a script), as they shared one when recorded."""
    groups: list[list[Job]] = []
    for j in steps:
        prev = groups[-1][-1] if groups else None
        if prev is not None and j.kind == "cell" and prev.kind == "cell" and prev.session_id == j.session_id:
            groups[-1].append(j)
        else:
            groups.append([j])
    return groups
