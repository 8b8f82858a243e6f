"""The preload library in real roar kernels and nested `roar run`s.

Issue 11 items 9 and 15, issue 12 item 7: `!busybox` from a traced cell is captured
(handed to `roar-ptrace --attach`), or partial with the reason if ptrace cannot
attach; `roar run` inside a traced command or cell is a job of its own, with its
own I/O, whose parent is the enclosing job; the roar kernel keeps the user's own
LD_PRELOAD; a library path with a space works (CLI and kernel) instead of making
ld.so complain in every process and recording nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

BIN = Path(sys.executable).parent
ROAR = str(BIN / "roar")


def run_cells(cwd: Path, sources: list, kernel: str = "roar", env: dict | None = None) -> list:
    """Execute cells in one real kernel; returns each cell's text output."""
    nb = nbformat.v4.new_notebook()
    for i, src in enumerate(sources):
        c = nbformat.v4.new_code_cell(src)
        c.id = f"c{i}"
        nb.cells.append(c)
    kenv = dict(os.environ)
    kenv.update(env or {})
    client = NotebookClient(nb, kernel_name=kernel, timeout=120, allow_errors=True,
                            resources={"metadata": {"path": str(cwd)}})
    with client.setup_kernel(env=kenv):
        for i, cell in enumerate(nb.cells):
            client.execute_cell(cell, i)
    out = []
    for cell in nb.cells:
        parts = []
        for o in cell.outputs:
            if o.get("output_type") == "stream":
                parts.append(o["text"])
            elif o.get("output_type") == "error":
                parts.append("\n".join(o["traceback"]))
            elif "text/plain" in o.get("data", {}):
                parts.append(o["data"]["text/plain"])
        out.append("".join(parts))
    return out


def all_jobs(cwd: Path) -> list:
    from roar_nb import shapes
    from roar_nb.session import Project

    jobs = Project(cwd).store.jobs()
    return [shapes.job_json(j) for j in jobs]


def base(e) -> str:
    return os.path.basename(e["path"])


# --- static children and nested jobs in a traced cell -------------------------------------

def test_busybox_from_a_traced_cell_is_captured(jupyter_kernels, tmp_path):
    """The cell's shell hands the static program to `roar-ptrace --attach` before its exec."""
    (tmp_path / "in.txt").write_text("x\n")
    out = run_cells(tmp_path, ["%load_ext roar", "%%roar\n!busybox cp in.txt out.txt"])
    assert (tmp_path / "out.txt").read_text() == "x\n", out
    (job,) = all_jobs(tmp_path)
    assert job["capture_level"] == "complete", job["capture_notes"]
    assert [base(e) for e in job["outputs"]] == ["out.txt"]
    assert "in.txt" in {base(e) for e in job["inputs"]}
    assert "capture partial" not in out[1]


def test_busybox_from_a_traced_cell_is_partial_when_ptrace_cannot_attach(jupyter_kernels, tmp_path):
    (tmp_path / "in.txt").write_text("x\n")
    out = run_cells(tmp_path, ["%load_ext roar", "%%roar\n!busybox cp in.txt out.txt"],
                    env={"ROAR_PTRACE_FAULT": "attach"})
    assert (tmp_path / "out.txt").read_text() == "x\n", out
    (job,) = all_jobs(tmp_path)
    assert job["capture_level"] == "partial"
    assert any("busybox started by" in n and "ran untraced" in n for n in job["capture_notes"])
    assert "capture partial" in out[1]


def test_roar_run_in_a_traced_cell_is_a_child_job(jupyter_kernels, tmp_path):
    (tmp_path / "in.txt").write_text("x\n")
    run_cells(tmp_path, ["%load_ext roar", f"%%roar\n!{ROAR} run cp in.txt nested.txt\n"
                                            "open('after.txt', 'w').write(open('nested.txt').read())"])
    jobs = {j["kind"]: j for j in all_jobs(tmp_path)}
    cell, inner = jobs["cell"], jobs["run"]
    assert [base(e) for e in inner["inputs"]] == ["in.txt"]
    assert [base(e) for e in inner["outputs"]] == ["nested.txt"]
    assert inner["parent_job"] == cell["id"]
    # The cell consumed the nested job's output and wrote its own; nested.txt is the child's.
    assert {base(e) for e in cell["outputs"]} == {"after.txt"}
    assert {base(e) for e in cell["inputs"]} == {"nested.txt"}


