"""The long-lived service, ``evflow serve``: the project's configuration (``evflow.toml``), the
loading of its ``flows/`` and ``sensors/``, logging, alert sinks, and the process that runs an
engine with its HTTP server until SIGTERM.

``build_engine``, ``configure_sensors`` and ``tune_gc`` are imported on first use, so reading
the configuration (the command line does it for every command) does not import the engine and
the HTTP stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["build_engine", "configure_sensors", "tune_gc"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        module = importlib.import_module(f"{__name__}.serve")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
