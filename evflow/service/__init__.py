"""``evflow serve``: the long-running service around an :class:`~evflow.Engine`.

``config`` reads ``evflow.toml`` and ``EVFLOW_*``, ``loader`` imports a project's ``flows/`` and
``sensors/``, ``serve`` wires the engine, HTTP and alerts and owns signals and logging set-up,
``alerts`` posts alerts to sinks, ``logs`` formats the service's own log lines.
"""

from __future__ import annotations

from typing import Any

__all__ = ["tune_gc"]


def __getattr__(name: str) -> Any:
    # ``evflow.service.tune_gc`` without importing the whole service (HTTP, engine) up front.
    if name == "tune_gc":
        from .serve import tune_gc

        return tune_gc
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
