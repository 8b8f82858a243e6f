"""House rule (issue 10, ARCHITECTURE.md): capture sources yield a `CaptureResult`; only
`session.record_job` (through `capture.result.fold`) writes a job's backend, level and notes.
A source that appends to a draft's notes itself bypasses the fold (a note said twice, a level
that is not the worst). This reads the sources, as the import contract does for imports."""

from __future__ import annotations

import re
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "roar_nb"
WRITES = re.compile(r"\bdraft\.(capture_notes\.(append|extend)|capture_level\s*=|backend\s*=)")
# record_job itself (a hash it could not take is its own note) and the fold.
ALLOWED = {"session.py": {"record_job"}, "capture/result.py": {"fold"}}


def test_only_record_job_writes_a_drafts_capture_fields():
    offenders = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).as_posix()
        func = None
        for n, line in enumerate(path.read_text().splitlines(), 1):
            m = re.match(r"(?:async )?def (\w+)", line)
            if m:
                func = m.group(1)
            if WRITES.search(line) and func not in ALLOWED.get(rel, ()):
                offenders.append(f"{rel}:{n} ({func}): {line.strip()}")
    assert not offenders, "capture sources must return a CaptureResult instead:\n" + "\n".join(offenders)
