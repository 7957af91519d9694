"""``evflow serve``: the long-lived service around an :class:`~evflow.engine.Engine`.

Loads the project (``flows/``, ``sensors/``, ``evflow.toml`` with ``EVFLOW_*`` overrides),
starts the engine and the HTTP server, prints what listens where, and on SIGTERM or SIGINT
shuts down in two phases: intake stops (HTTP first), running tasks get the grace period, the
rest are cancelled and recorded as interrupted, to resume at the next start.

Paths in sensors and in ``evflow.toml`` are relative to the project folder: the service works
from there.
"""

from __future__ import annotations

import errno
import gc
import logging
import os
import signal
import sys
from pathlib import Path
from typing import TextIO

import anyio

from .. import tracing
from ..engine import Engine
from ..errors import ConfigError, EvflowError, LoadError
from ..run.capture import capture_task_output
from ..store import is_postgres
from .config import Config, load_config, resolve_store, setting
from .loader import Deployment, load_project
from .logs import configure_logging

__all__ = ["build_engine", "configure_sensors", "serve", "tune_gc"]

log = logging.getLogger("evflow.service")


def configure_sensors(dep: Deployment, cfg: Config) -> list[str]:
    """Fill sensors' unset connection settings from the config; returns warnings."""
    from ..sensors.kafka import KafkaSensor
    from ..sensors.webhook import WebhookSensor

    warnings = []
    for sensor in dep.sensors:
        if isinstance(sensor, KafkaSensor):
            if not sensor.bootstrap_servers and cfg.kafka.bootstrap:
                sensor.bootstrap_servers = cfg.kafka.bootstrap
            if cfg.kafka.fetch_max_wait_ms is not None:
                sensor.fetch_max_wait_ms = cfg.kafka.fetch_max_wait_ms
            security = cfg.kafka.security()
            if security and not sensor.security:
                sensor.security = security
        elif isinstance(sensor, WebhookSensor):
            hook = cfg.webhooks.get(sensor.name)
            if hook is not None:
                sensor.secret = sensor.secret or hook.secret
                sensor.token = sensor.token or hook.token
                if hook.scheme is not None:
                    sensor.scheme = hook.scheme
            if not sensor.secret and not sensor.token:
                warnings.append(
                    f"webhook {sensor.name!r} accepts unauthenticated requests: set "
                    f"[webhooks.{sensor.name}] secret or token in evflow.toml"
                )
    return warnings


SENSOR_WAIT_S = 1.0  # how long the service waits for sensors to listen before it serves


def build_engine(cfg: Config, dep: Deployment, *, store: str | None = None) -> Engine:
    """An engine with the project's flows and rules registered."""
    engine = Engine(
        store or cfg.store_location,
        pools=cfg.pools,
        max_tasks=cfg.engine.max_tasks,
        max_threads=cfg.engine.max_threads,
        max_backlog=cfg.engine.max_backlog,
        grace_period_s=cfg.engine.grace_period_s,
        task_log_level=logging.getLevelName(cfg.engine.task_log_level.upper()),
        cluster=cfg.cluster.options(),
    )
    # Webhooks are served as soon as the store is open: a sensor slow to start (a Kafka group
    # waiting out a dead member's session) keeps starting in the background.
    engine.sensor_start_timeout_s = SENSOR_WAIT_S
    for fl in dep.flows.values():
        engine.add(fl)
    for rule in dep.rules:
        if rule.flow is None:
            raise ConfigError(f"rule {rule!r} in sensors/ names no flow: pass flow='NAME'")
        engine.add_rule(rule.flow, rule)
    for sensor in dep.sensors:
        engine.add_sensor(sensor)
    return engine


def _summary(
    cfg: Config, dep: Deployment, engine: Engine, url: str | None, warnings: list[str], out: TextIO
) -> None:
    w = out.write
    w(f"evflow serving {dep.root}\n")
    w(f"  config   {cfg.source}\n")
    w(f"  store    {engine.store.describe()}\n")
    if cfg.store.keep_runs_days:
        w(
            f"  keeps    {cfg.store.keep_runs_days:g} days of finished runs and audit records "
            "(older ones pruned hourly)\n"
        )
    if engine.membership is not None:
        opts = engine.membership.options
        w(
            f"  cluster  instance {engine.membership.id} (heartbeat every {opts.heartbeat_s:g}s, "
            f"dead after {opts.ttl_s:g}s; see `evflow cluster`)\n"
        )
    elif not cfg.cluster.enabled and is_postgres(engine.store.describe()):
        w("  cluster  off ([cluster] enabled = false): this instance alone runs the store\n")
    if url:
        w(f"  http     {url}  (UI {url}/ui, API {url}/api, metrics {url}/metrics)\n")
    else:
        w("  http     off ([http] enabled = false)\n")
    w(
        f"  flows    {len(dep.flows)}: "
        + ", ".join(
            f"{f.name}" + (f" [{f.schedule.describe()}]" if f.schedule else "")
            for f in dep.flows.values()
        )
        + "\n"
    )
    for s in engine.describe_sensors():
        status = s["status"]
        mark = {"listening": "on ", "starting": "…  "}.get(status, "OFF")
        where = s["describe"]
        if s["source"].startswith("webhook/") and url:
            where = f"POST {url}/hooks/{s['name']}"
        w(
            f"  {mark}      {s['name']:<22} {where}"
            + (f"  — {status}" if status != "listening" else "")
            + "\n"
        )
    if tracing.enabled():
        w(f"  tracing  OTLP to {cfg.tracing.endpoint or 'the OTEL_EXPORTER_OTLP_* endpoint'}\n")
    for warning in warnings:
        w(f"  warning  {warning}\n")
    w(
        "  stop with Ctrl-C or SIGTERM (running tasks get "
        f"{cfg.engine.grace_period_s:g}s to finish)\n"
    )
    out.flush()


