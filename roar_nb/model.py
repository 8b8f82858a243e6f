"""Plain data passed between roar-nb's layers: frozen dataclasses, no behaviour.

Capture produces `Event`s, the session turns them into a `Job` with `Edge`s to
`Artifact`s, the store persists them and the use cases read them back. Nothing
here touches the disk, the database or a front end.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field


def new_id() -> str:
    """A random 128-bit id as 32 hex digits (jobs, sessions, reproductions).

    Not uuid.uuid4(): importing uuid costs ~20 ms of `roar run`'s start-up."""
    return os.urandom(16).hex()

# Event operations (see rust/EVENTS.md). Single ASCII letters so the native
# wire format and the in-process (audit hook) backend share one vocabulary.
OP_READ = "R"
OP_WRITE = "W"
OP_UPDATE = "U"  # opened read-write; written only if it changed
OP_DELETE = "D"
OP_MOVE = "M"
OP_LINK = "L"
OP_EXEC = "X"

# Capture levels a job can record.
CAPTURE_COMPLETE = "complete"
CAPTURE_PARTIAL = "partial"
CAPTURE_PYTHON = "python-only"


@dataclass(frozen=True)
class Event:
    """One observed file operation. `path`/`path2` are absolute, str with surrogateescape."""

    op: str
    path: str
    t_ns: int = 0
    size: int = 0
    mtime_ns: int = -1
    path2: str | None = None
    pid: int = 0


@dataclass(frozen=True)
class Artifact:
    """Content-addressed data: `hash` is the blake3 hex digest of the bytes."""

    hash: str
    size: int
    digests: dict = field(default_factory=dict)  # extra algo -> value (sha256, s3 etag, ...)


@dataclass(frozen=True)
class Edge:
    """A job read (`direction == "in"`) or wrote (`"out"`) an artifact at a path."""

    direction: str
    path: str
    hash: str | None  # None when the file could not be read (vanished, unreadable)
    size: int = 0
    changed: bool = False  # input modified while the job ran
    note: str | None = None


@dataclass(frozen=True)
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
    notebook: str | None = None
    cell_id: str | None = None
    execution_count: int | None = None
    kernel_id: str | None = None
    git_commit: str | None = None
    git_branch: str | None = None
    git_dirty: bool | None = None
    git_root: str | None = None
    env_id: str | None = None
    inputs: tuple = ()  # Edge, direction "in"
    outputs: tuple = ()  # Edge, direction "out"

    @property
    def ref(self) -> str:
        """The user-facing reference: @N, or @BN for build steps."""
        return f"@B{self.seq}" if self.kind == "build" else f"@{self.seq}"

    @property
    def duration(self) -> float:
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True)
class Session:
    """A group of jobs: the CLI's active session, or one notebook's session."""

    id: str
    created_at: float
    kind: str  # "cli" | "notebook"
    name: str | None = None
    notebook: str | None = None
