"""Installing the "Python 3 (roar)" Jupyter kernelspec: ipykernel with the preload library dormant.

The kernelspec puts the native library in LD_PRELOAD (and ROAR_PRELOAD_LIB, so
the kernel finds the same copy), and ROAR_CONTROL=host (the kernel hosts the
control block its descendants follow from its start). Without ROAR_TRACE_DIR the library only checks
a flag; `%load_ext roar` then begins and ends capture around each traced cell
through the library's control functions (capture/inkernel.py). This gives the
kernel complete capture: C extensions and every subprocess.

What it must not do: start kernels, import IPython, or install anything when
the library is missing (that would give a kernel that silently captures less).
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
        "argv": [python or sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        # ROAR_CONTROL=host: the library makes the kernel the host of a control block as
        # it loads, so every process the kernel starts follows its cells (rust/EVENTS.md).
        "env": {"LD_PRELOAD": lib, ENV_PRELOAD_LIB: lib, ENV_CONTROL: "host"},
        "metadata": {"debugger": True, "roar": {"preload": lib}},
    }


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
