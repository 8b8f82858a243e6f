"""The `roar` command line: argument parsing and printing, nothing else.

Every command calls the use-case layer (session, dag, resolve, report) and turns
RoarError into one line on stderr with a non-zero exit. argparse (stdlib) keeps
start-up cheap: `roar run true` must add only tens of milliseconds.
"""

from __future__ import annotations

import os
import sys
from types import SimpleNamespace

from roar_nb import __version__, present
from roar_nb.errors import RoarError, UsageError

TRACERS = ("auto", "preload", "ptrace", "none")
EPILOG = "References: @N (step N of the session), @BN (build step), a job id prefix, a path, a blake3 prefix."


def _style(stream=sys.stdout):
    from roar_nb.report import Style

    return Style(color=stream.isatty() and not os.environ.get("NO_COLOR"))


def _project():
    from roar_nb.session import Project

    return Project.find()


def _confirm(question: str, yes: bool) -> bool:
    if yes:
        return True
    if not sys.stdin.isatty():
        raise UsageError(f"{question} needs confirmation; pass -y to proceed non-interactively")
    answer = input(f"{question} [y/N] ").strip().lower()
    return answer in ("y", "yes")


# --- commands -----------------------------------------------------------------------

def cmd_init(a) -> int:
    from roar_nb import gitignore
    from roar_nb.session import Project

    project, created = Project.init(a.dir)
    print(f"{'Initialized' if created else 'Already initialized:'} {project.roar_dir}")
    if not a.no_gitignore and gitignore.wanted(str(project.root)):
        add = a.yes
        if not add and sys.stdin.isatty():
            add = input("Add .roar/ to .gitignore? [Y/n] ").strip().lower() in ("", "y", "yes")
        if add:
            gitignore.add(str(project.root))
            print("Added .roar/ to .gitignore")
    return 0


def _run(a, kind: str) -> int:
    from roar_nb.session import run_command

    argv = list(a.command)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        raise UsageError(f"usage: roar {kind} COMMAND [ARGS...]  (nothing to run)")
    project = _project()
    step = cwd = None
    if argv[0].startswith("@"):
        from roar_nb import rerun

        again = rerun.plan(project, argv[0], argv[1:])
        argv, kind, step, cwd = again.argv, again.kind, again.step, again.cwd
    res = run_command(project, argv, kind=kind, tracer=a.tracer, step=step, cwd=cwd)
    return _finish_cli_run(project, res, a.quiet)


def _finish_cli_run(project, res, quiet: bool) -> int:
    """After the command ran: print its problems and summary, then return (or die by) its
    exit status. Nothing here may change the status the command gets."""
    try:
        _report_run(project, res, quiet)
    except Exception as e:  # noqa: BLE001 - a reporting bug must not replace the command's status
        _err(f"roar: internal error after the command ran: {type(e).__name__}: {e}")
    if res.returncode < 0:  # killed by a signal: die the same way
        import signal

        _flush_quietly()
        sig = -res.returncode
        if sig not in (signal.SIGKILL, signal.SIGSTOP):  # those two cannot be (re)set
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
        return 128 + sig
    return res.returncode


def _report_run(project, res, quiet: bool) -> None:
    from roar_nb.present import text
    from roar_nb.report import summary_line
    from roar_nb.session import PendingNote

    quiet = quiet or os.environ.get("ROAR_QUIET") == "1" or project.config.get("output.quiet")
    if res.error:
        _err(f"roar: {text(res.error)}")
    for w in res.warnings:
        _err(f"roar: {text(w)}" if isinstance(w, PendingNote) else f"roar: warning: {text(w)}")
    job = res.job if res.job is not None and res.job.seq else None  # seq 0: pending, said above
    if job is not None and not quiet:
        _err(summary_line(job))
    elif job is not None and job.capture_level != "complete":
        _err(summary_line(job).split("\n", 1)[-1])


def _err(line: str) -> None:
    """One line on stderr. A closed or full stderr (`2>&-`, `2>/dev/full`) loses the line,
    never the command's exit status: after a failed write, stderr goes to /dev/null."""
    try:
        sys.stderr.write(line + "\n")
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        _silence(sys.stderr)


