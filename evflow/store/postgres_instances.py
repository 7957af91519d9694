"""The instance registry on PostgreSQL: which ``evflow serve`` processes share the store.

Each instance registers a row and a thread of its own heartbeats it over a connection of its
own (see :mod:`evflow.cluster.membership`). Liveness is judged on the database's clock, so
instances whose clocks disagree still agree on who is alive.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import psycopg

from ..records import InstanceRecord
from .postgres_sql import epoch

__all__ = [
    "FENCE",
    "INSTANCE_COLS",
    "NOTIFY_EVENTS",
    "NOTIFY_RUN_ENDS",
    "RUN_ENDS_PAYLOAD",
    "PostgresInstances",
    "PostgresRunOwnership",
    "heartbeat",
]

log = logging.getLogger("evflow.store")

INSTANCE_COLS = (
    f"id, host, pid, version, http, {epoch('started_at')}, {epoch('heartbeat_at')}, ttl_s, "
    f"{epoch('stopped_at')}, {epoch('now()')}, taken_over_by"
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
    path: str

    async def _read(self, query: str, params: Sequence[Any] = ()) -> list[Any]: ...
    async def _write_read(
        self, sql: str, params: Sequence[Any] | Mapping[str, Any]
    ) -> list[Any]: ...


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


# -- runs owned by instances ---------------------------------------------------------------------

# The name a backend shows (``application_name``) while it runs a write transaction of an
# instance: a takeover finds it by that name.
_IN_TRANSACTION = "left('evflow:' || {id}, 63)"
# The first statement of each of an instance's write transactions: it holds its registry row
# (a takeover waits for the transaction) and names the instance for the runs it inserts. No
# row: the instance was taken over, and the transaction must not commit. An idle transaction
# left open by an instance that stalled is ended by the server within the instance's TTL
# (idle_in_transaction_session_timeout, for this transaction); one stalled mid-pipeline is not
# idle to the server, and the takeover ends it (see _END_STALLED).
FENCE = (
    "SELECT set_config('evflow.instance', id, true), "
    "set_config('idle_in_transaction_session_timeout', (ttl_s * 1000)::bigint::text, true), "
    f"set_config('application_name', {_IN_TRANSACTION.format(id='id')}, true) "
    "FROM instances WHERE id = %s AND stopped_at IS NULL FOR SHARE"
)
NOTIFY_EVENTS = "SELECT pg_notify('evflow_events', '')"
# The ids of runs that ended, space-separated: an instance waiting on one of them (``engine.run``
# on a run another instance drove) learns of its end at the commit. A notification carries as
# many ids as fit under the server's payload limit (8000 bytes).
NOTIFY_RUN_ENDS = "SELECT pg_notify('evflow_run_ends', %s)"
RUN_ENDS_PAYLOAD = 7_900
# Runs to claim, or a cancel to carry out: every instance looks (delivered at commit).
_NOTIFY_RUNS = "SELECT pg_notify('evflow_runs', ''), count(*) FROM changed"
_UNFINISHED = "('queued', 'running')"
# A place is free when no row holds it, or its instance is gone (stopped, taken over, silent).
_GONE = (
    "NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = {row}.instance "
    "AND i.stopped_at IS NULL AND i.heartbeat_at >= now() - make_interval(secs => i.ttl_s))"
)
# All ``n`` places or none: a holder never waits while holding some (no two holders can each
# hold part of what the other needs). Racing takers may still leave it fewer; it gives those back.
_TAKE_SLOTS = f"""
WITH free AS (
    SELECT s FROM generate_series(0, %(places)s - 1) AS s
    LEFT JOIN slots x ON x.name = %(name)s AND x.slot = s
    WHERE x.slot IS NULL OR {_GONE.format(row="x")}
    ORDER BY s LIMIT %(n)s
), enough AS (
    SELECT s FROM free WHERE (SELECT count(*) FROM free) = %(n)s
)
INSERT INTO slots AS t (name, slot, instance, holder)
SELECT %(name)s, s, %(me)s, %(holder)s FROM enough
ON CONFLICT (name, slot) DO UPDATE
    SET instance = excluded.instance, holder = excluded.holder, taken_at = now()
    WHERE {_GONE.format(row="t")}
