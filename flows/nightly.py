"""Decorator style: every night, load every CSV under ``data/`` into the warehouse.

One mapped ``load_file`` task per file (retried, and at most two at once through the
``warehouse`` pool), then a summary. ``evflow run flows/nightly.py:nightly_load`` runs it now.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from evflow import Cron, flow, get_logger, task

from .warehouse import clean_order, upsert_orders


@task
def list_csv(folder: str) -> list[str]:
    files = sorted(str(p) for p in Path(folder).glob("*.csv"))
    get_logger().info("%d CSV file(s) in %s", len(files), folder)
    return files


@task(retries=3, retry_delay=0.5, pool="warehouse")
def load_file(path: str) -> int:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [clean_order(r) for r in csv.DictReader(f)]
    return upsert_orders(rows, source=path)


@task
async def summarize(counts: list[int]) -> dict[str, Any]:
    summary = {"files": len(counts), "rows": sum(counts)}
    get_logger().info("nightly load: %d file(s), %d row(s)", summary["files"], summary["rows"])
    return summary


@flow(schedule=Cron("0 2 * * *", tz="Europe/Paris"), max_active_runs=1)
def nightly_load(folder: str = "data") -> None:
    """Load every CSV of a folder into the warehouse."""
    summarize(load_file.map(list_csv(folder)))