def _silence(stream) -> None:
    """Replace a standard stream that cannot be written (its unflushed bytes would make
    the interpreter print an error and exit 120 at shutdown) by /dev/null."""
    null = open(os.devnull, "w")
    if stream is sys.stdout:
        sys.stdout = null
    else:
        sys.stderr = null
    try:
        stream.close()  # drops what it could not write; errors at close are ours to ignore
    except (OSError, ValueError, AttributeError):
        pass


def _flush_quietly() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            _silence(stream)


def _fill_closed_stdio() -> list[int]:
    """Put /dev/null on standard descriptors that were closed when roar started (`2>&-`),
    so that roar's own files never land on fd 0-2 and its messages go nowhere, as the
    user asked. They are close-on-exec: the command finds them closed, as it would bare."""
    closed = []
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            closed.append(fd)
    if closed:
        null = os.open(os.devnull, os.O_RDWR)
        for fd in closed:
            if fd != null:
                os.dup2(null, fd, inheritable=False)
        if null not in closed:
            os.close(null)
        else:
            os.set_inheritable(null, False)
        for fd, name in ((1, "stdout"), (2, "stderr")):
            if fd in closed:
                setattr(sys, name, open(os.devnull, "w"))
    return closed


def cmd_run(a) -> int:
    return _run(a, "run")


def cmd_build(a) -> int:
    return _run(a, "build")


def cmd_status(a) -> int:
    from roar_nb.report import status_text

    print(status_text(_project(), _style()))
    return 0


def _session_jobs(project, a):
    """(scope, jobs) that a command shows: --all, --session (id prefix or notebook path),
    else the default session (`views.default_session`, the rule every front end uses)."""
    from roar_nb import views

    wanted = getattr(a, "session", None)
    nb = wanted if wanted and wanted.endswith(".ipynb") else None
    sc = views.scope(project, session=None if nb else wanted, notebook=nb, everything=getattr(a, "all", False),
                     must_exist=True)
    if sc.note:
        from roar_nb.present import text

        print(f"roar: {text(sc.note)}", file=sys.stderr)
    return sc, sc.jobs


def cmd_log(a) -> int:
    import json

    from roar_nb import shapes
    from roar_nb.report import log_text

    project = _project()
    _, jobs = _session_jobs(project, a)
    jobs = jobs[-a.n:] if a.n else jobs
    if a.json:
        print(json.dumps([shapes.job_json(j) for j in jobs], indent=2))
    else:
        print(log_text(jobs, _style()))
    return 0


def cmd_dag(a) -> int:
    import json

    from roar_nb import dag as dag_mod
    from roar_nb.report import dag_text

    project = _project()
    from roar_nb import views

    sc, jobs = _session_jobs(project, a)
    d = dag_mod.build(jobs, expanded=a.expanded, session_id=sc.session.id if sc.session else None,
                      project_jobs=views.project_jobs(project, sc))
    if a.json:
        print(json.dumps(d.to_json(), indent=2))
    else:
        print(dag_text(d, _style(), show_artifacts=a.show_artifacts, tasks=a.tasks))
    return 0


def cmd_show(a) -> int:
    import json

    from roar_nb import report, shapes
    from roar_nb.resolve import resolve_any
    from roar_nb.views import artifact_json

    project = _project()
    if not a.ref:
        print(report.status_text(project, _style()))
        return 0
    what, obj = resolve_any(project, a.ref)
    store = project.store
    if what == "job":
        repro = store.reproductions(job_id=obj.id)
        if a.json:
            print(json.dumps({**shapes.job_json(obj), "reproductions": [shapes.reproduction_json(r) for r in repro]},
                             indent=2))
        else:
            print("\n".join(filter(None, [report.job_text(project, obj, _style()),
                                          report.reproductions_text(repro, _style())])))
    else:
        repro = store.reproductions(hash_=obj)
        if a.json:
            print(json.dumps({**artifact_json(project, obj),
                              "reproductions": [shapes.reproduction_json(r) for r in repro]}, indent=2))
        else:
            print("\n".join(filter(None, [report.artifact_text(project, obj, _style()),
                                          report.reproductions_text(repro, _style())])))
    return 0


