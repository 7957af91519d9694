"""The long-lived service, ``evflow serve``: the project's configuration (``evflow.toml``), the
loading of its ``flows/`` and ``sensors/``, logging, alert sinks, and the process that runs an
engine with its HTTP server until SIGTERM.
"""

from .serve import build_engine, configure_sensors, serve, tune_gc

__all__ = ["build_engine", "configure_sensors", "serve", "tune_gc"]
