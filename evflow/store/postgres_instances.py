"""The instance registry on PostgreSQL: which ``evflow serve`` processes share the store.

Each instance registers a row and a thread of its own heartbeats it over a connection of its
own (see :mod:`evflow.cluster.membership`). Liveness is judged on the database's clock, so
instances whose clocks disagree still agree on who is alive.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import psycopg

from ..records import InstanceRecord
from .postgres_sql import epoch

__all__ = ["INSTANCE_COLS", "PostgresInstances", "heartbeat"]

INSTANCE_COLS = (
    f"id, host, pid, version, http, {epoch('started_at')}, {epoch('heartbeat_at')}, ttl_s, "
    f"{epoch('stopped_at')}, {epoch('now()')}"
)
_REGISTER = f"""
INSERT INTO instances (id, host, pid, version, http, ttl_s) VALUES (%s, %s, %s, %s, %s, %s)
RETURNING {INSTANCE_COLS}
"""
_HEARTBEAT = (
    "UPDATE instances SET heartbeat_at = now() WHERE id = %s AND stopped_at IS NULL "
    f"AND heartbeat_at >= now() - make_interval(secs => ttl_s) RETURNING {epoch('now()')}"
)
# Rows of instances gone for a day are of no more use to anyone.
_FORGET = "DELETE FROM instances WHERE heartbeat_at < now() - interval '1 day' RETURNING id"


class _Access(Protocol):
    async def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]: ...
    async def _write_read(self, sql: str, params: Sequence[Any]) -> list[Any]: ...


class PostgresInstances:
    """The registry's operations, for :class:`~evflow.store.postgres.PostgresStore`."""

    url: str

    async def register_instance(
        self: _Access,
        instance_id: str,
        *,
        host: str,
        pid: int,
        version: str,
        http: str | None,
        ttl_s: float,
    ) -> InstanceRecord:
        """Add this instance to the registry (and forget instances gone for a day)."""
        await self._write_read(_FORGET, ())
        rows = await self._write_read(_REGISTER, (instance_id, host, pid, version, http, ttl_s))
        return InstanceRecord(*rows[0])

    async def set_instance_http(self: _Access, instance_id: str, http: str) -> None:
        """Record where the instance's HTTP API answers."""
        await self._write_read(
            "UPDATE instances SET http = %s WHERE id = %s RETURNING id", (http, instance_id)
        )

    async def instance_stopped(self: _Access, instance_id: str) -> None:
        """Record a clean stop: the instance is not alive any more, and not dead either."""
        await self._write_read(
            "UPDATE instances SET stopped_at = now() WHERE id = %s RETURNING id", (instance_id,)
        )

    async def list_instances(self: _Access) -> list[InstanceRecord]:
        """Every registered instance, alive ones first, newest first."""
        rows = await self._read(
            f"SELECT {INSTANCE_COLS} FROM instances "
            "ORDER BY stopped_at IS NOT NULL, heartbeat_at DESC, started_at DESC"
        )
        return [InstanceRecord(*r) for r in rows]


def heartbeat(conn: psycopg.Connection[Any], instance_id: str) -> float | None:
    """One heartbeat over a blocking connection: the database's time, or None when the
    instance is no longer alive by the registry (stopped, or silent past its TTL)."""
    row = conn.execute(_HEARTBEAT, (instance_id,)).fetchone()
    return None if row is None else float(row[0])
