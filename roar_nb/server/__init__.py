"""The jupyter_server extension: roar's REST API under /roar/api/ for the JupyterLab panel.

It owns the wiring only (entry points and handler registration); the handlers
live in `handlers.py`. It is enabled automatically by the config file that the
Python install copies from roar_nb/server/roar_nb.json into
etc/jupyter/jupyter_server_config.d/ (setup.py, data files).
It must not be imported by anything outside a Jupyter server: this package is
the only importer of tornado in roar-nb.
"""

from __future__ import annotations


def _jupyter_server_extension_points() -> list[dict]:
    return [{"module": "roar_nb.server"}]


def _load_jupyter_server_extension(serverapp) -> None:
    from roar_nb.server.handlers import setup_handlers

    setup_handlers(serverapp)
    serverapp.log.info("roar-nb: lineage API at %sroar/api/", serverapp.base_url)


# Older notebook-server spelling, kept so `jupyter server extension list` finds it either way.
load_jupyter_server_extension = _load_jupyter_server_extension
