"""The IPython front end: `%load_ext roar`, `%%roar`, `%roar on|off|status|log|show|dag`.

Responsibility: decide from IPython's hooks which cells are jobs, drive the cell
recorder (`cells.CellRecorder`: the draft, step identity, preamble, begin/finish
around capture/inkernel.py's window, `session.record_job`) and show one quiet
summary line. It is the only module that imports IPython.

What it must not do: hide or alter the user's own exception or output, run the
user's code itself (cells run exactly as IPython runs them; `%%roar` is removed
by an input transformer so tracebacks and line numbers are untouched), or raise
from an IPython hook: roar errors become one printed line and the cell still
runs. The per-cell path is kept lean (no sqlite_utils, one Project/Store per
kernel, no git subprocess in the cell's window).
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Optional

from IPython.core.magic import Magics, line_cell_magic, magics_class

from roar_nb import present
from roar_nb import session as session_mod
from roar_nb.capture.audit import NOTE_PYTHON_ONLY
from roar_nb.errors import NotInitialized, RefNotFound, RoarError
from roar_nb.cells import is_own_cell
from roar_nb.model import CAPTURE_COMPLETE, CAPTURE_PARTIAL

USAGE = ("usage: %roar on | off | status | log | show REF | dag [--widget|--text|--expanded]"
         " | reproduce TARGET [--run [--in DIR]] [--check-determinism] | export TARGET FILE.ipynb | proxy on|off"
         " | reduce OP s3://BUCKET/KEY --dtype T [--shape N,M] [--axis A[,B]] [--selection a:b:s,...]"
         " [--missing JSON] [--order C|F] [--offset N] [--size N]"
         "   (%%roar: trace this cell)")

def _strip_roar_cell_magic(lines: list[str]) -> list[str]:
    """Input transformer: a leading `%%roar` line becomes an empty line.

    The cell then runs as ordinary code: no magic frame in tracebacks, and line
    numbers still match what the user sees (line 1 is the `%%roar` line). When
    another cell magic follows (`%%roar` then `%%bash`, `%%time`, `%%capture`...),
    the `%%roar` line (and blank lines after it) is dropped instead, so that
    IPython's own cell-magic transform, which only looks at the first line, runs
    the rest exactly as it would run without `%%roar`."""
    if lines and lines[0].lstrip().startswith("%%roar"):
        rest = lines[1:]
        i = 0
        while i < len(rest) and not rest[i].strip():
            i += 1
        if i < len(rest) and rest[i].lstrip().startswith("%%"):
            return rest[i:]
        return ["\n"] + rest
    return lines


def _nested_run_cell() -> bool:
    """True inside a run_cell started by a running cell (`%%capture`, `%%roar` fallback):
    the outer cell's capture window is still open and the inner cell belongs to it."""
    f = sys._getframe(2)
    n = 0
    while f is not None:
        if f.f_code.co_name == "run_cell_async" and "IPython" in f.f_code.co_filename:
            n += 1
            if n > 1:
                return True
        f = f.f_back
    return False