async def _serve(cfg: Config, dep: Deployment, warnings: list[str], store: str | None) -> None:
    from .telemetry import setup_tracing

    stop_tracing = setup_tracing(cfg.tracing, os.environ)
    try:
        await _serve_engine(cfg, dep, warnings, store)
    finally:
        if stop_tracing is not None:
            await anyio.to_thread.run_sync(stop_tracing)  # exports what is still buffered


async def _serve_engine(
    cfg: Config, dep: Deployment, warnings: list[str], store: str | None
) -> None:
    from ..http.app import build_app, run_app_services
    from ..http.server import HttpServer
    from .alerts import AlertManager
    from .pruning import Pruner

    engine = build_engine(cfg, dep, store=store)
    alerts = AlertManager(cfg.alerts).attach(engine) if cfg.alerts else None
    # The alert sender outlives the engine, so runs ending in the grace period still alert.
    async with anyio.create_task_group() as alert_tg:
        if alerts is not None:
            await alert_tg.start(alerts.run)
        try:
            async with engine, anyio.create_task_group() as tg:
                if cfg.store.keep_runs_days:
                    await tg.start(Pruner(engine.store, cfg.store.keep_runs_days).run)
                url = None
                if cfg.http.enabled:
                    app = build_app(engine, cfg)
                    await tg.start(run_app_services, app)
                    port = await tg.start(HttpServer().serve, app, cfg.http.host, cfg.http.port)
                    host = cfg.http.host if ":" not in cfg.http.host else f"[{cfg.http.host}]"
                    url = f"http://{host}:{port}"
                    if alerts is not None:
                        alerts.base_url = url
                    if engine.membership is not None:
                        await engine.membership.advertise(url)
                # The handlers are in place before the summary says the service is up: a
                # SIGTERM sent as soon as it is printed gets the graceful shutdown.
                with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    _summary(cfg, dep, engine, url, warnings, sys.stdout)
                    async for signum in signals:
                        log.info(
                            "received %s: stopping intake, then running tasks get %.0fs",
                            signal.Signals(signum).name,
                            cfg.engine.grace_period_s,
                        )
                        break
                tg.cancel_scope.cancel()
        finally:
            if alerts is not None:
                alerts.close()
    log.info("evflow stopped")


def tune_gc() -> None:
    """Tune Python's cyclic garbage collector for a long-lived engine process.

    An engine keeps many long-lived objects (flows, records, waiting tasks); with the default
    thresholds the collector re-scans them thousands of times a second under load (20-35 % of
    CPU in the benchmarks' profiles). Objects alive after start-up are frozen out of
    collection, and young collections run every 20,000 allocations instead of 700. Called by
    ``evflow serve``; an embedding application decides for its own process.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 20, 20)


def serve(
    project: str | None = None,
    *,
    host: str | None = None,
    port: int | str | None = None,
    store: str | None = None,
    log_format: str = "auto",
    log_level: str = "INFO",
) -> int:
    """Run the service until SIGTERM/SIGINT; returns the process exit status."""
    root = Path(project or ".").resolve()
    configure_logging(log_format, log_level)
    capture_task_output()  # a task's print() and logging go to its attempt, not into our log
    errors: list[LoadError] = []
    try:
        if not root.is_dir():
            raise LoadError(f"{root}: no such project folder")
        os.chdir(root)
        cfg = load_config(root)
        if host is not None:
            cfg.http.host = host
        if port is not None:
            cfg.http.port = setting("http", "port", port, "--port")
        if store is not None:
            store = resolve_store(store, Path.cwd())
        dep = load_project(root, errors=errors)
        if errors:
            for e in errors:
                print(f"evflow: error: {e}", file=sys.stderr)
            print(
                f"evflow: {len(errors)} problem(s) in {root}; fix them and start again "
                "(`evflow validate` checks without starting)",
                file=sys.stderr,
            )
            return 2
        warnings = configure_sensors(dep, cfg)
        tune_gc()
        anyio.run(_serve, cfg, dep, warnings, store)
    except (EvflowError, OSError) as exc:
        print(f"evflow: error: {start_up_error(exc)}", file=sys.stderr)
        return 2
    except BaseExceptionGroup as group:
        # A task group's failure to start: one line per cause, when each is a known one.
        causes = leaves(group)
        if not all(isinstance(c, EvflowError | OSError) for c in causes):
            raise
        for cause in dict.fromkeys(start_up_error(c) for c in causes):
            print(f"evflow: error: {cause}", file=sys.stderr)
        return 2
    return 0


def leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    """The exceptions in ``group`` and its nested groups."""
    out: list[BaseException] = []
    for exc in group.exceptions:
        out.extend(leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc])
    return out


_CHANGE_PORT = (
    "choose another port with --port N, [http] port in evflow.toml or EVFLOW_HTTP_PORT "
    "(0 picks a free one)"
)


def start_up_error(exc: BaseException) -> str:
    """One line saying what stopped the service from starting, and what to do."""
    if not isinstance(exc, OSError) or exc.errno is None:
        return str(exc)
    what = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return f"{what}: another process listens there; stop it, or {_CHANGE_PORT}"
    if exc.errno == errno.EACCES:
        return f"{what}: ports below 1024 need privileges; {_CHANGE_PORT}"
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"{what}: that is not an address of this machine; set [http] host "
            "(or --host) to one of its addresses, e.g. 127.0.0.1"
        )
    return what
