"""roar-nb: lineage and reproducibility tracking for notebooks and scripts.

This module stays import-light: the CLI's hot path imports it, so nothing here
may pull in IPython, sqlite_utils or other heavy packages at import time.
"""

__version__ = "0.1.0"


def load_ipython_extension(ipython):  # pragma: no cover - thin delegation
    """Called by `%load_ext roar`: register the %roar / %%roar magics."""
    from roar_nb import magics

    magics.load(ipython)


def unload_ipython_extension(ipython):  # pragma: no cover - thin delegation
    """Called by `%unload_ext roar`: stop capture and remove hooks."""
    from roar_nb import magics

    magics.unload(ipython)