class NotebookSession:
    """roar's state in one kernel: project, session, capture, and whether cells are traced."""

    def __init__(self, shell):
        self.shell = shell
        self.project = None
        self.session = None
        self.capture = None
        self.auto = False
        self.summary = True
        self.notebook = _notebook_path(shell)
        self.kernel_id = _kernel_id()
        self._said: set = set()
        self.recorder = None  # cells.CellRecorder once the project and session are open
        self._nested = 0  # run_cell calls made by the traced cell itself (e.g. %%capture)
        self.proxy = None  # the kernel's S3 proxy (roar_nb.proxy.Running) after `%roar proxy on`
        self._proxy_dir = None  # its events directory
        self._proxy_env: dict = {}  # the environment variables it replaced: restored by `off`
        self._proxy_unroute = lambda: None  # undoes the routing of clients that existed at `on`

    # -- setup -----------------------------------------------------------------------
    def open(self) -> None:
        from roar_nb.capture.inkernel import CellCapture

        start = os.path.dirname(self.notebook) if self.notebook else os.getcwd()
        try:
            self.project = _find_or_create_project(start, self.say)
            cfg = self.project.config
            self.summary = bool(cfg.get("notebook.summary")) and not cfg.get("output.quiet")
            self.auto = bool(cfg.get("notebook.auto_trace"))
            store = self.project.store
            # One session per kernel start: a restarted kernel, or a second kernel on the
            # same notebook, has other state, so it never joins an earlier kernel's session
            # (a reproduction replays one session's cells in one fresh kernel). Only this
            # process's own session is rejoined (after %unload_ext / %load_ext).
            mine = getattr(self.shell, _SESSION_ATTR, None)
            try:
                self.session = store.session(mine[1]) if mine and mine[0] == self.project.root else None
            except RefNotFound:  # `roar reset` or a new database since
                self.session = None
            self.session = self.session or store.new_session(
                "notebook", name=os.path.basename(self.notebook) if self.notebook else None,
                notebook=self.notebook)
            setattr(self.shell, _SESSION_ATTR, (self.project.root, self.session.id))
        except RoarError as e:
            self.say(f"roar: {e}; cells run but are not recorded")
            self.project = self.session = None
        excludes = [_ipython_dir(self.shell), _runtime_dir()]
        if self.project is not None:
            excludes.append(str(self.project.roar_dir))
        self.capture = CellCapture(tuple(p for p in excludes if p), _kernel_thread(self.shell))
        if self.capture.native is None and self.project is not None:
            self.say(self.capture.problem)
        if self.project is not None:
            self.capture.ignore_read = self.project.read_filter()
        if self.project is not None:
            from roar_nb.cells import CellRecorder

            ray_spool = None
            if self.capture.native is not None:
                # Ray tasks started from cells become jobs (needs the library: the daemons Ray
                # starts must be spawned untraced, and workers capture natively).
                from roar_nb import ray as ray_mod

                ray_spool = ray_mod.arm_kernel(self.project, self.capture.trace_base)
            self.recorder = CellRecorder(self.project, self.session, self.capture, notebook=self.notebook,
                                         kernel_id=self.kernel_id, s3_edges=self._proxy_edges,
                                         ray_spool=ray_spool)
            self.recorder.git.refresh(os.getcwd())

    def close(self) -> None:
        self.proxy_off()
        if self.capture is not None:
            self.capture.close()

    # -- S3 proxy ----------------------------------------------------------------------
    def proxy_on(self) -> str:
        """Starts one S3 proxy for this kernel and routes AWS SDKs created from now on through it."""
        from roar_nb import proxy as proxy_mod
        from roar_nb.capture import events as ev_mod
        from roar_nb.model import new_id

        if self.project is None:
            return "roar: no usable .roar/ for this notebook; S3 requests would not be recorded"
        if self.proxy is not None:
            return f"roar: S3 proxy already on ({self.proxy.url})"
        d = ev_mod.make_trace_dir(f"proxy-{os.getpid()}-{new_id()[:8]}", os.path.join(self.project.roar_dir, "traces"))
        # Not traced itself: the kernel's dormant preload library stays out of the proxy.
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ROAR_TRACE_DIR")}
        cfg = self.project.config
        try:
            self.proxy = proxy_mod.start(d, os.path.join(d, "proxy.log"),
                                         upstream=proxy_mod.upstream_for(cfg.get("proxy.upstream"), env),
                                         region=cfg.get("proxy.region"), env=env, active_port=0,
                                         extra=proxy_mod.active_args(cfg))
        except RoarError:
            session_mod.remove_trace_dir(d)
            raise
        self._proxy_dir = d
        for k, v in proxy_mod.child_env(self.proxy.url, self.proxy.active_url).items():
            self._proxy_env.setdefault(k, os.environ.get(k))
            os.environ[k] = v
        self._proxy_unroute = proxy_mod.route_existing_clients(self.proxy.url)
        return (f"roar: S3 proxy on ({self.proxy.url}): this kernel's S3 clients (existing and new) and its "
                "subprocesses go through it, and %roar reduce / roar_nb.activestorage use its active storage "
                f"({self.proxy.active_url}); requests made by traced cells become their edges")

    def proxy_off(self) -> str:
        if self.proxy is None:
            return "roar: S3 proxy is not on"
        self._proxy_unroute()
        self.proxy.stop()
        self.proxy = None
        for k, old in self._proxy_env.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old
        self._proxy_env = {}
        session_mod.remove_trace_dir(self._proxy_dir)
        return "roar: S3 proxy off"

    def _proxy_edges(self, t0: int, t1: int):
        """What the proxy recorded while the cell ran (by time window), as a capture result."""
        if self.proxy is None:
            return None
        from roar_nb import proxy as proxy_mod
        from roar_nb.capture.result import CaptureResult

        level, notes = CAPTURE_COMPLETE, []
        if self.proxy.proc.poll() is not None:
            level = CAPTURE_PARTIAL
            notes.append("the S3 proxy has stopped; S3 I/O not captured (%roar proxy on restarts it)")
        events, problems = proxy_mod.read_events(self._proxy_dir)
        notes.extend(problems)
        mine = [e for e in events if t0 <= e.get("t_ns", 0) <= t1]
        store = self.project.store
        return CaptureResult(s3=proxy_mod.to_edges(mine, lambda etag: store.hash_by_digest("s3.etag", etag)),
                             capture_level=level, notes=notes)

    def say(self, msg: str) -> None:
        """Print a roar message once per kernel (repeated warnings are noise)."""
        if msg and msg not in self._said:
            self._said.add(msg)
            print(msg, file=sys.stdout, flush=True)

    # -- hooks -----------------------------------------------------------------------
    def pre_run_cell(self, info) -> None:
        try:
            if _nested_run_cell():
                # Part of the running cell (%%capture): traced in its window if that cell
                # is, never a job or a preamble entry of its own (the outer cell has it).
                self._nested += 1
                return
            if self.recorder is not None and self.recorder.active:
                self._finish(None)  # a previous cell never reached post_run_cell
            raw = info.raw_cell or ""
            if self.project is None or self.session is None or info.silent:
                return
            stripped = raw.lstrip()
            if stripped.startswith("%%roar"):
                args = stripped.splitlines()[0][len("%%roar"):].strip()
                if args:
                    print(USAGE)
                    return
            elif not self.auto or is_own_cell(raw) or not raw.strip():
                return
            self.recorder.begin(raw, getattr(info, "cell_id", None) or None, os.getcwd())
        except RoarError as e:
            self._drop_cell()
            self.say(f"roar: {e}")
        except Exception as e:  # noqa: BLE001 - never break the user's cell
            self._drop_cell()
            self.say(f"roar: internal error, cell not traced: {type(e).__name__}: {e}")

    def post_run_cell(self, result) -> None:
        if self._nested:
            self._nested -= 1
            return
        if self.recorder is None or not self.recorder.active:
            self._note_untraced(result)
            return
        try:
            self._finish(result)
        except RoarError as e:
            self.say(f"roar: {e}")
        except Exception as e:  # noqa: BLE001
            self.say(f"roar: internal error, cell not recorded: {type(e).__name__}: {e}")
        finally:
            self._drop_cell()

    def _drop_cell(self) -> None:
        if self.recorder is not None:
            self.recorder.draft = None

    def _note_untraced(self, result) -> None:
        """An untraced cell's source goes to the recorder's preamble (see `CellRecorder.note_untraced`)."""
        info = getattr(result, "info", None)
        raw = (getattr(info, "raw_cell", None) or "") if info is not None else ""
        if self.recorder is None or getattr(info, "silent", False):
            return
        self.recorder.note_untraced(raw, bool(getattr(result, "success", False)))

    def _finish(self, result) -> None:
        failed = result is None or (result.error_in_exec is not None or result.error_before_exec is not None)
        job, warnings = self.recorder.finish(failed, result.execution_count if result is not None else None,
                                             finished=result is not None)
        if self.summary and job.seq:  # seq 0: pending, no @N yet
            # One quiet line per cell; the capture-level explanation that the summary may
            # append is the same every cell, so it is said once per kernel. A partial
            # capture's reasons are this cell's own: said every time.
            first, *more = _summary(job).split("\n")
            print(first, flush=True)
            for m in more:
                if not m.endswith(": " + NOTE_PYTHON_ONLY):  # %load_ext said that already
                    print(m, flush=True) if job.capture_level == "partial" else self.say(m)
        for w in warnings:
            self.say(f"roar: {getattr(w, 'once', w)}")

    # -- commands ---------------------------------------------------------------------
    def jobs(self):
        return self.project.store.jobs(self.session.id)

    def dag(self, expanded: bool = False):
        from roar_nb import dag as dag_mod

        return dag_mod.build(self.jobs(), expanded=expanded, session_id=self.session.id,
                             project_jobs=self.project.store.jobs())