def cmd_reproduce(a) -> int:
    from roar_nb import report, reproduce
    from roar_nb.present import text

    project = _project()
    plan = reproduce.make_plan(project, a.target)
    if a.script:
        from roar_nb import export

        sys.stdout.write(export.script(plan))
        return 0
    if a.list_requirements:
        print("\n".join(reproduce.requirements(plan)))
        return 0
    err = _style(sys.stderr)
    plan = reproduce.check(project, plan)
    if not a.run:
        print(report.plan_text(plan, _style()))
        print(f"\nRun it with: roar reproduce {text(a.target)} --run")
        return 0
    print(report.plan_text(plan, err), file=sys.stderr)
    opts = reproduce.RunOptions(directory=a.in_dir, timeout=a.timeout, check_determinism=a.check_determinism,
                                progress=lambda line: print(f"roar: {text(line)}", file=sys.stderr), tracer=a.tracer)
    outcome = reproduce.run(project, plan, opts)
    print(report.outcome_text(outcome, _style()))
    return 0 if outcome.ok else 1


def cmd_export(a) -> int:
    from roar_nb import export, reproduce

    project = _project()
    plan = reproduce.make_plan(project, a.target)
    out = a.output or f"reproduce-{os.path.basename(a.target).replace(os.sep, '_')}.ipynb"
    export.write_notebook(plan, out)
    print(f"wrote {out} ({len(plan.steps)} step(s), verifies {len(plan.target_hashes)} hash(es))")
    return 0


def cmd_pop(a) -> int:
    from roar_nb import pop
    from roar_nb.present import text
    from roar_nb.present import path as display_path

    project = _project()
    plan = pop.plan(project)
    job = plan.job
    for path, why in plan.keep:
        print(f"  keep    {display_path(path)}  ({why})")
    for path in plan.delete:
        print(f"  delete  {display_path(path)}")
    if not _confirm(f"Remove {job.ref} ({text(job.command[:60])}) and delete the {len(plan.delete)} file(s)"
                    f" it created?", a.yes):
        print("aborted")
        return 1
    deleted, kept = pop.apply(project, plan)
    print(f"popped {job.ref}; deleted {len(deleted)} file(s) it created; kept {len(kept)}"
          + (" (listed above: roar deletes only files the job created)" if kept else ""))
    for path, why in kept:
        if (path, why) not in plan.keep:
            print(f"  kept    {display_path(path)}  ({why})")
    return 0


def cmd_reset(a) -> int:
    project = _project()
    if not _confirm("Start a new session? (the old one stays in the database)", a.yes):
        print("aborted")
        return 1
    s = project.store.new_session("cli", make_active=True)
    print(f"new session {present.short_id(s.id)}")
    return 0


def cmd_env(a) -> int:
    store = _project().store
    if a.action == "set":
        if a.value is None:
            raise UsageError("usage: roar env set NAME VALUE")
        store.env_set(a.name, a.value)
    elif a.action == "get":
        value = store.env_vars().get(a.name)
        if value is None:
            raise RoarError(f"{a.name} is not set (see `roar env list`)")
        print(value)
    elif a.action == "unset":
        if not store.env_unset(a.name):
            raise RoarError(f"{a.name} is not set")
    else:
        for k, v in store.env_vars().items():
            print(f"{k}={v}")
    return 0


def cmd_config(a) -> int:
    import json

    from roar_nb import config as cfg_mod

    project = _project()
    c = project.config
    for w in c.warnings if a.action != "set" else ():  # `get`/`list` show the defaults in use
        _err(f"roar: warning: {w}")
    if a.action == "get":
        v = c.get(a.key)
        print(json.dumps(v) if not isinstance(v, str) else v)
    elif a.action == "set":
        if a.value is None:
            raise UsageError("usage: roar config set KEY VALUE")
        v = c.set(a.key, a.value)
        print(f"{a.key} = {json.dumps(v)}")
    else:
        for name, value, is_set in c.items():
            mark = "*" if is_set else " "
            print(f"{mark} {name:<32} {json.dumps(value):<10}  {cfg_mod.KEYS[name].help}")
        print("(* = set in .roar/config.toml)")
    return 0


def cmd_label(a) -> int:
    import json

    from roar_nb import labels

    project = _project()
    if a.action == "cp":
        if len(a.pairs) != 2:
            labels.target(project, a.entity, a.target)  # a bad source is reported first
            raise UsageError(labels.CP_USAGE)
        doc = labels.copy(project, a.entity, a.target, a.pairs[0], a.pairs[1])
        print(json.dumps(doc, sort_keys=True))
    elif a.action == "set":
        print(json.dumps(labels.set_labels(project, a.entity, a.target, a.pairs), sort_keys=True))
    elif a.action == "show":
        hist = labels.history(project, a.entity, a.target)
        print(json.dumps(hist[-1].doc if hist else {}, sort_keys=True, indent=2))
    elif a.action == "history":
        for h in labels.history(project, a.entity, a.target):
            print(f"v{h.version}  {json.dumps(h.doc, sort_keys=True)}")
    return 0


