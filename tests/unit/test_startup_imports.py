"""An embedded engine loads only what it uses: ``import evflow`` and a first run on SQLite
leave Kafka, HTTP, metrics, PostgreSQL, the cluster machinery, cron parsing and OpenTelemetry
unloaded, so a short-lived process starts fast (``python -m benchmarks --only startup``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from benchmarks.startup import one_task_run

# Loaded only by the features that need them.
OPTIONAL = (
    "aiokafka",
    "starlette",
    "uvicorn",
    "httpx",
    "prometheus_client",
    "psycopg",
    "watchfiles",
    "croniter",
    "dateutil",
    "zoneinfo",
    "opentelemetry",  # until an application sets up tracing
    "evflow.http",
    "evflow.service",
    "evflow.sensors.kafka",
    "evflow.sensors.webhook",
    "evflow.sensors.file",
    "evflow.sensors.schedule",
    "evflow.store.postgres",
    "evflow.cluster.node",
    "evflow.run.overflow",
)


def _modules_after_a_run(tmp_path: Path, schedule: str) -> set[str]:
    code = one_task_run("print(json.dumps(sorted(sys.modules)))", schedule)
    done = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "evflow.db")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _loaded(modules: set[str], names: tuple[str, ...]) -> list[str]:
    return [name for name in names if any(m == name or m.startswith(name + ".") for m in modules)]


def test_an_embedded_run_loads_no_optional_module(tmp_path: Path) -> None:
    modules = _modules_after_a_run(tmp_path, "None")
    assert "evflow.engine" in modules
    assert _loaded(modules, OPTIONAL) == []


def test_a_cron_schedule_loads_croniter_when_the_flow_is_defined(tmp_path: Path) -> None:
    modules = _modules_after_a_run(tmp_path, "evflow.Cron('0 2 * * *')")
    assert _loaded(modules, ("croniter", "zoneinfo", "evflow.sensors.schedule")) == [
        "croniter",
        "zoneinfo",
        "evflow.sensors.schedule",
    ]
