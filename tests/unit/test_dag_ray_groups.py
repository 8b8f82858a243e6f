"""`roar dag` text: the Ray tasks of one function that one job ran fold into one line
(`N × ray_task step`), with their dependencies and marks summed up; `tasks=True` lists
them one by one. Built from in-memory jobs (the Ray tests check it on real runs)."""

from roar_nb import dag as dag_mod
from roar_nb.model import Edge, Job
from roar_nb.report import dag_text


def _job(seq, kind, step, parent=None, ins=(), outs=(), status="ok", level="complete"):
    return Job(id=f"j{seq}", session_id="s", seq=seq, kind=kind, step=step, command=f"cmd {step}", cwd="/w",
               started_at=float(seq), ended_at=float(seq) + 0.5, exit_code=0 if status == "ok" else 1,
               status=status, backend="preload", capture_level=level, parent_job_id=parent,
               inputs=tuple(Edge("in", p, h, 1) for p, h in ins), outputs=tuple(Edge("out", p, h, 1) for p, h in outs))


def test_tasks_of_one_function_fold_into_one_line():
    jobs = [_job(1, "run", "python prep.py", outs=[("/w/raw", "h0")])]
    jobs.append(_job(2, "run", "python pipeline.py"))
    jobs += [_job(3 + i, "ray_task", "pipeline.featurize", "j2", ins=[("/w/raw", "h0")], outs=[(f"/w/f{i}", f"f{i}")],
                  status="failed" if i == 0 else "ok", level="partial" if i == 1 else "complete") for i in range(200)]
    jobs.append(_job(203, "ray_task", "pipeline.combine", "j2", ins=[(f"/w/f{i}", f"f{i}") for i in range(200)],
                     outs=[("/w/all", "a")]))
    jobs.append(_job(204, "run", "python report.py", ins=[("/w/all", "a")]))
    d = dag_mod.build(jobs)
    folded = dag_text(d).splitlines()
    assert len(folded) == 5, folded
    (line,) = [ln for ln in folded if "featurize" in ln]
    assert line.strip().startswith("@3-@202 200 × ray_task pipeline.featurize <- @1")
    assert "1 failed" in line and "1 partial" in line
    (comb,) = [ln for ln in folded if "combine" in ln]
    assert "<- @3-@202" in comb and comb.count("@3-@202") == 1  # one ref for the group, not 200
    assert "× ray_task" not in comb  # one task of its function: a line of its own
    full = dag_text(d, tasks=True).splitlines()
    assert len(full) == 204 and sum("featurize" in ln for ln in full) == 200


def test_groups_are_per_parent_and_say_when_refs_are_interleaved():
    def task(seq, parent):  # each writes its own file: not re-runs of one another
        return _job(seq, "ray_task", "m.f", parent, outs=[(f"/w/o{seq}", f"h{seq}")])

    jobs = [_job(1, "cell", "c1"), task(2, "j1"), _job(3, "cell", "c2"), task(4, "j1"), task(5, "j3"), task(6, "j3")]
    out = dag_text(dag_mod.build(jobs)).splitlines()
    assert [ln.split()[0] for ln in out] == ["@1", "@2…@4", "@3", "@5-@6"], out