def _summary(job) -> str:
    from roar_nb.report import summary_line

    return summary_line(job)


def _find_or_create_project(start: str, say):
    """The project above `start`, else a new .roar/ at the git root (or `start`) with one line said."""
    try:
        return session_mod.Project.find(start)
    except NotInitialized:
        if os.environ.get("ROAR_PROJECT"):
            raise
    from roar_nb.gitinfo import find_git_root

    root = find_git_root(start) or start
    project, created = session_mod.Project.init(root)
    if created:
        say(f"roar: created {project.roar_dir}")
    return project


def _notebook_path(shell) -> Optional[str]:
    """The notebook file when the frontend says (JupyterLab/Notebook 7 set __session__ /
    JPY_SESSION_NAME; VS Code sets __vsc_ipynb_file__); None otherwise."""
    ns = getattr(shell, "user_ns", {}) or {}
    from roar_nb.config import ENV_NOTEBOOK

    for cand in (os.environ.get(ENV_NOTEBOOK), ns.get("__vsc_ipynb_file__"), ns.get("__session__"),
                 os.environ.get("JPY_SESSION_NAME")):
        if isinstance(cand, str) and cand.endswith(".ipynb"):
            return os.path.abspath(cand)
    return None


def _kernel_thread(shell):
    """A predicate for threads that are IPython's machinery, not the user's: the event-loop
    thread the script magics (`%%bash`, `%%sh`) start on first use and keep, and the
    history-saving thread (IPython stops it around every fork and starts a new one)."""
    from IPython.core.history import HistorySavingThread

    def ignore(t) -> bool:
        if isinstance(t, HistorySavingThread):
            return True
        sm = shell.magics_manager.registry.get("ScriptMagics") if shell is not None else None
        loop = getattr(sm, "event_loop", None)
        return loop is not None and getattr(getattr(t, "_target", None), "__self__", None) is loop
    return ignore