def cmd_kernel(a) -> int:
    from roar_nb import kernelspec

    path = kernelspec.install(name=a.name, user=a.user, sys_prefix=a.sys_prefix, prefix=a.prefix)
    print(f"installed kernelspec {a.name!r} in {path}")
    return 0


def cmd_tracer(a) -> int:
    from roar_nb.capture import select

    if a.action == "set-default":
        if a.name not in select.TRACERS:
            raise UsageError(f"tracer must be one of: {', '.join(select.TRACERS)}")
        project = _project()
        project.config.set("tracer.default", a.name)
        print(f"default tracer: {a.name}")
        return 0
    for b in select.status():
        state = "works" if b["works"] else ("available, does not work" if b["available"] else "unavailable")
        print(f"{b['name']:<9} {state}: {b['detail']}")
    try:
        default = _project().config.get("tracer.default")
    except RoarError:
        default = "auto (no project)"
    print(f"default   {default}")
    print("auto      preload for dynamic programs; ptrace for static executables and environment-"
          "clearing launchers; decided before the command runs, never by re-running it")
    return 0


def _transfer(a, op: str, args: list[str]) -> int:
    """`roar get` / `roar put`: the transfer program run as a traced job through a required proxy."""
    from roar_nb.proxy import transfer
    from roar_nb.session import run_command

    project = _project()
    if op == "put" and not a.dry_run:
        try:  # local mistakes (a missing file, several files to one key) are not jobs
            transfer.put_plan(args[:-1], args[-1])
        except transfer.TransferError as e:
            raise UsageError(str(e)) from None
    if a.dry_run:
        try:
            if op == "put":
                plan = [(p, f"s3://{b}/{k}") for p, b, k in transfer.put_plan(args[:-1], args[-1])]
            else:
                plan = [(f"s3://{b}/{k}", p) for b, k, p in transfer.get_plan(transfer._client(), args[0], args[1])]
        except transfer.TransferError as e:
            raise UsageError(str(e)) from None
        for src, dst in plan:
            print(f"would copy {src} -> {dst}")
        return 0
    argv = [sys.executable, "-m", "roar_nb.proxy.transfer", op, *args]
    if a.force:
        argv.append("--force")
    if getattr(a, "hash", None):
        argv += ["--hash", a.hash]
    # Its progress bar (tty only) appears after `hash.progress_after` seconds, like hashing's.
    res = run_command(project, argv, proxy=True,
                      extra_env={"ROAR_PROGRESS_AFTER": str(project.config.get("hash.progress_after"))})
    if res.job is not None and getattr(a, "message", None):
        project.store.label_patch("job", res.job.id, {"message": a.message})
    return _finish_cli_run(project, res, a.quiet)


def cmd_get(a) -> int:
    return _transfer(a, "get", [a.source, a.dest])


def cmd_put(a) -> int:
    from roar_nb.resolve import resolve_job

    sources: list[str] = []
    project = _project()
    for src in a.sources:
        if src.startswith("@"):  # a job's outputs (local files; S3 outputs are already in S3)
            job = resolve_job(project, src)
            outs = [e.path for e in job.outputs if not e.path.startswith("s3://") and os.path.isfile(e.path)]
            if not outs:
                raise UsageError(f"{src} has no local outputs to upload")
            sources += outs
        else:
            sources.append(src)
    return _transfer(a, "put", [*sources, a.dest])


