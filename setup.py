"""Build step for the JupyterLab extension; everything else is declared in pyproject.toml.

Why a setup.py: the lab extension's assets (labextension/, TypeScript) must be
built by the project's own Python build and land inside the package
(roar_nb/labextension/), and JupyterLab / jupyter_server only look for them in
the environment's share/ and etc/ directories. setuptools installs `data_files`
there for wheels *and* for editable installs (the Makefile's `pip install -e`),
and data_files listing hashed asset names can only be computed after the build,
which pyproject.toml cannot express.

What it must not do: rebuild when nothing changed (the JS build takes ~20 s; a
stamp comparison of sources against the built package.json skips it), or
silently install without the panel (no npm and no prebuilt assets is an error).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import setup
from setuptools.dist import Distribution

HERE = Path(__file__).resolve().parent
EXT_SRC = HERE / "labextension"
EXT_OUT = HERE / "roar_nb" / "labextension"  # jupyterlab.outputDir in labextension/package.json
EXT_NAME = "roar-nb"


def _newest_source() -> float:
    files = [EXT_SRC / n for n in ("package.json", "package-lock.json", "tsconfig.json")]
    for sub in ("src", "style", "scripts"):
        files += [p for p in (EXT_SRC / sub).rglob("*") if p.is_file() and p.name != "_workerSource.ts"]
    return max(p.stat().st_mtime for p in files if p.exists())


def _core_path() -> str:
    """JupyterLab's core package.json (shared-module versions the extension must match)."""
    try:
        import jupyterlab
    except ImportError:
        sys.exit("roar-nb: building the lab extension needs jupyterlab in the build environment")
    return str(Path(jupyterlab.__file__).parent / "staging")


def build_labextension() -> None:
    built = EXT_OUT / "package.json"
    if not (EXT_SRC / "package.json").exists():
        if built.exists():
            return  # an sdist with prebuilt assets and without the TypeScript sources
        sys.exit("roar-nb: neither labextension/ sources nor prebuilt assets in roar_nb/labextension/")
    if built.exists() and built.stat().st_mtime >= _newest_source():
        return
    npm = shutil.which("npm")
    if npm is None:
        sys.exit("roar-nb: npm (Node.js >= 18) is needed to build the JupyterLab extension")

    def run(*cmd: str) -> None:
        print("roar-nb: " + " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=EXT_SRC, check=True)

    lock = EXT_SRC / "node_modules" / ".package-lock.json"
    if not lock.exists() or lock.stat().st_mtime < (EXT_SRC / "package-lock.json").stat().st_mtime:
        run(npm, "ci", "--no-audit", "--no-fund")
    run(npm, "run", "build:worker")
    run(npm, "run", "build:lib")
    if EXT_OUT.exists():
        shutil.rmtree(EXT_OUT)  # hashed file names: drop the previous build's assets
    run("node", "node_modules/@jupyterlab/builder/lib/build-labextension.js", "--core-path", _core_path(), ".")
    built.touch()


def data_files() -> list[tuple[str, list[str]]]:
    """The built assets -> share/jupyter/labextensions/roar-nb/; the server extension switched on."""
    out: dict[str, list[str]] = {}
    for p in sorted(EXT_OUT.rglob("*")):
        if p.is_file():
            dest = Path("share/jupyter/labextensions") / EXT_NAME / p.parent.relative_to(EXT_OUT)
            out.setdefault(str(dest), []).append(str(p.relative_to(HERE)))
    files = list(out.items())
    # Installed as etc/jupyter/jupyter_server_config.d/roar_nb.json: the server extension is on.
    files.append(("etc/jupyter/jupyter_server_config.d", ["roar_nb/server/roar_nb.json"]))
    return files


# Only the commands that produce an installable artefact need the JS build
# (not `egg_info` alone, which pip also runs to read metadata).
if any(a in sys.argv for a in ("bdist_wheel", "editable_wheel", "build", "build_py", "install", "develop", "sdist")) \
        or os.environ.get("ROAR_BUILD_LABEXTENSION") == "1":
    build_labextension()

class _Distribution(Distribution):
    """setuptools' editable_wheel installs data files only if `dist.has_data()` is true,
    but Distribution only defines `has_data_files()` (setuptools <= 84), so editable
    installs silently skip data_files. Defining the alias makes `pip install -e .`
    install the lab extension and the server config like a wheel install does."""

    def has_data(self) -> bool:
        return self.has_data_files()


setup(data_files=data_files(), distclass=_Distribution)