def _kernel_id() -> Optional[str]:
    try:
        from ipykernel.connect import get_connection_file

        name = os.path.basename(get_connection_file())
    except Exception:  # noqa: BLE001 - not in a kernel (terminal IPython, tests)
        return None
    if name.startswith("kernel-") and name.endswith(".json"):
        return name[len("kernel-"):-len(".json")]
    return name


def _ipython_dir(shell) -> Optional[str]:
    d = getattr(shell, "ipython_dir", None)
    if not d:
        prof = getattr(shell, "profile_dir", None)
        d = getattr(prof, "location", None)
    return os.path.realpath(d) if d else None


def _runtime_dir() -> Optional[str]:
    try:
        from jupyter_core.paths import jupyter_runtime_dir

        return os.path.realpath(jupyter_runtime_dir())
    except Exception:  # noqa: BLE001
        return None


def _reduce_args(rest: list[str]) -> tuple[str, str, dict] | None:
    """`OP s3://b/k --dtype T --shape 10,20 --axis 0,1 --selection 0:10:2,::-1 --missing JSON
    --order F --offset N --size N` -> (op, url, keyword arguments of activestorage.reduce)."""
    import json

    pos, kw, it = [], {}, iter(rest)
    for a in it:
        if not a.startswith("--"):
            pos.append(a)
            continue
        name, _, val = a[2:].partition("=")
        if not val:
            val = next(it, None)
        if val is None or name not in ("dtype", "shape", "axis", "selection", "missing", "order", "offset",
                                       "size", "byte-order", "compression"):
            return None
        if name == "shape":
            kw["shape"] = [int(x) for x in val.split(",")]
        elif name == "axis":
            kw["axis"] = [] if val == "[]" else [int(x) for x in val.split(",")]
        elif name == "selection":
            kw["selection"] = [slice(*[int(p) if p else None for p in part.split(":")]) for part in val.split(",")]
        elif name == "missing":
            kw["missing"] = json.loads(val)
        elif name in ("offset", "size"):
            kw[name] = int(val)
        else:
            kw[name.replace("-", "_")] = val
    if len(pos) != 2 or "dtype" not in kw:
        return None
    return pos[0], pos[1], kw


