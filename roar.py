"""`%load_ext roar` entry point: re-exports the IPython extension hooks of roar_nb."""

from roar_nb import load_ipython_extension, unload_ipython_extension

__all__ = ["load_ipython_extension", "unload_ipython_extension"]
