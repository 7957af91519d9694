"""The example deployment's warehouse: a SQLite file the flows load orders into."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

WAREHOUSE = Path("var/warehouse.db")


def connect() -> sqlite3.Connection:
    WAREHOUSE.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(WAREHOUSE, timeout=30)
    db.execute(
        "CREATE TABLE IF NOT EXISTS orders (order_id TEXT PRIMARY KEY, customer TEXT, "
        "country TEXT, quantity INTEGER, unit_price REAL, total REAL, source TEXT)"
    )
    return db


def upsert_orders(rows: Iterable[Mapping[str, Any]], source: str) -> int:
    """Insert or replace orders; returns how many rows were written."""
    rows = list(rows)
    with connect() as db:
        db.executemany(
            "INSERT OR REPLACE INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(r["order_id"], r["customer"], r["country"], r["quantity"], r["unit_price"],
              r["total"], source) for r in rows],
        )
    return len(rows)


def clean_order(raw: Mapping[str, Any]) -> dict[str, Any]:
    """One order with typed fields; raises ValueError naming the bad field."""
    try:
        quantity = int(raw["quantity"])
        unit_price = float(raw["unit_price"])
    except KeyError as exc:
        raise ValueError(f"order {raw.get('order_id')!r} has no field {exc}") from None
    except (TypeError, ValueError):
        raise ValueError(
            f"order {raw.get('order_id')!r}: quantity/unit_price are not numbers"
        ) from None
    return {
        "order_id": str(raw["order_id"]),
        "customer": str(raw.get("customer", "")).strip(),
        "country": str(raw.get("country", "")).strip().upper(),
        "quantity": quantity,
        "unit_price": unit_price,
        "total": round(quantity * unit_price, 2),
    }