def test_roar_run_nested_in_roar_run_is_a_child_job(proj):
    (proj.root / "in.txt").write_text("x\n")
    (proj.root / "Makefile").write_text(f"all:\n\t{ROAR} run cp in.txt nested.txt\n\tcat nested.txt > outer.txt\n")
    for args in (["init", "-q"], ["add", "in.txt", "Makefile"],  # roar's own git calls are not I/O
                 ["-c", "user.email=t@e", "-c", "user.name=t", "commit", "-qm", "x"]):
        subprocess.run(["git", *args], cwd=proj.root, check=True)
    make = shutil.which("make")
    argv = [make, "-s"] if make else ["sh", "-c", f"{ROAR} run cp in.txt nested.txt; cat nested.txt > outer.txt"]
    r = proj.roar("run", *argv)
    assert b"1 in, 1 out (nested.txt" in r.stderr
    jobs = proj.dag("--expanded")["jobs"]
    (inner,) = [j for j in jobs if j["parent_job"]]
    (outer,) = [j for j in jobs if not j["parent_job"]]
    assert [base(e) for e in inner["inputs"]] == ["in.txt"]
    assert [base(e) for e in inner["outputs"]] == ["nested.txt"]
    assert inner["parent_job"] == outer["id"] and outer["parent_job"] is None
    assert {base(e) for e in outer["outputs"]} == {"outer.txt"}
    # roar's own reads (its modules, its config) are not the outer job's inputs.
    assert {base(e) for e in outer["inputs"]} <= {"nested.txt", "Makefile"}
    assert outer["capture_level"] == inner["capture_level"] == "complete"


# --- the user's LD_PRELOAD, and a library path with a space -------------------------------

USER_LIB_C = "int roar_test_user_preload_marker(void) { return 42; }\n"


@pytest.fixture
def user_lib(tmp_path) -> str:
    src = tmp_path / "userpre.c"
    src.write_text(USER_LIB_C)
    lib = tmp_path / "libuserpre.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    return str(lib)


def test_roar_kernel_keeps_the_users_ld_preload(jupyter_kernels, tmp_path, user_lib):
    out = run_cells(tmp_path, [
        "import ctypes; print(ctypes.CDLL(None).roar_test_user_preload_marker())",
        "%load_ext roar",
        "%%roar\nopen('x.txt', 'w').write('x')\nprint(open('/proc/self/maps').read().count('libroar_preload.so') > 0)",
    ], env={"LD_PRELOAD": user_lib})
    assert out[0].strip() == "42", out  # the user's library is preloaded in the kernel
    assert out[2].startswith("True\n"), out
    (job,) = all_jobs(tmp_path)
    assert [base(e) for e in job["outputs"]] == ["x.txt"]
    assert (job["backend"], job["capture_level"]) == ("preload", "complete")


@pytest.fixture
def spaced_lib(tmp_path, native_lib) -> str:
    d = tmp_path / "lib dir: with space"
    d.mkdir()
    shutil.copy(native_lib, d / "libroar_preload.so")
    return str(d / "libroar_preload.so")


def test_library_path_with_a_space_cli(proj, spaced_lib):
    (proj.root / "in.txt").write_text("x\n")
    r = proj.roar("run", "sh", "-c", "cat in.txt > out.txt", env={"ROAR_PRELOAD_LIB": spaced_lib})
    assert b"ld.so" not in r.stderr and b"cannot be preloaded" not in r.stderr, r.stderr
    job = proj.dag("--expanded")["jobs"][-1]
    assert [base(e) for e in job["outputs"]] == ["out.txt"]
    assert [base(e) for e in job["inputs"]] == ["in.txt"]
    assert job["capture_level"] == "complete"


def test_library_path_with_a_space_kernel(jupyter_kernels, tmp_path, spaced_lib):
    from roar_nb import kernelspec

    kdir = jupyter_kernels / "share" / "jupyter" / "kernels" / "roarspace"
    kdir.mkdir(parents=True, exist_ok=True)
    (kdir / "kernel.json").write_text(json.dumps(kernelspec.spec("roar (space)", lib=spaced_lib)))
    work = tmp_path / "w"
    work.mkdir()
    (work / "in.txt").write_text("x\n")
    out = run_cells(work, ["%load_ext roar", "%%roar\n!cat in.txt > out.txt"], kernel="roarspace")
    assert "ld.so" not in "".join(out) and "cannot be preloaded" not in "".join(out), out
    (job,) = all_jobs(work)
    assert [base(e) for e in job["outputs"]] == ["out.txt"]
    assert (job["backend"], job["capture_level"]) == ("preload", "complete")


def test_process_left_running_by_a_traced_cell_is_partial(jupyter_kernels, tmp_path):
    out = run_cells(tmp_path, ["%load_ext roar",
                               "%%roar\nimport subprocess\np = subprocess.Popen(['sleep', '60'])",
                               "p.kill(); p.wait()",
                               "%%roar\nsubprocess.run(['true'])"])
    first, second = sorted(all_jobs(tmp_path), key=lambda j: j["started_at"])
    assert first["capture_level"] == "partial", out
    assert any("still running when the job ended" in n for n in first["capture_notes"])
    assert second["capture_level"] == "complete", second["capture_notes"]  # waited for: fine
