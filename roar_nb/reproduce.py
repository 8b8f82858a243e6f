"""Reproducing an artifact: plan the minimal sub-DAG, check sources and environment, re-run, verify.

The plan walks producers back from the target to artifacts with no recorded
producer (sources) and orders the jobs by time; re-runs of a step collapse to the
run that produced the version needed, because producers are chosen by the path
and version (hash) each consumer read, never by bytes alone. Files a step
updated in place are moved aside before running (never deleted). Running re-executes each step under tracing (CLI jobs through
`session.run_command`, notebook cells in one fresh kernel per notebook session)
and compares every planned output with the recorded blake3. The verdict is
stored as a reproduction record. No printing here: the front ends render
`Plan` and `Outcome`.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from typing import Callable, Optional

from roar_nb.errors import RoarError, UsageError
from roar_nb.model import Job, factory, new_id, record
from roar_nb.session import GONE, UNKNOWN_VERSION

IDENTICAL, DIFFERS, MISSING, NONDETERMINISTIC = "identical", "differs", "missing", "nondeterministic"
UNKNOWN = "unknown"  # a source status: updated in place from a version roar never recorded


@record
class Source:
    """An artifact the plan needs but no recorded job produced."""

    path: str
    hash: str
    status: str  # "ok" | "elsewhere" | "missing" | "differs" | "unknown" (no hash: see UNKNOWN)
    found_at: Optional[str] = None


@record
class Plan:
    target: str
    target_hashes: list  # blake3 of what was asked for
    steps: list  # Job, in execution order
    sources: list  # Source
    environment: dict  # python, packages, git_commit, git_root, git_branch, git_dirty
    drift: list = factory(list)  # one line per package/python difference
    # What actually runs, in order: [cli job] or [cell jobs] units. A cell unit replays the
    # notebook session's successful cells up to the last one needed (each after its
    # untraced preamble): cells that only import or define things build the kernel state
    # the producing cells rely on.
    replay: list = factory(list)
    # The recorded paths asked for (a path or a job's outputs); empty for a bare hash, which
    # names the bytes wherever they were written.
    target_paths: list = factory(list)

    @property
    def missing_sources(self) -> list:
        # A source whose bytes changed (an edited script) does not block: re-running with
        # it is how a user finds out whether the outputs still match (verdict `differs`).
        # An unknown version blocks as well: the step would update whatever is on disk now.
        return [s for s in self.sources if s.status in ("missing", UNKNOWN)]


@record
class Verdict:
    path: str
    expected: str
    actual: Optional[str]
    verdict: str
    job: str  # original job id
    target: bool = False  # one of the requested targets


@record
class Outcome:
    id: str
    plan: Plan
    verdicts: list
    failed_step: Optional[str] = None  # e.g. "@2 python train.py exited 1"
    directory: Optional[str] = None

    @property
    def ok(self) -> bool:
        targets = [v for v in self.verdicts if v.target]
        return self.failed_step is None and bool(targets) and all(v.verdict == IDENTICAL for v in targets)


# --- planning ---------------------------------------------------------------------

def resolve_target(project, ref: str) -> tuple[list[str], Optional[Job]]:
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

    def latest(cands: list, before: Optional[float]) -> Optional[Job]:
        timely = [j for j in cands if before is None or j.ended_at <= before]
        ok = [j for j in timely if j.status == "ok"]
        return (ok or timely or [None])[-1]

    def producer(path: Optional[str], h: str, before: Optional[float]) -> Optional[Job]:
        # The job that wrote this version at the path it was read from; only when none did,
        # one that wrote the same bytes elsewhere (a copy made outside roar). Producers end
        # before their consumer starts, so byte-identical content never forms a cycle.
        found = latest(at_path.get((path, h), []), before) if path else None
        return found or latest(by_hash.get(h, []), before)

    if target_job is not None:
        seeds = [(e.path, e.hash, None) for e in target_job.outputs if e.hash]
    else:
        path = os.path.abspath(ref)
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
                    edges = store.edges_of_artifact(h)
                    path = edges[-1]["path"] if edges else "?"
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
    src = [s if s is not None else _locate_source(project, h, p)
           for (p, h), s in sources.items() if s is not None or h not in produced]
    env = _environment(project, steps)
    plan = Plan(ref, target_hashes, steps, src, env, _drift(env), _replay_units(store, steps),
                [p for p, _, _ in seeds if p is not None])
    in_place = set(updated_in_place(plan))
    for k, s in enumerate(plan.sources):
        if s.status == "differs" and s.path in in_place:
            # A step updates this file from the recorded version, which is no longer anywhere:
            # running it on today's bytes would only update them further.
            plan.sources[k] = Source(s.path, s.hash, "missing")
    return plan


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

    store = project.store
    candidates = [path] + [e["path"] for e in store.edges_of_artifact(h) if e["path"] != path]
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
        "python": env["python"] if env else None,
        "platform": env["platform"] if env else None,
        "packages": env["packages"] if env else {},
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


# --- running ------------------------------------------------------------------------

@record
class RunOptions:
    directory: Optional[str] = None  # --in DIR: fresh clone + venv there
    timeout: Optional[float] = None  # per step
    check_determinism: bool = False
    progress: Callable[[str], None] = lambda line: None
    tracer: Optional[str] = None


def run(project, plan: Plan, opts: RunOptions) -> Outcome:
    """Re-execute the plan, verify outputs, store the reproduction record."""
    if plan.missing_sources:
        s = plan.missing_sources[0]
        more = f" (and {len(plan.missing_sources) - 1} more)" if len(plan.missing_sources) > 1 else ""
        if s.status == UNKNOWN:
            raise RoarError(f"{s.path} was updated in place from a version roar never recorded{more};"
                            " it cannot be reproduced")
        raise RoarError(f"source artifact {s.path} ({s.hash[:12]}) is missing{more}; restore it to reproduce")
    rid = new_id()
    mapper = _PathMap(None, None)
    extra_env: dict = {}
    if opts.directory:
        mapper, extra_env = _prepare_directory(plan, opts)
    passes = []

    def one_pass() -> tuple[dict, Optional[str], list]:
        passes.append(len(passes) + 1)
        if not opts.directory:  # (a fresh clone holds no outputs to set aside)
            _set_aside(project, plan, os.path.join(project.roar_dir, "reproduce", rid), passes[-1], opts)
            for s in plan.sources:  # a source found elsewhere is put back where the steps expect it
                if s.status == "elsewhere":
                    shutil.copy2(s.found_at, s.path)
        failed, pairs = _execute(project, plan, opts, mapper, extra_env)
        actual = _hash_outputs(plan, mapper)
        return actual, failed, pairs

    actual, failed, pairs = one_pass()
    second = None
    if opts.check_determinism and failed is None:
        opts.progress("second run (--check-determinism)")
        second, failed, more = one_pass()
        pairs += more
    verdicts = []
    targets = set(plan.target_hashes)
    # A file several planned steps write (updated in place) is checked once, as the last
    # of them left it: the earlier versions are gone by the end of the run, as is a file a
    # later step read and deleted (an intermediate it consumed).
    last_writer = {e.path: j.id for j in plan.steps for e in j.outputs if e.hash}
    consumed = {}  # path -> index of the last planned step that read it and left it gone
    for k, j in enumerate(plan.steps):
        consumed.update((e.path, k) for e in j.inputs if e.note and GONE in e.note)
    for k, j in enumerate(plan.steps):
        for e in j.outputs:
            if not e.hash or last_writer[e.path] != j.id or consumed.get(e.path, -1) > k:
                continue
            got = actual.get(e.path)
            if got is None:
                v = MISSING
            elif second is not None and second.get(e.path) != got:
                v = NONDETERMINISTIC
            else:
                v = IDENTICAL if got == e.hash else DIFFERS
            wanted = e.hash in targets and (not plan.target_paths or e.path in plan.target_paths)
            verdicts.append(Verdict(mapper.to_new(e.path), e.hash, got, v, j.id, wanted))
    outcome = Outcome(rid, plan, verdicts, failed, opts.directory)
    project.store.insert_reproduction(
        {"id": rid, "target": plan.target, "target_hashes": plan.target_hashes,
         "mode": "in-dir" if opts.directory else "in-place", "directory": opts.directory,
         "ok": outcome.ok, "plan": [j.id for j in plan.steps],
         "verdicts": [v.__dict__ for v in verdicts] + ([{"failed_step": failed}] if failed else [])},
        pairs or [(j.id, None) for j in plan.steps],
    )
    return outcome


def _set_aside(project, plan: Plan, base: str, n: int, opts: RunOptions) -> None:
    """Put files the plan updates in place back to where the plan starts them (pass `n`).

    A file whose first version a planned step writes is moved into `base`/run<n>/: the
    bytes on disk are the end of the chain and would make a step that creates a database
    fail, or a log get appended twice. A file whose first version is a source present
    now is kept, and copied into `base`/start/ so that a second pass starts from it too.
    Moved or copied, never deleted.
    """
    present = {s.path for s in plan.sources if s.status == "ok"}
    for p in updated_in_place(plan):
        rel = os.path.relpath(p, "/")
        start = os.path.join(base, "start", rel)
        if p in present and n == 1:
            os.makedirs(os.path.dirname(start), exist_ok=True)
            shutil.copy2(p, start)
            continue
        if os.path.lexists(p):
            dest = os.path.join(base, f"run{n}", rel)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            shutil.move(p, dest)  # a rename when on one file system
            opts.progress(f"moved {p} aside to {dest} (updated in place: the plan rebuilds it)")
        if p in present:
            shutil.copy2(start, p)


class _PathMap:
    """Maps recorded paths under the original git root to the fresh clone (identity in place)."""

    def __init__(self, old_root: Optional[str], new_root: Optional[str]):
        self.old, self.new = old_root, new_root

    def to_new(self, path: str) -> str:
        if not self.old:
            return path
        if path == self.old or path.startswith(self.old.rstrip("/") + "/"):
            return self.new + path[len(self.old):]
        return path


def _hash_outputs(plan: Plan, mapper: _PathMap) -> dict:
    from roar_nb.hashing import hash_paths

    paths = {e.path: mapper.to_new(e.path) for j in plan.steps for e in j.outputs if e.hash}
    hashed = hash_paths(list(paths.values()), progress_after=-1)
    return {old: hashed[new].hash for old, new in paths.items() if hashed[new].hash}


def _execute(project, plan: Plan, opts: RunOptions, mapper: _PathMap, extra_env: dict) -> tuple:
    """Run every step in order. Returns (failure description or None, [(original id, new id)])."""
    from roar_nb.session import run_command

    store = project.store
    session = store.new_session("cli", name=f"reproduce {plan.target}")
    pairs = []
    for group in plan.replay:
        job = group[0]
        if job.kind == "cell":
            opts.progress(f"cells {', '.join(j.ref for j in group)} in a fresh kernel")
            failed = _run_cells(group, mapper, extra_env, opts)
            pairs += [(j.id, None) for j in group]
            if failed:
                return failed, pairs
        else:
            opts.progress(f"{job.ref} {job.command}")
            cwd = mapper.to_new(job.cwd)
            if not os.path.isdir(cwd):
                return f"{job.ref}: working directory {cwd} does not exist", pairs
            argv = list(job.argv)
            if extra_env.get("VIRTUAL_ENV") and argv and os.path.basename(argv[0]).startswith("python"):
                # The recorded interpreter belongs to the original environment: use the fresh venv's.
                argv[0] = os.path.join(extra_env["VIRTUAL_ENV"], "bin", "python")
            argv = [mapper.to_new(a) if os.path.isabs(a) else a for a in argv]
            res = run_command(project, argv, kind=job.kind, session=session,
                              tracer=opts.tracer, step=job.step, cwd=cwd, timeout=opts.timeout,
                              extra_env=extra_env)
            pairs.append((job.id, res.job.id if res.job else None))
            if res.returncode != 0:
                why = res.error or f"exited {res.returncode}"
                return f"{job.ref} {job.command}: {why}", pairs
    return None, pairs


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


def _run_cells(cells: list[Job], mapper: _PathMap, extra_env: dict, opts: RunOptions) -> Optional[str]:
    """Execute recorded cell sources, in order, in one fresh kernel traced by roar."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cwd = mapper.to_new(cells[0].cwd)
    nb = nbformat.v4.new_notebook()
    owner = ["setup"]  # notebook cell index -> what the user should be told failed
    nb.cells.append(nbformat.v4.new_code_cell("%load_ext roar\n%roar on"))
    for j in cells:
        if j.preamble:  # untraced when recorded: replayed untraced, so it makes no job
            nb.cells.extend(nbformat.v4.new_code_cell(src) for src in ("%roar off", j.preamble, "%roar on"))
            owner += [f"the untraced cells before {j.ref}"] * 3
        nb.cells.append(nbformat.v4.new_code_cell(j.source or ""))
        owner.append(f"{j.ref} (cell)")
    kernel = _kernel_name()
    env = dict(os.environ)
    env.update(extra_env)
    client = NotebookClient(nb, kernel_name=kernel, timeout=opts.timeout or 600,
                            resources={"metadata": {"path": cwd}}, allow_errors=False)
    old = {k: os.environ.get(k) for k in extra_env}
    os.environ.update(extra_env)  # the kernel inherits our environment (PATH of a --in venv)
    try:
        client.execute(cwd=cwd)
    except CellExecutionError as e:
        idx = next((k for k, c in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                             for o in c.get("outputs", []))), None)
        who = owner[idx] if idx is not None else "a cell"
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "error"
        return f"{who} raised: {first}"
    except TimeoutError:
        return f"cells {cells[0].ref}..{cells[-1].ref} timed out after {opts.timeout} s"
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return None