def _reduce(rest: list[str]):
    """`%roar reduce`: returns `Reduction(array, counts)` (shown as the cell's output)."""
    try:
        parsed = _reduce_args(rest)
    except (ValueError, TypeError):
        parsed = None
    if parsed is None:
        print(USAGE)
        return None
    from roar_nb import activestorage

    op, url, kw = parsed
    return activestorage.reduce(url, op, **kw)


@magics_class
class RoarMagics(Magics):
    def __init__(self, shell, nb: NotebookSession):
        super().__init__(shell)
        self.nb = nb

    @line_cell_magic
    def roar(self, line: str, cell: Optional[str] = None):
        """%roar on|off|status|log|show REF|dag [--widget|--text|--expanded]; %%roar traces one cell."""
        if cell is not None:
            # Only reached when the input transformer was removed: run the body as a cell would.
            if line.strip():
                print(USAGE)
            self.shell.run_cell(cell, store_history=False)
            return None
        try:
            args = shlex.split(line)
        except ValueError:
            print(USAGE)
            return None
        try:
            return self._command(args)
        except RoarError as e:
            print(f"roar: {e}")
        return None

    def _command(self, args: list[str]) -> None:
        nb = self.nb
        cmd, rest = (args[0], args[1:]) if args else ("", [])
        if cmd in ("", "help", "-h", "--help"):
            print(USAGE)
            return
        if cmd not in ("on", "off", "status", "log", "show", "dag", "reproduce", "export", "proxy", "reduce"):
            print(USAGE)
            return
        if cmd == "reduce":
            return _reduce(rest)
        if cmd == "proxy":
            if rest not in (["on"], ["off"]):
                print(USAGE)
                return
            print(nb.proxy_on() if rest == ["on"] else nb.proxy_off())
            return
        if cmd in ("on", "off"):
            if rest:
                print(USAGE)
                return
            nb.auto = cmd == "on"
            if nb.project is None:
                print("roar: no usable .roar/ for this notebook; cells are not recorded")
            else:
                print(f"roar: tracing every cell {'on' if nb.auto else 'off'}"
                      f" ({'native' if nb.capture.native else 'python-level'} capture)")
            return
        if nb.project is None or nb.session is None:
            print("roar: no usable .roar/ for this notebook (see the message at %load_ext)")
            return
        if cmd == "status":
            if rest:
                print(USAGE)
                return
            print(_status_text(nb))
        elif cmd == "log":
            if rest:
                print(USAGE)
                return
            from roar_nb.report import log_text

            print(log_text(nb.jobs()))
        elif cmd == "show":
            if len(rest) != 1:
                print(USAGE)
                return
            from roar_nb import report, resolve

            kind, what = resolve.resolve_any(nb.project, rest[0], nb.session)
            print(report.job_text(nb.project, what) if kind == "job" else report.artifact_text(nb.project, what))
        elif cmd == "reproduce":
            in_dir, has_in = None, "--in" in rest
            if has_in:  # --in DIR: as `roar reproduce --run --in DIR`
                k = rest.index("--in")
                in_dir = rest[k + 1] if k + 1 < len(rest) else None
                rest = rest[:k] + rest[k + 2:]
            flags = {a for a in rest if a.startswith("--")}
            targets = [a for a in rest if not a.startswith("--")]
            if len(targets) != 1 or not flags <= {"--run", "--check-determinism"} or (
                    has_in and (not in_dir or "--run" not in flags)):
                print(USAGE)
                return
            self._reproduce(nb, targets[0], "--run" in flags, "--check-determinism" in flags, in_dir)
        elif cmd == "export":
            if len(rest) != 2 or not rest[1].endswith(".ipynb"):
                print(USAGE)
                return
            from roar_nb import export, reproduce

            plan = reproduce.make_plan(nb.project, rest[0])
            export.write_notebook(plan, rest[1])
            print(f"roar: wrote {rest[1]} ({len(plan.steps)} step(s), verifies {len(plan.target_hashes)} hash(es))")
        elif cmd == "dag":
            flags = set(rest)
            if not flags <= {"--widget", "--text", "--expanded"} or {"--widget", "--text"} <= flags:
                print(USAGE)
                return
            self._dag(nb, widget="--widget" in flags, text="--text" in flags, expanded="--expanded" in flags)

    def _reproduce(self, nb: NotebookSession, target: str, run: bool, check: bool, in_dir: str | None = None) -> None:
        """Preview (default) or run a reproduction; the same use case as `roar reproduce`."""
        from roar_nb import report, reproduce

        plan = reproduce.check(nb.project, reproduce.make_plan(nb.project, target))
        print(report.plan_text(plan))
        if not run:
            print(f"(run it with %roar reproduce {target} --run)")
            return
        opts = reproduce.RunOptions(directory=in_dir, check_determinism=check,
                                    progress=lambda line: print(f"roar: {line}"))
        print(report.outcome_text(reproduce.run(nb.project, plan, opts)))

    def _dag(self, nb: NotebookSession, widget: bool, text: bool, expanded: bool) -> None:
        from IPython.display import SVG, display

        from roar_nb import render

        d = nb.dag(expanded=expanded)
        if widget:
            w = render.dag_widget(d, nb.project)
            if w is not None:
                display(w)
                return
            print("roar: ipywidgets is not installed; showing the static DAG")
        svg = None if text else render.dag_svg(d)
        if svg is None:
            print(render.dag_text(d))
        else:
            display(SVG(svg))


