"""One capture result: what every capture source hands to `session.record_job`.

Preload and ptrace (through `run_command`), the kernel's cell capture and the S3
proxy each yield a `CaptureResult`: the reduced events (`events.Reduced`, None
for a source that sees no files), the backend that captured them (None: the
source does not decide it), the capture level it can vouch for, notes naming what
it did not see, and S3 edges. `record_job` alone folds results into a job's
level and notes (`fold`); sources never touch a draft's level or notes.

Must not: hash, read the store, print, or import anything heavy (it is on the
`roar run` path).
"""

from __future__ import annotations

from roar_nb.model import CAPTURE_COMPLETE, CAPTURE_PARTIAL, CAPTURE_PYTHON, factory, record

# Folding keeps the worst level: a job is only as complete as the least complete source.
_RANK = {CAPTURE_COMPLETE: 0, CAPTURE_PYTHON: 1, CAPTURE_PARTIAL: 2}


@record
class CaptureResult:
    """What one capture source saw of one job."""

    events: object = None  # events.Reduced, or None (e.g. the S3 proxy)
    backend: str | None = None
    capture_level: str = CAPTURE_COMPLETE
    notes: list = factory(list)
    s3: tuple | None = None  # (input edges, output edges, {hash: digests}) from proxy.to_edges

    def missed(self, note: str) -> None:
        """Something this source knows it did not see: the note, and the job is partial."""
        self.notes.append(note)
        self.capture_level = CAPTURE_PARTIAL


def worst(a: str, b: str) -> str:
    """The less complete of two capture levels."""
    return a if _RANK.get(a, 2) >= _RANK.get(b, 2) else b


def fold(draft, result: CaptureResult) -> None:
    """Fold one source's backend, level and notes into a job draft (notes already there
    are not repeated). Called by `session.record_job` only."""
    if result.backend is not None:
        draft.backend = result.backend
    draft.capture_level = worst(draft.capture_level, result.capture_level)
    draft.capture_notes.extend(n for n in result.notes if n not in draft.capture_notes)
