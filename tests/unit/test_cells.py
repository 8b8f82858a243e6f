"""The cell recorder without a kernel (issue 10): what a traced cell becomes (step identity,
command, preamble, status, notes) and how the capture results of a cell (the kernel capture,
the S3 proxy) are folded by `record_job` alone. Real capture: the audit-hook capture of this
process, real files, a real store."""

from __future__ import annotations

from roar_nb.capture.inkernel import CellCapture
from roar_nb.capture.result import CaptureResult, fold, worst
from roar_nb.cells import CellRecorder, cell_step, first_line, is_own_cell
from roar_nb.model import CAPTURE_COMPLETE, CAPTURE_PARTIAL, CAPTURE_PYTHON
from roar_nb.session import JobDraft, Project


def _recorder(tmp_path, s3_edges=None):
    project, _ = Project.init(tmp_path)
    nb = str(tmp_path / "work.ipynb")
    session = project.store.new_session("notebook", name="work.ipynb", notebook=nb)
    capture = CellCapture((project.roar_dir,))
    capture.ignore_read = project.read_filter()
    return project, CellRecorder(project, session, capture, notebook=nb, kernel_id="k-1", s3_edges=s3_edges)


def test_a_cell_becomes_a_job(tmp_path):
    project, rec = _recorder(tmp_path)
    rec.note_untraced("import os\nx = 1", True)
    rec.note_untraced("%roar on", True)  # roar's own cell: not part of the kernel's state
    rec.note_untraced("boom()", False)  # failed: it defined nothing a reproduction needs
    rec.note_untraced("   \n", True)
    (tmp_path / "in.txt").write_text("data")
    src = "%%roar\n# upper-case it\nopen('out.txt', 'w').write(open('in.txt').read().upper())"
    rec.begin(src, "cell-a", str(tmp_path))
    assert rec.active
    with open(tmp_path / "in.txt") as f:
        data = f.read()
    with open(tmp_path / "out.txt", "w") as f:
        f.write(data.upper())
    job, _ = rec.finish(False, 3)
    assert not rec.active
    assert (job.seq, job.kind, job.step, job.cell_id, job.status, job.exit_code) == (1, "cell", "cell-a", "cell-a", "ok", 0)
    assert job.command == "# upper-case it" and job.source == src
    assert job.preamble == "import os\nx = 1" and job.execution_count == 3 and job.kernel_id == "k-1"
    assert {e.path for e in job.inputs} == {str(tmp_path / "in.txt")}
    assert {e.path for e in job.outputs} == {str(tmp_path / "out.txt")}
    assert job.capture_level in (CAPTURE_COMPLETE, CAPTURE_PYTHON) and job.backend
    assert project.store.jobs(rec.session.id)[0].id == job.id

    # Without a cell id (terminal IPython) the source is the step: a re-run is the same step.
    rec.begin("y = 2", None, str(tmp_path))
    j2, _ = rec.finish(True, 4)
    assert j2.step == cell_step(None, "y = 2") and j2.step.startswith("src:")
    assert (j2.status, j2.exit_code, j2.preamble) == ("failed", 1, None)  # the preamble went to the first cell
    rec.begin("y = 2", None, str(tmp_path))
    j3, _ = rec.finish(True, None, finished=False)
    assert j3.step == j2.step and "the cell did not finish normally" in j3.capture_notes


def test_the_s3_result_is_folded_by_record_job(tmp_path):
    seen = []

    def s3_edges(t0, t1):
        seen.append((t0, t1))
        return CaptureResult(s3=([], [], {}), capture_level=CAPTURE_PARTIAL, notes=["the S3 proxy has stopped"])

    _, rec = _recorder(tmp_path, s3_edges)
    rec.begin("z = 3", "c", str(tmp_path))
    job, _ = rec.finish(False, 1)
    assert job.capture_level == CAPTURE_PARTIAL and job.capture_notes[-1] == "the S3 proxy has stopped"
    assert len(seen) == 1 and 0 < seen[0][0] <= seen[0][1]


def test_fold_keeps_the_worst_level_and_each_note_once():
    d = JobDraft(kind="run", command="x", cwd="/", started_at=0.0, session_id="s", capture_notes=["a"])
    fold(d, CaptureResult(backend="ptrace", capture_level=CAPTURE_PYTHON, notes=["a", "b"]))
    assert (d.backend, d.capture_level, d.capture_notes) == ("ptrace", CAPTURE_PYTHON, ["a", "b"])
    fold(d, CaptureResult(capture_level=CAPTURE_COMPLETE))
    assert (d.backend, d.capture_level) == ("ptrace", CAPTURE_PYTHON)  # no backend: kept; better level: ignored
    fold(d, CaptureResult(capture_level=CAPTURE_PARTIAL))
    assert d.capture_level == CAPTURE_PARTIAL
    assert worst(CAPTURE_COMPLETE, CAPTURE_PARTIAL) == worst(CAPTURE_PARTIAL, CAPTURE_PYTHON) == CAPTURE_PARTIAL


def test_cell_helpers():
    assert is_own_cell("%roar on\n# c\n%load_ext roar") and not is_own_cell("%%roar\nx = 1")
    assert not is_own_cell("") and not is_own_cell("%roar on\nx = 1")
    assert first_line("%%roar\n\n  x = 1  \ny") == "x = 1"
    assert cell_step("abc", "x") == "abc" and cell_step(None, "x") == cell_step(None, "x") != cell_step(None, "y")