def cmd_proxy(a) -> int:
    from roar_nb import proxy

    project = _project()
    cfg = project.config
    if a.action in ("enable", "disable"):
        cfg.set("proxy.enabled", a.action == "enable")
        print(f"S3 proxy {a.action}d for roar run")
        return 0
    if a.action == "start":
        port = a.port if a.port is not None else cfg.get("proxy.port")
        info = proxy.start_daemon(project.roar_dir, port, a.upstream or cfg.get("proxy.upstream"),
                                  cfg.get("proxy.region"), active_port=a.active_storage_port,
                                  extra=proxy.active_args(cfg))
        print(f"proxy daemon started (pid {info['pid']}, port {info['port']})")
        print(f"export AWS_ENDPOINT_URL={info['url']}")
        if info.get("active_url"):
            print(f"active storage on {info['active_url']} (POST /v1/{{op}}, /v2/{{op}})")
        return 0
    if a.action == "stop":
        info = proxy.stop_daemon(project.roar_dir)
        print(f"proxy daemon stopped (pid {info['pid']})" if info else "no proxy daemon running")
        return 0
    try:
        where = proxy.binary_path()
    except RoarError as e:
        where = f"missing: {e}"
    info = proxy.daemon_info(project.roar_dir)
    print(f"enabled   {'yes' if cfg.get('proxy.enabled') else 'no'} (roar run routes S3 through a job-scoped proxy)")
    print(f"binary    {where}")
    print(f"daemon    {'running on ' + info['url'] + ' (pid ' + str(info['pid']) + ')' if info else 'not running'}")
    if info and info.get("active_url"):
        print(f"active    {info['active_url']} (active storage)")
    print(f"upstream  {proxy.upstream_for(cfg.get('proxy.upstream'), os.environ) or 'AWS (https://s3.<region>.amazonaws.com)'}")
    return 0


# --- parser ------------------------------------------------------------------------

def _fast_parse(argv: list[str]):
    """Parse `run`/`build`/`status` without argparse, or return None to use the full parser.

    These are the commands on the hot path (a traced command in a loop, a status line
    in a prompt): importing argparse and building every subcommand's parser costs
    more than the rest of `roar status`. Anything unusual (help, a bad option) takes
    the full parser, so its errors and help text stay the one source of truth.
    """
    if not argv:
        return None
    cmd, rest = argv[0], argv[1:]
    if cmd == "status" and not rest:
        return SimpleNamespace(cmd=cmd, fn=cmd_status)
    if cmd not in ("run", "build"):
        return None
    ns = SimpleNamespace(cmd=cmd, fn=cmd_run if cmd == "run" else cmd_build, tracer=None, quiet=False)
    i = 0
    while i < len(rest) and rest[i].startswith("-"):
        opt = rest[i]
        if opt == "--":
            break
        if opt in ("-q", "--quiet"):
            ns.quiet = True
        elif opt == "--tracer" and i + 1 < len(rest) and rest[i + 1] in TRACERS:
            ns.tracer = rest[i + 1]
            i += 1
        elif opt.startswith("--tracer=") and opt.split("=", 1)[1] in TRACERS:
            ns.tracer = opt.split("=", 1)[1]
        else:
            return None
        i += 1
    ns.command = rest[i:]
    return ns