RETURNING slot
"""
_GIVE_SLOTS = (
    "WITH changed AS (DELETE FROM slots WHERE name = %s AND slot = ANY(%s::int[]) "
    f"AND instance = %s AND holder = %s RETURNING slot) {_NOTIFY_RUNS}"
)
_DEAD = (
    "stopped_at IS NULL AND id <> %(me)s "
    "AND (heartbeat_at < now() - make_interval(secs => ttl_s) OR id = ANY(%(gone)s::text[]))"
)
# Before a takeover: end the write transactions that instances about to be taken over left
# open (a process stopped in the middle of one holds its registry row, and the takeover would
# wait for the server's statement_timeout). Backends of the same database role only: those are
# the ones a role may end.
_END_STALLED = f"""
SELECT a.pid, a.application_name, pg_terminate_backend(a.pid) FROM pg_stat_activity a
JOIN (SELECT id FROM instances WHERE {_DEAD}) dead
  ON a.application_name = {_IN_TRANSACTION.format(id="dead.id")}
WHERE a.datname = current_database() AND a.usename = current_user
  AND a.pid <> pg_backend_pid()
"""
_TAKE_OVER = f"""
UPDATE instances SET stopped_at = now(), taken_over_by = %(me)s
WHERE {_DEAD}
RETURNING id, host, pid, {epoch("heartbeat_at")}
"""
# A run no live instance drives: handed back, or its owner stopped or was taken over. The test
# is a subquery, not a join: a claim that meets a row another claim changed after this one
# began rechecks the row as it is now (a joined owner would still read as the old one's).
_CLAIMABLE = (
    "{row}.state IN " + _UNFINISHED + " AND ({row}.owner IS NULL OR NOT EXISTS ("
    "SELECT 1 FROM instances i WHERE i.id = {row}.owner AND i.stopped_at IS NULL))"
)
_CLAIM = f"""
UPDATE runs AS r SET owner = %s, epoch = r.epoch + 1
WHERE r.id IN (
    SELECT c.id FROM runs c
    WHERE c.flow = ANY(%s::text[]) AND {_CLAIMABLE.format(row="c")}
    ORDER BY c.priority DESC, c.created_at
    LIMIT %s
    FOR UPDATE OF c SKIP LOCKED
) AND {_CLAIMABLE.format(row="r")}
RETURNING r.id, r.epoch
"""


class PostgresRunOwnership:
    """Which instance drives which run, for :class:`~evflow.store.postgres.PostgresStore`."""

    instance_id: str | None = None

    def fence_as(self, instance_id: str) -> None:
        """From now on every write transaction commits only while ``instance_id`` is in the
        cluster (see :data:`FENCE`), and runs it inserts are its own."""
        self.instance_id = instance_id

    async def take_over_dead(
        self: _Access, me: str, gone: Sequence[str] = ()
    ) -> list[tuple[str, str, int, float]]:
        """Declare taken over (by ``me``) every instance silent past its TTL, and those in
        ``gone`` (on this host, their process has exited); returns (id, host, pid, last
        heartbeat) of each."""
        params = {"me": me, "gone": list(gone)}
        for pid, name, _ in await self._write_read(_END_STALLED, params):
            log.warning(
                "store %s: ended a write transaction left open by %s, which is being taken "
                "over (backend %s)",
                self.path,
                str(name).removeprefix("evflow:"),
                pid,
            )
        rows = await self._write_read(_TAKE_OVER, params)
        return [(str(r[0]), str(r[1]), int(r[2]), float(r[3])) for r in rows]

    async def claim_runs(
        self: _Access, me: str, flows: Sequence[str], limit: int
    ) -> dict[str, int]:
        """Claim for ``me`` up to ``limit`` unfinished runs of ``flows`` that no live instance
        drives (handed back, or their owner stopped or was taken over), highest priority
        first; returns each claimed run's new epoch."""
        if limit <= 0 or not flows:
            return {}
        rows = await self._write_read(_CLAIM, (me, list(flows), limit))
        return {str(r[0]): int(r[1]) for r in rows}

    async def claim_run(self: _Access, me: str, run_id: str) -> int:
        """Take ``run_id`` for ``me`` (a finished run queued again here); its new epoch."""
        rows = await self._write_read(
            "UPDATE runs SET owner = %s, epoch = epoch + 1, cancel_requested = NULL "
            "WHERE id = %s RETURNING epoch",
            (me, run_id),
        )
        return int(rows[0][0]) if rows else 0

    async def hand_back_runs(self: _Access, me: str, run_ids: Sequence[str] | None = None) -> int:
        """Give back ``me``'s unfinished runs (``run_ids``, else all: a clean stop), for the
        other instances to claim; they are told at once."""
        rows = await self._write_read(
            f"WITH changed AS (UPDATE runs SET owner = NULL WHERE owner = %s "
            f"AND state IN {_UNFINISHED} AND (%s::text[] IS NULL OR id = ANY(%s::text[])) "
            f"RETURNING id) {_NOTIFY_RUNS}",
            (
                me,
                None if run_ids is None else list(run_ids),
                None if run_ids is None else list(run_ids),
            ),
        )
        return int(rows[0][1])

    async def run_owner(self: _Access, run_id: str) -> tuple[str | None, bool]:
        """(owner, whether that owner is alive) of a run."""
        rows = await self._read(
            "SELECT r.owner, i.id IS NOT NULL AND i.stopped_at IS NULL "
            "AND i.heartbeat_at >= now() - make_interval(secs => i.ttl_s) "
            "FROM runs r LEFT JOIN instances i ON i.id = r.owner WHERE r.id = %s",
            (run_id,),
        )
        if not rows:
            return None, False
        return (None if rows[0][0] is None else str(rows[0][0])), bool(rows[0][1])

    async def take_slots(
        self: _Access, name: str, places: int, me: str, holder: str, n: int = 1
    ) -> list[int]:
        """Take ``n`` of the ``places`` places of ``name`` for ``holder`` on instance ``me``:
        the places taken, or an empty list when fewer than ``n`` are free of live instances."""
        rows = await self._write_read(
            _TAKE_SLOTS, {"name": name, "places": places, "n": n, "me": me, "holder": holder}
        )
        taken = sorted(int(r[0]) for r in rows)
        if len(taken) < n:
            if taken:  # another instance took some of them in the same instant
                await self._write_read(_GIVE_SLOTS, (name, taken, me, holder))
            return []
        return taken

    async def give_slots(
        self: _Access, name: str, slots: Sequence[int], me: str, holder: str
    ) -> None:
        """Give places back; instances waiting for one are told."""
        await self._write_read(_GIVE_SLOTS, (name, list(slots), me, holder))

    async def slots_held(self: _Access) -> list[tuple[str, int, str, str]]:
        """The places held by live instances: (name, place, instance, holder)."""
        rows = await self._read(
            "SELECT name, slot, instance, holder FROM slots x "
            f"WHERE NOT ({_GONE.format(row='x')}) ORDER BY name, slot"
        )
        return [(str(r[0]), int(r[1]), str(r[2]), str(r[3])) for r in rows]

    async def runs_by_owner(self: _Access) -> dict[str | None, int]:
        """Unfinished runs per owning instance (None: handed back, waiting for a claim)."""
        rows = await self._read(
            f"SELECT owner, count(*) FROM runs WHERE state IN {_UNFINISHED} GROUP BY owner"
        )
        return {(None if r[0] is None else str(r[0])): int(r[1]) for r in rows}

    async def request_cancel(self: _Access, run_id: str, reason: str) -> None:
        """Ask the run's owner to cancel it (it looks at each heartbeat)."""
        await self._write_read(
            f"WITH changed AS (UPDATE runs SET cancel_requested = %s WHERE id = %s "
            f"AND state IN {_UNFINISHED} RETURNING id) {_NOTIFY_RUNS}",
            (reason, run_id),
        )

    async def cancel_requests(self: _Access, me: str) -> dict[str, str]:
        """Cancels asked of ``me``'s runs elsewhere: run id → reason."""
        rows = await self._read(
            f"SELECT id, cancel_requested FROM runs WHERE owner = %s AND state IN {_UNFINISHED} "
            "AND cancel_requested IS NOT NULL",
            (me,),
        )
        return {str(r[0]): str(r[1]) for r in rows}

    async def run_epochs(
        self: _Access, run_ids: Sequence[str]
    ) -> dict[str, tuple[str | None, int]]:
        """(owner, epoch) of each run."""
        rows = await self._read(
            "SELECT id, owner, epoch FROM runs WHERE id = ANY(%s::text[])", (list(run_ids),)
        )
        return {str(r[0]): (None if r[1] is None else str(r[1]), int(r[2])) for r in rows}
