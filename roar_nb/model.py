"""Plain data passed between roar-nb's layers: frozen records, no behaviour.

Capture produces `Event`s, the session turns them into a `Job` with `Edge`s to
`Artifact`s, the store persists them and the use cases read them back. Nothing
here touches the disk, the database or a front end.

Records are declared with `lean.record` (a dataclass stand-in, see lean.py);
`record`, `factory`, `replace`, `asdict` and `new_id` are re-exported here, where
the rest of the code base has always imported them from.
"""

from __future__ import annotations

# Re-exported: the records' toolkit lives with the other start-up stand-ins in lean.py.
from roar_nb.lean import asdict, factory, new_id, record, replace  # noqa: F401

# Event operations (see rust/EVENTS.md). Single ASCII letters so the native
# wire format and the in-process (audit hook) backend share one vocabulary.
OP_READ = "R"
OP_WRITE = "W"
OP_UPDATE = "U"  # opened read-write; written only if it changed
OP_DELETE = "D"
OP_MOVE = "M"
OP_LINK = "L"
OP_EXEC = "X"
OP_NOTE = "N"  # something the tracer knows it did not see (never a file the job touched)

# Capture levels a job can record.
CAPTURE_COMPLETE = "complete"
CAPTURE_PARTIAL = "partial"
CAPTURE_PYTHON = "python-only"


@record(frozen=True)
class Event:
    """One observed file operation. `path`/`path2` are absolute, str with surrogateescape."""

    op: str
    path: str
    t_ns: int = 0
    size: int = 0
    mtime_ns: int = -1
    path2: str | None = None
    pid: int = 0


@record(frozen=True)
class Artifact:
    """Content-addressed data: `hash` is the blake3 hex digest of the bytes."""

    hash: str
    size: int
    digests: dict = factory(dict)  # extra algo -> value (sha256, s3 etag, ...)


@record(frozen=True)
class Edge:
    """A job read (`direction == "in"`) or wrote (`"out"`) an artifact at a path."""

    direction: str
    path: str
    hash: str | None  # None when the file could not be read (vanished, unreadable)
    size: int = 0
    changed: bool = False  # input modified while the job ran
    note: str | None = None
    # Outputs: did the path exist before the job? True = first touched by a creating open or
    # link (pop still checks the file's birth time), False = it existed (read, updated,
    # deleted or renamed before any write), None = roar cannot tell (e.g. a rename target).
    created: bool | None = None


@record(frozen=True)
class Job:
    """A recorded execution: a CLI command, a build step or a notebook cell."""

    id: str
    session_id: str
    seq: int  # @N (or @BN for builds) within the session
    kind: str  # "run" | "build" | "cell"
    step: str  # step identity: re-runs of the same step share it
    command: str
    cwd: str
    started_at: float
    ended_at: float
    exit_code: int | None
    status: str  # "ok" | "failed"
    backend: str
    capture_level: str
    capture_notes: tuple = ()
    argv: tuple = ()
    source: str | None = None
    # Untraced cells that ran (successfully) in the kernel since the previous traced
    # cell: imports, definitions. Reproduction replays them to rebuild kernel state.
    preamble: str | None = None
    notebook: str | None = None
    cell_id: str | None = None
    execution_count: int | None = None
    kernel_id: str | None = None
    git_commit: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    git_root: str | None = None
    env_id: str | None = None
    # The job whose command started this one (a `roar run` inside a `roar run` or a cell).
    parent_job_id: str | None = None
    inputs: tuple = ()  # Edge, direction "in"
    outputs: tuple = ()  # Edge, direction "out"

    @property
    def ref(self) -> str:
        """The user-facing reference: @N, or @BN for build steps."""
        return f"@B{self.seq}" if self.kind == "build" else f"@{self.seq}"

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@record(frozen=True)
class Session:
    """A group of jobs: the CLI's active session, or one kernel's session of a notebook."""

    id: str
    created_at: float
    kind: str  # "cli" | "notebook"
    name: str | None = None
    notebook: str | None = None


# -- read models: what the store hands back besides jobs ----------------------------


@record(frozen=True)
class SessionStats:
    """A session with how many jobs it holds and when its latest job ended (`store.sessions()`)."""

    session: Session
    jobs: int = 0
    last_job_at: float | None = None


@record(frozen=True)
class ArtifactUse:
    """One job that read (`direction == "in"`) or wrote (`"out"`) an artifact, at a path.

    `path` is the real path (its exact bytes): views escape it, reproduce opens it."""

    job_id: str
    direction: str
    path: str
    session_id: str
    seq: int
    kind: str
    command: str
    ended_at: float | None = None

    @property
    def ref(self) -> str:
        """The job's @N (or @BN for a build step), as `Job.ref`."""
        return f"@B{self.seq}" if self.kind == "build" else f"@{self.seq}"


@record(frozen=True)
class Environment:
    """A recorded Python environment: interpreter, platform and installed packages (name -> version)."""

    id: str
    python: str | None
    platform: str | None
    packages: dict = factory(dict)


@record(frozen=True)
class Reproduction:
    """One `roar reproduce` attempt: what was planned and re-run, and the verdict per output."""

    id: str
    created_at: float
    target: str
    mode: str
    ok: bool
    directory: str | None = None
    target_hashes: tuple = ()
    plan: tuple = ()  # ids of the jobs the plan re-ran, in order
    verdicts: tuple = ()  # one plain dict per output: path, expected, actual, verdict


@record(frozen=True)
class LabelVersion:
    """One version of an entity's label document (`roar label`)."""

    version: int
    doc: dict
    created_at: float