def build_parser():
    import argparse

    p = argparse.ArgumentParser(
        prog="roar", description="Record lineage of scripts and notebook cells: what read and wrote which data.",
        epilog=EPILOG,
    )
    p.add_argument("--version", action="version", version=f"roar-nb {__version__}")
    sub = p.add_subparsers(dest="cmd", metavar="COMMAND")

    s = sub.add_parser("init", help="create .roar/ in this directory")
    s.add_argument("dir", nargs="?", default=".", help="project directory (default: .)")
    g = s.add_mutually_exclusive_group()
    g.add_argument("-y", "--yes", action="store_true", help="add .roar/ to .gitignore without asking")
    g.add_argument("-n", "--no-gitignore", action="store_true", help="leave .gitignore alone")
    s.set_defaults(fn=cmd_init)

    for name, fn, helptext in (("run", cmd_run, "run a command with lineage tracking (or re-run @N with overrides)"),
                               ("build", cmd_build, "run a build step (compile, install) with tracking")):
        s = sub.add_parser(name, help=helptext, epilog="Example: roar run python train.py --epochs 3; roar run @2 --epochs=5")
        s.add_argument("--tracer", choices=TRACERS, default=None,
                       help="capture backend (default: config tracer.default)")
        s.add_argument("-q", "--quiet", action="store_true", help="no summary line")
        s.add_argument("command", nargs=argparse.REMAINDER, help="the command and its arguments")
        s.set_defaults(fn=fn)

    s = sub.add_parser("status", help="the active session, its jobs and DAG hash")
    s.set_defaults(fn=cmd_status)

    s = sub.add_parser("log", help="recent jobs")
    s.add_argument("-n", type=int, default=20, help="how many (default 20, 0 = all)")
    s.add_argument("--all", action="store_true", help="all sessions")
    s.add_argument("--session", help="a session id prefix or a notebook path")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_log)

    s = sub.add_parser("dag", help="the lineage DAG of the session")
    s.add_argument("--expanded", action="store_true", help="include superseded re-runs")
    s.add_argument("--show-artifacts", action="store_true", help="list each job's input and output files")
    s.add_argument("--tasks", action="store_true",
                   help="one line per Ray task (default: the tasks of one function a job ran fold into one line)")
    s.add_argument("--json", action="store_true", help="machine-readable output (stable)")
    s.add_argument("--all", action="store_true", help="every job in the project")
    s.add_argument("--session", help="a session id prefix or a notebook path (default: the active session)")
    s.set_defaults(fn=cmd_dag)

    s = sub.add_parser("show", help="a job (@N, id) or an artifact (path, hash)", epilog=EPILOG)
    s.add_argument("ref", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_show)

    s = sub.add_parser("reproduce", help="plan (default) or re-run what produced an artifact, and verify it",
                       epilog="Verdicts: identical (same blake3), differs, missing, nondeterministic. "
                              "Exit status 0 only when every requested target is identical.")
    s.add_argument("target", help="a path, a blake3 prefix, @N or a job id")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--run", action="store_true", help="re-execute the plan and verify every output hash")
    g.add_argument("--script", action="store_true", help="print the plan as a bash script")
    g.add_argument("--list-requirements", action="store_true",
                   help="print every package of the plan's recorded environment as pip requirements")
    # `--run` never asks anything (it moves files aside rather than deleting them), so -y has
    # nothing to skip; it is accepted for scripts written for the reference CLI.
    s.add_argument("-y", "--yes", action="store_true", help="accepted for compatibility: --run never prompts")
    s.add_argument("--in", dest="in_dir", metavar="DIR",
                   help="with --run: fresh clone of the recorded commit and a fresh venv in DIR")
    s.add_argument("--check-determinism", action="store_true",
                   help="with --run: run twice; outputs that differ between runs are nondeterministic")
    s.add_argument("--timeout", type=float, default=None, metavar="S", help="per-step timeout in seconds")
    s.add_argument("--tracer", choices=TRACERS, default=None)
    s.set_defaults(fn=cmd_reproduce)

    s = sub.add_parser("export", help="export an artifact's lineage (e.g. as a runnable notebook)")
    s.add_argument("format", choices=("notebook",))
    s.add_argument("target", help="a path, a blake3 prefix, @N or a job id")
    s.add_argument("-o", "--output", help="file to write (default: reproduce-<name>.ipynb)")
    s.set_defaults(fn=cmd_export)

    s = sub.add_parser("pop", help="remove the last job of the session and delete the files it created")
    s.add_argument("-y", "--yes", action="store_true")
    s.set_defaults(fn=cmd_pop)

    s = sub.add_parser("reset", help="start a new session (old jobs are kept)")
    s.add_argument("-y", "--yes", action="store_true")
    s.set_defaults(fn=cmd_reset)

    s = sub.add_parser("env", help="environment variables injected into roar run/build")
    s.add_argument("action", choices=("set", "get", "list", "unset"))
    s.add_argument("name", nargs="?")
    s.add_argument("value", nargs="?")
    s.set_defaults(fn=cmd_env)

    s = sub.add_parser("config", help="project settings (.roar/config.toml)")
    s.add_argument("action", choices=("list", "get", "set"))
    s.add_argument("key", nargs="?")
    s.add_argument("value", nargs="?")
    s.set_defaults(fn=cmd_config)

    s = sub.add_parser("label", help="versioned labels on sessions, jobs and artifacts",
                       epilog="Copy: roar label cp job @2 artifact model.pt (a new version of the "
                              "destination's labels, the copied keys overriding its own)")
    s.add_argument("action", choices=("set", "show", "history", "cp"))
    s.add_argument("entity", choices=("dag", "job", "artifact"))
    s.add_argument("target", help="dag: current or a session prefix; job: @N or id; artifact: path or hash")
    s.add_argument("pairs", nargs="*", metavar="KEY=VALUE",
                   help="set: KEY=VALUE (KEY= deletes); cp: DEST_ENTITY DEST_TARGET")
    s.set_defaults(fn=cmd_label)

    s = sub.add_parser("kernel", help="install the Jupyter kernel with native capture")
    s.add_argument("action", choices=("install",))
    s.add_argument("--name", default="roar")
    g = s.add_mutually_exclusive_group()
    g.add_argument("--user", action="store_true", help="install for the current user")
    g.add_argument("--sys-prefix", action="store_true", help="install into this Python environment")
    g.add_argument("--prefix", help="install under this prefix")
    s.set_defaults(fn=cmd_kernel)

    s = sub.add_parser("get", help="download from S3 with lineage (a source job)",
                       epilog="Example: roar get s3://bucket/data/train.csv ./data/ --hash 3f2a91c0")
    s.add_argument("source", help="s3://bucket/key, or s3://bucket/prefix/ for every object under it")
    s.add_argument("dest", help="a file, or a directory (ending in / or existing)")
    s.add_argument("--hash", help="blake3 (or a prefix of it) the object must have; nothing is kept otherwise")
    s.add_argument("--force", action="store_true", help="overwrite existing local files")
    s.add_argument("--dry-run", action="store_true", help="print what would be downloaded")
    s.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    s.set_defaults(fn=cmd_get)

    s = sub.add_parser("put", help="upload to S3 with lineage (the objects are the job's outputs)",
                       epilog="Example: roar put ./model.pt s3://bucket/models/ -m baseline; roar put @3 s3://bucket/run-7/")
    s.add_argument("sources", nargs="+", metavar="SRC", help="files, directories, or @N (that job's outputs)")
    s.add_argument("dest", help="s3://bucket/prefix/ (keeps names) or s3://bucket/key (one file)")
    s.add_argument("-m", "--message", help="a message kept as the job's label")
    s.add_argument("--force", action="store_true", help="overwrite existing objects")
    s.add_argument("--dry-run", action="store_true", help="print what would be uploaded")
    s.add_argument("-q", "--quiet", action="store_true", help="no summary line")
    s.set_defaults(fn=cmd_put)

    s = sub.add_parser("proxy", help="the S3 lineage proxy: status, enable, disable, start, stop")
    s.add_argument("action", nargs="?", default="status", choices=("status", "enable", "disable", "start", "stop"))
    s.add_argument("--port", type=int, default=None, help="start: port (default: config proxy.port)")
    s.add_argument("--upstream", default=None, help="start: S3 endpoint to forward to")
    s.add_argument("--active-storage-port", type=int, default=None, metavar="N",
                   help="start: also serve active-storage reductions on 127.0.0.1:N (0: a free port; default: off)")
    s.set_defaults(fn=cmd_proxy)

    s = sub.add_parser("tracer", help="capture backends: status, set-default")
    s.add_argument("action", choices=("status", "set-default"))
    s.add_argument("name", nargs="?")
    s.set_defaults(fn=cmd_tracer)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _fill_closed_stdio()
    args = _fast_parse(argv)
    if args is None:
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "fn", None):
            parser.print_help()
            return 2
        for need in ("name", "key"):
            if args.cmd in ("env", "config") and need in vars(args) and getattr(args, need) is None \
                    and getattr(args, "action", "list") not in ("list",):
                parser.error(f"{args.cmd} {args.action} needs a {need.upper()}")
    try:
        rc = args.fn(args)
    except RoarError as e:
        from roar_nb.present import text  # messages quote paths and references the user typed

        _err(f"roar: error: {text(str(e))}")
        rc = e.exit_code
    except KeyboardInterrupt:
        _err("roar: interrupted")
        rc = 130
    except BrokenPipeError:
        rc = 0  # `roar log | head`: the reader has what it wanted
    except OSError as e:  # e.g. `roar dag > /dev/full`: one line, not a traceback
        _err(f"roar: error: {e.strerror or e}" + (f": {e.filename}" if e.filename else ""))
        rc = 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        _silence(sys.stdout)
    except (OSError, ValueError) as e:
        _silence(sys.stdout)
        _err(f"roar: error: output lost: {getattr(e, 'strerror', None) or e}")
        rc = rc or 1
    _flush_quietly()
    return rc


if __name__ == "__main__":
    sys.exit(main())
