"""Started by each message on the Kafka topic ``orders``: validate, price, store one order."""

from __future__ import annotations

from typing import Any

from evflow import flow, task

from .warehouse import clean_order, upsert_orders


@task
async def validate(order: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(order, dict) or "order_id" not in order:
        raise ValueError(f"not an order: {order!r}")
    return order


@task
async def price(order: dict[str, Any]) -> dict[str, Any]:
    return clean_order(order)


@task(retries=3, retry_delay=0.5, pool="warehouse")
def store(order: dict[str, Any]) -> str:
    upsert_orders([order], source="kafka:orders")
    return order["order_id"]


@flow
def order_pipeline(order: dict[str, Any]) -> None:
    """One order from the stream into the warehouse."""
    store(price(validate(order)))
