"""Installing the "Python 3 (roar)" Jupyter kernelspec: ipykernel with the preload library dormant.

The kernelspec starts `python -m roar_nb.kernelspec -f CONNECTION_FILE`, which
puts the native library in front of the user's own LD_PRELOAD (jemalloc,
tcmalloc... are kept, as `roar run` keeps them) and execs ipykernel in the same
process. kernel.json cannot do that itself: its `env` replaces variables, and
jupyter_client's `${VAR}` substitution leaves the text in place when VAR is
unset. ROAR_PRELOAD_LIB names the library so the kernel finds the same copy; a
path with a space or colon (which ld.so would split) goes in through a symlink
(`preload.injectable_path`). ROAR_CONTROL=host makes the kernel the host of the
control block its descendants follow from its start. Without ROAR_TRACE_DIR the library only checks a
flag; `%load_ext roar` then begins and ends capture around each traced cell
through the library's control functions (capture/inkernel.py). This gives the
kernel complete capture: C extensions and every subprocess.

What it must not do: import IPython, or install anything when the library is
missing (that would give a kernel that silently captures less).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from typing import Optional

from roar_nb.config import ENV_CONTROL, ENV_PRELOAD_LIB
from roar_nb.errors import TracerUnavailable, UsageError


def spec(display_name: str = "Python 3 (roar)", lib: Optional[str] = None,
         python: Optional[str] = None) -> dict:
    """The kernel.json document."""
    if lib is None:
        from roar_nb.capture import preload

        lib = os.path.abspath(preload.library_path())
    return {
        "argv": [python or sys.executable, "-m", "roar_nb.kernelspec", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        # ROAR_CONTROL=host: the library makes the kernel the host of a control block as
        # it loads, so every process the kernel starts follows its cells (rust/EVENTS.md).
        "env": {ENV_PRELOAD_LIB: lib, ENV_CONTROL: "host"},
        "metadata": {"debugger": True, "roar": {"preload": lib}},
    }


def launch(args: list) -> None:
    """The kernel's entry point: ipykernel with the library in front of the user's LD_PRELOAD.

    Execs (same pid: Jupyter signals and kills the process it started). If the library
    cannot be preloaded, the kernel still starts, without it (the magic then falls back to
    python-level capture and says so)."""
    env = dict(os.environ)
    lib = env.get(ENV_PRELOAD_LIB)
    if lib:
        from roar_nb.capture import preload

        try:
            lib = preload.injectable_path(lib)
        except TracerUnavailable as e:
            print(f"roar: {e}", file=sys.stderr)
            lib = None
    if lib:
        env["LD_PRELOAD"] = preload.compose(lib, env.get("LD_PRELOAD"))
    os.execve(sys.executable, [sys.executable, "-m", "ipykernel_launcher", *args], env)


def install(name: str = "roar", display_name: str = "Python 3 (roar)", user: bool = False,
            sys_prefix: bool = False, prefix: Optional[str] = None) -> str:
    """Install the kernelspec; returns the directory it was written to.

    Raises TracerUnavailable when the native library is not built, UsageError
    for conflicting locations."""
    if sum(bool(x) for x in (user, sys_prefix, prefix)) > 1:
        raise UsageError("choose one of --user, --sys-prefix, --prefix")
    from roar_nb.capture import preload

    if preload.problem() is not None:
        raise TracerUnavailable("cannot install the roar kernel: " + preload.problem())
    try:
        preload.injectable_path()  # a path ld.so would split must be linkable from a private dir
    except TracerUnavailable as e:
        raise TracerUnavailable(f"cannot install the roar kernel: {e}") from None
    from jupyter_client.kernelspec import KernelSpecManager

    doc = spec(display_name)
    with tempfile.TemporaryDirectory() as tmp:
        with open(os.path.join(tmp, "kernel.json"), "w") as f:
            json.dump(doc, f, indent=1)
        _copy_logos(tmp)
        try:
            return KernelSpecManager().install_kernel_spec(
                tmp, kernel_name=name, user=user, prefix=sys.prefix if sys_prefix else prefix,
            )
        except OSError as e:
            raise UsageError(f"cannot install kernelspec {name!r}: {e.strerror or e}"
                             + ("" if user or prefix or sys_prefix else " (try --user or --sys-prefix)")
                             ) from None


def _copy_logos(dest: str) -> None:
    try:
        import ipykernel

        res = os.path.join(os.path.dirname(ipykernel.__file__), "resources")
        for f in os.listdir(res):
            if f.startswith("logo"):
                shutil.copy(os.path.join(res, f), dest)
    except (ImportError, OSError):
        pass


if __name__ == "__main__":
    launch(sys.argv[1:])
