"""Started by a webhook: compute a region's sales report from the warehouse.

    curl -X POST http://127.0.0.1:8000/hooks/reports -H 'Content-Type: application/json' \\
         -d '{"country": "US"}'
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evflow import flow, get_logger, task

from .warehouse import connect


@task
def query(country: str) -> dict[str, Any]:
    with connect() as db:
        where, args = ("WHERE country = ?", (country.upper(),)) if country != "ALL" else ("", ())
        n, total = db.execute(f"SELECT COUNT(*), COALESCE(SUM(total), 0) FROM orders {where}",
                              args).fetchone()
    return {"country": country.upper(), "orders": n, "revenue": round(total, 2)}


@task
def publish(summary: dict[str, Any]) -> str:
    out = Path("var/reports") / f"{summary['country'].lower()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(summary, indent=2))
    get_logger().info("report written to %s", out)
    return str(out)


@flow
def report(country: str = "ALL") -> None:
    """Sales report of one country (or ALL)."""
    publish(query(country))