def _status_text(nb: NotebookSession) -> str:
    d = nb.dag()
    jobs = nb.jobs()
    failed = sum(1 for j in jobs if j.status != "ok")
    cap = "native (preload)" if nb.capture.native else "python-level (audit hook)"
    lines = [
        f"project    {nb.project.root}",
        f"session    {present.short_id(nb.session.id)}" + (f"  {nb.notebook}" if nb.notebook else ""),
        f"tracing    {'every cell (%roar off to stop)' if nb.auto else '%%roar cells only (%roar on for all)'}",
        f"capture    {cap}",
        f"jobs       {len(jobs)} ({len(d.jobs)} cells" + (f", {failed} failed" if failed else "") + ")",
    ]
    if d.stale:
        lines.append(f"stale      {', '.join(j.ref for j in d.jobs if j.id in d.stale)}")
    return "\n".join(lines)


# --- extension entry points (roar_nb.load_ipython_extension delegates here) --------------

_STATE_ATTR = "_roar_nb_state"
_SESSION_ATTR = "_roar_nb_session"  # (project root, session id) of this kernel process


def load(ip) -> None:
    if getattr(ip, _STATE_ATTR, None) is not None:
        return  # loaded twice: keep the one session
    nb = NotebookSession(ip)
    nb.open()
    if _strip_roar_cell_magic not in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.append(_strip_roar_cell_magic)
    ip.events.register("pre_run_cell", nb.pre_run_cell)
    ip.events.register("post_run_cell", nb.post_run_cell)
    ip.register_magics(RoarMagics(ip, nb))
    setattr(ip, _STATE_ATTR, nb)


def unload(ip) -> None:
    nb = getattr(ip, _STATE_ATTR, None)
    if nb is None:
        return
    for name, fn in (("pre_run_cell", nb.pre_run_cell), ("post_run_cell", nb.post_run_cell)):
        try:
            ip.events.unregister(name, fn)
        except ValueError:
            pass
    if _strip_roar_cell_magic in ip.input_transformers_cleanup:
        ip.input_transformers_cleanup.remove(_strip_roar_cell_magic)
    for kind in ("line", "cell"):
        ip.magics_manager.magics[kind].pop("roar", None)
    nb.close()
    setattr(ip, _STATE_ATTR, None)
