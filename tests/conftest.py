"""Shared fixtures: the native tracer (built here if missing, never skipped) and scratch projects."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
NATIVE = REPO / "roar_nb" / "_native" / "libroar_preload.so"
BIN = Path(sys.executable).parent


def ensure_native() -> Path:
    """Build the tracers `roar run` uses (the preload library, and roar-ptrace, which auto picks
    for static programs) and keep the packaged copies fresh; a build failure fails the tests."""
    release = REPO / "rust" / "target" / "release"
    subprocess.run(["cargo", "build", "--release", "--quiet", "-p", "roar-preload", "-p", "roar-ptrace"],
                   cwd=REPO / "rust", check=True)
    NATIVE.parent.mkdir(exist_ok=True)
    for built, dest in ((release / NATIVE.name, NATIVE), (release / "roar-ptrace", NATIVE.parent / "roar-ptrace")):
        if not dest.exists() or dest.read_bytes() != built.read_bytes():
            shutil.copy2(built, dest)
    return NATIVE


@pytest.fixture(scope="session")
def native_lib() -> Path:
    return ensure_native()


def pytest_collection_modifyitems(config, items):
    """Every test that starts real Jupyter kernels is `slow` (the full tier, `make test`);
    whole slow files (browser, strace corpus, S3) say so with their own `pytestmark`."""
    for item in items:
        if "jupyter_kernels" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


def roar_cmd() -> list[str]:
    exe = BIN / "roar"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "roar_nb.cli"]


class Proj:
    """A scratch project directory with `.roar/`, and a way to run `roar` in it."""

    def __init__(self, root: Path):
        self.root = root

    def roar(self, *args, check=True, env=None, **kw) -> subprocess.CompletedProcess:
        e = dict(os.environ)
        e.pop("ROAR_PROJECT", None)
        e.update(env or {})
        p = subprocess.run([*roar_cmd(), *map(str, args)], cwd=kw.pop("cwd", self.root), env=e,
                           capture_output=True, **kw)
        if check and p.returncode != 0:
            raise AssertionError(f"roar {args} exited {p.returncode}\nstdout: {p.stdout!r}\nstderr: {p.stderr!r}")
        return p

    def dag(self, *extra) -> dict:
        import json

        return json.loads(self.roar("dag", "--json", *extra).stdout)

    def path(self, *parts) -> str:
        return str(self.root.joinpath(*parts))


@pytest.fixture
def proj(tmp_path, native_lib) -> Proj:
    root = tmp_path / "proj"
    root.mkdir()
    p = Proj(root)
    p.roar("init", "-n")
    return p


@pytest.fixture(scope="session")
def jupyter_kernels(tmp_path_factory, native_lib):
    """The roar kernel (preload dormant) and a plain python3 kernel, in a private JUPYTER_PATH."""
    import json

    from roar_nb import kernelspec

    prefix = tmp_path_factory.mktemp("jupyter")
    kernelspec.install(name="roar", prefix=str(prefix))
    plain = prefix / "share" / "jupyter" / "kernels" / "python3"
    plain.mkdir(parents=True)
    (plain / "kernel.json").write_text(json.dumps({
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Python 3 (plain)", "language": "python"}))
    mp = pytest.MonkeyPatch()
    mp.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    mp.delenv("ROAR_PROJECT", raising=False)
    mp.delenv("JPY_SESSION_NAME", raising=False)
    yield prefix
    mp.undo()


def execute_notebook(path: Path, kernel: str = "roar", cwd: Path | None = None):
    """Run a notebook file top to bottom in a real kernel; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(nb, kernel_name=kernel, timeout=300,
                   resources={"metadata": {"path": str(cwd or path.parent)}}).execute()
    return nb