def _kernel_name() -> str:
    """The roar kernel (native capture) when installed, else the default python3 kernel."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        names = KernelSpecManager().find_kernel_specs()
    except Exception:
        return "python3"
    return "roar" if "roar" in names else "python3"


def _prepare_directory(plan: Plan, opts: RunOptions) -> tuple[_PathMap, dict]:
    """--in DIR: clone the recorded repository at its commit, copy sources, build a venv."""
    env = plan.environment
    root, commit = env.get("git_root"), env.get("git_commit")
    if not root or not commit:
        raise RoarError("--in needs the steps to have been recorded inside a git repository with a commit")
    if len(env.get("git_commits", [])) > 1:
        opts.progress(f"note: steps span {len(env['git_commits'])} commits; using the last, {commit[:12]}")
    target = os.path.abspath(opts.directory)
    if os.path.exists(target) and os.listdir(target):
        raise UsageError(f"{target} exists and is not empty")
    opts.progress(f"cloning {root} at {commit[:12]} into {target}")
    _git(["clone", "--quiet", "--no-checkout", root, target])
    _git(["-C", target, "checkout", "--quiet", commit])
    mapper = _PathMap(root, target)
    for s in plan.sources:  # data that is not in git comes from where it was found
        dst = mapper.to_new(s.path)
        if os.path.isfile(dst):
            from roar_nb.hashing import hash_file

            if hash_file(dst) == s.hash:
                continue
        src = s.found_at or s.path
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        shutil.copy2(src, dst)
    venv = os.path.join(target, ".venv")
    _build_venv(venv, env.get("packages", {}), opts)
    bin_dir = os.path.join(venv, "bin")
    extra = {"PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "VIRTUAL_ENV": venv}
    # The clone gets its own .roar/ excluded from git by its .gitignore; jobs are recorded in
    # the original project, which is where the reproduction record belongs.
    return mapper, extra


def _git(args: list[str]) -> None:
    p = subprocess.run(["git", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise RoarError(f"git {' '.join(args[:2])} failed: {p.stderr.strip().splitlines()[-1] if p.stderr.strip() else p.returncode}")


def _build_venv(venv: str, packages: dict, opts: RunOptions) -> None:
    """A fresh venv with the recorded package versions.

    Distributions whose recorded version is exactly the one installed here are
    reused through a .pth file instead of being downloaded and built again;
    everything else is installed with pip at the recorded version.
    """
    from roar_nb import environment

    opts.progress(f"creating venv {venv}")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True)
    _, _, _, here = environment.snapshot()
    to_install = [f"{n}=={v}" for n, v in sorted(packages.items()) if here.get(n) != v]
    import sysconfig

    purelib = sysconfig.get_paths(vars={"base": venv, "platbase": venv})["purelib"]
    os.makedirs(purelib, exist_ok=True)
    site_dirs = [p for p in sys.path if p.endswith("site-packages") and os.path.isdir(p)]
    with open(os.path.join(purelib, "_roar_reuse.pth"), "w") as f:
        f.write("\n".join(site_dirs) + "\n")
    if to_install:
        opts.progress(f"installing {len(to_install)} package(s) at recorded versions")
        p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", purelib,
                            "--no-deps", *to_install], capture_output=True, text=True)
        if p.returncode != 0:
            raise RoarError("pip could not install the recorded packages: "
                            + (p.stderr.strip().splitlines() or ["?"])[-1])


# --- script -------------------------------------------------------------------------------

def script(plan: Plan) -> str:
    """A bash script that replays the plan and checks the targets' blake3.

    Nothing recorded can break out of where it is put: every word is quoted
    (`sh_quote`), comments go through `present.text` (no newline can end them), and
    each heredoc's delimiter is chosen so that no line of its body equals it.
    """
    from roar_nb.present import text

    env = plan.environment
    lines = ["#!/usr/bin/env bash", f"# Reproduces {text(plan.target)} (recorded by roar-nb).",
             f"# git commit: {text(env.get('git_commit') or '-')}; python {text(env.get('python') or '?')}",
             "set -euo pipefail", ""]
    for group in plan.replay:
        j = group[0]
        if j.kind == "cell":
            lines.append(f"# notebook cells {', '.join(g.ref for g in group)} (one Python process shares their state)")
            lines.append(f"cd {sh_quote(j.cwd)}")
            body = []
            for g in group:
                if g.preamble:
                    body.append(f"# --- untraced cells before {g.ref} ---")
                    body.extend(_strip_magics(g.preamble))
                body.append(f"# --- {g.ref} ---")
                body.extend(_strip_magics(g.source or ""))
            lines.extend(_heredoc("python -", "ROAR_CELLS", body))
        else:
            lines.append(f"# {j.ref}")
            command = " ".join(sh_quote(a) for a in j.argv) if j.argv else j.command
            lines.append(f"cd {sh_quote(j.cwd)} && {command}")
    lines.append("")
    lines.extend(_heredoc("python -", "ROAR_CHECK", [
        "import blake3, os, sys",
        # ascii(): surrogate-escaped (non-UTF-8) path bytes become \udcNN escapes, which
        # open() turns back into the same bytes.
        f"expected = {ascii(_target_paths(plan))}",
        "bad = [p for p, h in expected.items() if blake3.blake3(open(p, 'rb').read()).hexdigest() != h]",
        "print('identical' if not bad else 'differs: ' + ', '.join(map(ascii, bad))); sys.exit(1 if bad else 0)",
    ]))
    return "\n".join(lines) + "\n"


def sh_quote(word: str) -> str:
    """One shell word that bash reads back as exactly `word` (its bytes, if not UTF-8).

    Plain text gets shlex's single quotes; a word with control characters or
    undecodable bytes gets bash's $'...' with those bytes as \\xNN, so the script
    stays printable text and a newline cannot start a line of its own.
    """
    from roar_nb.present import text

    if text(word) == word:  # printable (UTF-8) text
        return shlex.quote(word)
    return "$'" + "".join(chr(b) if 0x20 <= b < 0x7f and b not in (0x27, 0x5c) else f"\\x{b:02x}"
                          for b in os.fsencode(word)) + "'"


def _heredoc(command: str, stem: str, body: list[str]) -> list[str]:
    """`command <<'DELIM'` + body + DELIM, with a DELIM no body line equals (quoted: no expansion)."""
    taken = set(body)
    delim, n = stem, 0
    while delim in taken:
        n += 1
        delim = f"{stem}_{n}"
    return [f"{command} <<'{delim}'", *body, delim]


def _target_paths(plan: Plan) -> dict:
    wanted = set(plan.target_hashes)
    return {e.path: e.hash for j in plan.steps for e in j.outputs if e.hash in wanted}


def _strip_magics(source: str) -> list[str]:
    """Cell source as plain Python: `%%roar` lines dropped, `!cmd` turned into subprocess calls."""
    out = []
    for ln in source.split("\n"):  # "\n" only: splitlines() would also split at \x0b, \x1c, \u2028...
        ln = ln.rstrip("\r")
        s = ln.strip()
        if s.startswith("%%") or s.startswith("%"):
            out.append("# " + ln)
        elif s.startswith("!"):
            indent = ln[: len(ln) - len(ln.lstrip())]
            out.append(f"{indent}__import__('subprocess').run({s[1:]!r}, shell=True, check=True)")
        else:
            out.append(ln)
    return out

