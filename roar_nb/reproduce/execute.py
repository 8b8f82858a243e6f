"""Executing a reproduction plan: re-run each step under tracing, hash the outputs, give verdicts.

CLI jobs run through `session.run_command`, notebook cells in one fresh kernel per
notebook session (started through jupyter_client with its own environment), and
every planned output is compared with its recorded blake3; the verdicts are stored
as a reproduction record. Files a step updated in place are moved aside before
running (never deleted). This module must not change the calling process: the
environment a step or kernel gets is handed to it explicitly, never written into
`os.environ` (the caller may be the user's own kernel, `%roar reproduce --run`).
No printing here: the front ends render `Outcome`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from roar_nb.errors import RoarError
from roar_nb.model import Job, factory, new_id, record
from roar_nb.reproduce.plan import UNKNOWN, Plan, check, updated_in_place
from roar_nb.reproduce.provision import PathMap, Workspace
from roar_nb.session import GONE

IDENTICAL, DIFFERS, MISSING, NONDETERMINISTIC = "identical", "differs", "missing", "nondeterministic"


@record
class Verdict:
    path: str
    expected: str
    actual: str | None
    verdict: str
    job: str  # original job id
    target: bool = False  # one of the requested targets


@record
class Outcome:
    id: str
    plan: Plan
    verdicts: list
    failed_step: str | None = None  # e.g. "@2 python train.py exited 1"
    directory: str | None = None
    # --in DIR: recorded packages the fresh venv could not get ("name==version: why").
    not_installed: list = factory(list)

    @property
    def ok(self) -> bool:
        targets = [v for v in self.verdicts if v.target]
        return self.failed_step is None and bool(targets) and all(v.verdict == IDENTICAL for v in targets)


# --- running ------------------------------------------------------------------------

@record
class RunOptions:
    directory: str | None = None  # --in DIR: fresh clone + venv there (provision)
    timeout: float | None = None  # per step
    check_determinism: bool = False
    progress: Callable[[str], None] = lambda line: None
    tracer: str | None = None


def run(project, plan: Plan, opts: RunOptions) -> Outcome:
    """Re-execute the plan, verify outputs, store the reproduction record."""
    plan = check(project, plan)  # sources must be found (or refused) before anything runs
    if plan.missing_sources:
        s = plan.missing_sources[0]
        more = f" (and {len(plan.missing_sources) - 1} more)" if len(plan.missing_sources) > 1 else ""
        if s.status == UNKNOWN:
            raise RoarError(f"{s.path} was updated in place from a version roar never recorded{more};"
                            " it cannot be reproduced")
        raise RoarError(f"source artifact {s.path} ({s.hash[:12]}) is missing{more}; restore it to reproduce")
    rid = new_id()
    ws = Workspace(PathMap(None, None), {}, None, [])
    if opts.directory:
        from roar_nb.reproduce.provision import prepare_directory

        ws = prepare_directory(plan, opts.directory, opts.progress)
    mapper = ws.mapper
    passes = []

    def one_pass() -> tuple[dict, str | None, list]:
        passes.append(len(passes) + 1)
        if not opts.directory:  # (a fresh clone holds no outputs to set aside)
            _set_aside(project, plan, os.path.join(project.roar_dir, "reproduce", rid), passes[-1], opts)
            for s in plan.sources:  # a source found elsewhere is put back where the steps expect it
                if s.status == "elsewhere":
                    shutil.copy2(s.found_at, s.path)
        failed, pairs = _execute(project, plan, opts, ws)
        actual = _hash_outputs(project, plan, mapper)
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
    outcome = Outcome(rid, plan, verdicts, failed, opts.directory, ws.not_installed)
    project.store.insert_reproduction(
        {"id": rid, "target": plan.target, "target_hashes": plan.target_hashes,
         "mode": "in-dir" if opts.directory else "in-place", "directory": opts.directory,
         "ok": outcome.ok, "plan": [j.id for j in plan.steps],
         "verdicts": [v.__dict__ for v in verdicts] + ([{"failed_step": failed}] if failed else [])
                      + [{"not_installed": p} for p in ws.not_installed]},
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


def _hash_outputs(project, plan: Plan, mapper: PathMap) -> dict:
    from roar_nb.hashing import hash_paths

    paths = {e.path: mapper.to_new(e.path) for j in plan.steps for e in j.outputs if e.hash}
    s3 = [p for p in paths if p.startswith("s3://")]
    got = {}
    if s3:  # S3 outputs: verified by the bytes now upstream
        from roar_nb.proxy import object_hashes

        got = {p: h for p, h in object_hashes(project, s3).items() if h}
        paths = {old: new for old, new in paths.items() if old not in s3}
    hashed = hash_paths(list(paths.values()), progress_after=-1)
    return {**got, **{old: hashed[new].hash for old, new in paths.items() if hashed[new].hash}}


def _execute(project, plan: Plan, opts: RunOptions, ws: Workspace) -> tuple:
    """Run every step in order. Returns (failure description or None, [(original id, new id)])."""
    from roar_nb.session import run_command

    store = project.store
    mapper, extra_env = ws.mapper, ws.env
    session = store.new_session("cli", name=f"reproduce {plan.target}")
    pairs = []
    for group in plan.replay:
        job = group[0]
        if job.kind == "cell":
            opts.progress(f"cells {', '.join(j.ref for j in group)} in a fresh kernel")
            failed = _run_cells(group, ws, opts)
            pairs += [(j.id, None) for j in group]
            if failed:
                return failed, pairs
        else:
            opts.progress(f"{job.ref} {job.command}")
            cwd = mapper.to_new(job.cwd)
            if not os.path.isdir(cwd):
                return f"{job.ref}: working directory {cwd} does not exist", pairs
            argv = [mapper.to_new(a) if os.path.isabs(a) else a for a in job.argv]
            if ws.python and argv and os.path.basename(argv[0]).startswith("python"):
                # The recorded interpreter belongs to the original environment: use the fresh venv's
                # (after mapping: the venv may itself lie under the recorded root, DIR inside the repo).
                argv[0] = ws.python
            res = run_command(project, argv, kind=job.kind, session=session,
                              tracer=opts.tracer, step=job.step, cwd=cwd, timeout=opts.timeout,
                              extra_env=extra_env)
            pairs.append((job.id, res.job.id if res.job else None))
            if res.returncode != 0:
                why = res.error or f"exited {res.returncode}"
                return f"{job.ref} {job.command}: {why}", pairs
    return None, pairs



def _run_cells(cells: list[Job], ws: Workspace, opts: RunOptions) -> str | None:
    """Execute recorded cell sources, in order, in one fresh kernel traced by roar.

    The kernel gets its environment (and, with --in, the fresh venv's interpreter)
    through jupyter_client's KernelManager: nothing here writes `os.environ`, which
    is the user's own when this runs inside their kernel (`%roar reproduce --run`)."""
    import nbformat
    from jupyter_client.manager import KernelManager
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    cwd = ws.mapper.to_new(cells[0].cwd)
    nb = nbformat.v4.new_notebook()
    owner = ["setup"]  # notebook cell index -> what the user should be told failed
    nb.cells.append(nbformat.v4.new_code_cell("%load_ext roar\n%roar on"))
    for j in cells:
        if j.preamble:  # untraced when recorded: replayed untraced, so it makes no job
            nb.cells.extend(nbformat.v4.new_code_cell(src) for src in ("%roar off", j.preamble, "%roar on"))
            owner += [f"the untraced cells before {j.ref}"] * 3
        nb.cells.append(nbformat.v4.new_code_cell(j.source or ""))
        owner.append(f"{j.ref} (cell)")
    km = KernelManager(kernel_name=_kernel_name())
    if ws.python:
        # The kernel spec names the original environment's interpreter: use the fresh venv's.
        argv = list(km.kernel_spec.argv)
        if argv and os.path.basename(argv[0]).startswith("python"):
            km.kernel_spec.argv = [ws.python, *argv[1:]]
    client = NotebookClient(nb, km=km, timeout=opts.timeout or 600,
                            resources={"metadata": {"path": cwd}}, allow_errors=False)
    try:
        client.execute(cwd=cwd, env={**os.environ, **ws.env})  # a copy: the kernel's own
    except CellExecutionError as e:
        idx = next((k for k, c in enumerate(nb.cells) if any(o.get("output_type") == "error"
                                                             for o in c.get("outputs", []))), None)
        who = owner[idx] if idx is not None else "a cell"
        first = str(e).strip().splitlines()[-1] if str(e).strip() else "error"
        return f"{who} raised: {first}"
    except TimeoutError:
        return f"cells {cells[0].ref}..{cells[-1].ref} timed out after {opts.timeout} s"
    return None


def _kernel_name() -> str:
    """The roar kernel (native capture) when installed, else the default python3 kernel."""
    try:
        from jupyter_client.kernelspec import KernelSpecManager

        names = KernelSpecManager().find_kernel_specs()
    except Exception:  # noqa: BLE001 - any failure to list specs means: use the default kernel
        return "python3"
    return "roar" if "roar" in names else "python3"

