"""The classic pipeline, explicit style: ``extract >> transform >> load``.

Reads a CSV of orders, cleans it, and loads it into the warehouse (a SQLite table). Started by
CSV files landing in ``inbox/`` (see ``sensors/inbox.py``), or by hand::

    evflow run flows/etl.py:etl --param path=data/orders.csv
"""

from __future__ import annotations

import csv
from typing import Any

from evflow import Flow, get_logger, task

from .warehouse import clean_order, upsert_orders


def extract(path: str) -> list[dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    get_logger().info("read %d row(s) from %s", len(rows), path)
    return rows


def transform(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cleaned = [clean_order(r) for r in rows]
    get_logger().info("cleaned %d order(s), total %.2f", len(cleaned),
                      sum(r["total"] for r in cleaned))
    return cleaned


def load(rows: list[dict[str, Any]], path: str) -> dict[str, Any]:
    written = upsert_orders(rows, source=path)
    get_logger().info("loaded %d order(s) into the warehouse", written)
    return {"rows": written, "table": "orders"}


with Flow("etl", params={"path": "data/orders.csv"},
          description="CSV of orders → cleaned → warehouse table") as etl:
    e, t, lo = task(extract), task(transform), task(load, retries=2, pool="warehouse")
    e >> t >> lo
