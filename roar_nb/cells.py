"""Recording notebook cells as jobs, without IPython: the cell recorder the magics drive.

Owns what a traced cell becomes: its step identity (`cell_step`: the cell id, else a
hash of its source), its command line (`first_line`), which cells are roar's own
(`is_own_cell`), the preamble (the untraced cells that succeeded since the last
traced one, so a reproduction can rebuild the kernel's state), the git facts read
per cell (`GitWatch`), and begin/finish around a capture window: the draft, the
capture result folded by `session.record_job`, the S3 edges of the window, and the
threads that outlive the cell.

What it must not do: import IPython, print (it returns the job and the warnings;
the front end shows them), run the user's code, or do anything inside the capture
window but begin it (`begin` starts capture last, `finish` ends it first).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Optional

from roar_nb import session as session_mod

# Cells made only of these lines are roar's own commands, not jobs of the user.
OWN_PREFIXES = ("%roar", "%load_ext roar", "%reload_ext roar", "%unload_ext roar")

# How often a background `git status` refreshes the dirty flag (it never runs
# inside a cell's capture window, where it would count as the cell's I/O).
GIT_DIRTY_EVERY_S = 2.0

PREAMBLE_CELLS = 50  # a long untraced stretch keeps its last 50 cells


def is_own_cell(raw: str) -> bool:
    lines = [ln.strip() for ln in raw.splitlines() if ln.strip() and not ln.strip().startswith("#")]
    # `%roar reduce` reads the user's data: a cell of it is the user's work, traced like any other.
    return bool(lines) and all(ln.startswith(OWN_PREFIXES) and not ln.startswith(("%%roar", "%roar reduce"))
                               for ln in lines)


def first_line(raw: str) -> str:
    for ln in raw.splitlines():
        s = ln.strip()
        if s and not s.startswith("%%roar"):
            return s
    return ""


def cell_step(cell_id: Optional[str], source: str) -> str:
    """A cell's step identity: its cell id; without one (terminal IPython) its source."""
    from roar_nb.hashing import hash_bytes

    return cell_id or "src:" + hash_bytes(source.encode("utf-8", "surrogateescape"))[:16]


class GitWatch:
    """Commit/branch read per cell from .git files; the dirty flag from a throttled background status."""

    def __init__(self):
        self._proc_info = None
        self._started = 0.0
        self.dirty: Optional[bool] = None

    def info(self, cwd: str):
        from roar_nb.gitinfo import GitInfo, read_git

        g = read_git(cwd, dirty=False)
        if g.root is None:
            return None
        return GitInfo(root=g.root, commit=g.commit, branch=g.branch, dirty=self.dirty)

    def refresh(self, cwd: str) -> None:
        """Collect a finished `git status` and start the next one (called outside capture)."""
        from roar_nb.gitinfo import read_git

        if self._proc_info is not None:
            p = self._proc_info._proc
            if p is not None and p.poll() is None:
                return  # still running; collect it next time
            self.dirty = self._proc_info.settle().dirty
            self._proc_info = None
        if time.monotonic() - self._started >= GIT_DIRTY_EVERY_S:
            self._started = time.monotonic()
            g = read_git(cwd, dirty=True)
            self._proc_info = g if g._proc is not None else None


class CellRecorder:
    """Cells of one session in one process, one at a time: `begin` before the cell runs,
    `finish` after; `note_untraced` for the cells in between.

    `capture` is a `capture.inkernel.CellCapture` (or anything with `begin()`, `end()` ->
    trace and `threads.adopt`); `s3_edges(t0_ns, t1_ns)` returns what the S3 proxy saw in
    the window (a `capture.result.CaptureResult`), or None when no proxy runs."""

    def __init__(self, project, session, capture, notebook: Optional[str] = None,
                 kernel_id: Optional[str] = None, s3_edges: Optional[Callable] = None, ray_spool=None):
        self.project = project
        self.session = session
        self.capture = capture
        self.notebook = notebook
        self.kernel_id = kernel_id
        self.s3_edges = s3_edges or (lambda t0, t1: None)
        self.ray_spool = ray_spool  # the kernel's Ray spool (roar_nb.ray.arm_kernel), or None
        self.git = GitWatch()
        self.preamble: list[str] = []
        self.draft = None  # the JobDraft of the cell being captured
        self._t0 = 0  # CLOCK_MONOTONIC ns when the traced cell began (the proxy's clock)

    @property
    def active(self) -> bool:
        return self.draft is not None

    def note_untraced(self, raw: str, success: bool) -> None:
        """Keep the source of an untraced cell that succeeded: the next traced cell records it
        as its preamble, so a reproduction can rebuild the kernel state (imports, definitions)."""
        if not raw.strip() or is_own_cell(raw) or not success:
            return
        self.preamble.append(raw)
        del self.preamble[:-PREAMBLE_CELLS]

    def begin(self, raw: str, cell_id: Optional[str], cwd: str) -> None:
        draft = session_mod.JobDraft(
            kind="cell", command=first_line(raw), cwd=cwd, started_at=time.time(),
            session_id=self.session.id, step=cell_step(cell_id, raw),
            source=raw, notebook=self.notebook, cell_id=cell_id, kernel_id=self.kernel_id,
            preamble="\n\n".join(self.preamble) or None,
        )
        self.preamble = []
        draft.git = self.git.info(cwd)
        self.draft = draft
        self._t0 = time.monotonic_ns()
        self.capture.begin()  # last: nothing of ours runs inside the window but the hook

    def finish(self, failed: bool, execution_count: Optional[int], finished: bool = True):
        """End the window and record the cell; returns (job, warnings). `finished` False: the
        cell never reached its end (said in the job's notes)."""
        from roar_nb.capture import events as ev_mod
        from roar_nb.capture.result import CaptureResult

        draft, self.draft = self.draft, None
        trace = self.capture.end()  # first: the cell's window closes here
        t1 = time.monotonic_ns()
        draft.ended_at = time.time()
        draft.status = "failed" if failed else "ok"
        draft.exit_code = 1 if failed else 0
        draft.execution_count = execution_count
        events, ray_tasks, ray_said = trace.events, [], None
        if self.ray_spool is not None:  # Ray tasks that reported since the last cell: child jobs
            from roar_nb import ray as ray_mod

            events, ray_tasks, ray_said = ray_mod.collect(self.project, draft, self.ray_spool, events)
        result = CaptureResult(events=ev_mod.reduce(events), backend=trace.backend,
                               capture_level=trace.capture_level, notes=list(trace.notes))
        if not finished:
            result.notes.append("the cell did not finish normally")
        s3 = self.s3_edges(self._t0, t1)
        # Never freeze the kernel behind another process's write lock: after a short wait
        # the job goes to .roar/pending/ (said once per kernel) and is stored later.
        job, warnings = session_mod.record_job(self.project, draft, result, wait=session_mod.CELL_LOCK_WAIT_S,
                                               s3=s3, ray=ray_said, after=ray_tasks)
        self.capture.threads.adopt(trace.threads,
                                   job.ref if job.seq else f"the cell run at {time.strftime('%H:%M:%S')}")
        self.git.refresh(draft.cwd)
        return job, warnings
