"""The SQLite store's SQL and its row conversions: each table's statements (one per table,
run with ``executemany``) and the records going in and out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

import orjson

from ..records import AttemptRecord, EventRecord, LogRecord, RunRecord, TaskRecord
from ..states import RunState, TaskState
from .base import DeadLetter

RUN_COLS = (
    "id, flow, flow_version, params, state, priority, trigger, created_at, started_at, "
    "ended_at, waiting, error"
)
TASK_COLS = (
    "run_id, name, node, map_index, state, attempt, queued_at, started_at, ended_at, "
    "waiting, error, traceback, result"
)
EVENT_COLS = (
    "seq, id, dedup_key, type, source, subject, time, data, extensions, received_at, status, uid"
)

EVENT = (
    "INSERT OR IGNORE INTO events (id, dedup_key, type, source, subject, time, data, "
    "extensions, received_at, uid) VALUES (?,?,?,?,?,?,?,?,?,?)"
)
CURSOR = (
    "INSERT INTO cursors (name, value) VALUES (?, ?) "
    "ON CONFLICT(name) DO UPDATE SET value = excluded.value"
)
DEAD = (
    "INSERT OR IGNORE INTO dead_letters (id, source, reason, payload, headers, "
    "dedup_key, received_at) VALUES (?,?,?,?,?,?,?)"
)
RUN = (
    f"INSERT INTO runs ({RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(id) DO UPDATE SET flow_version=excluded.flow_version, params=excluded.params, "
    "state=excluded.state, priority=excluded.priority, started_at=excluded.started_at, "
    "ended_at=excluded.ended_at, waiting=excluded.waiting, error=excluded.error"
)
# Runs a rule creates: inserted only if absent, so deciding an event twice never resets a run.
RUN_NEW = (
    f"INSERT INTO runs ({RUN_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(id) DO NOTHING"
)
TASK_NEW = (
    f"INSERT INTO tasks ({TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(run_id, name) DO NOTHING"
)
TASK = (
    f"INSERT INTO tasks ({TASK_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
    "ON CONFLICT(run_id, name) DO UPDATE SET state=excluded.state, attempt=excluded.attempt, "
    "queued_at=excluded.queued_at, started_at=excluded.started_at, ended_at=excluded.ended_at, "
    "waiting=excluded.waiting, error=excluded.error, traceback=excluded.traceback, "
    "result=excluded.result"
)
ATTEMPT = (
    "INSERT INTO attempts (run_id, task, attempt, state, started_at, ended_at, error) "
    "VALUES (?,?,?,?,?,?,?) ON CONFLICT(run_id, task, attempt) DO UPDATE SET "
    "state=excluded.state, started_at=excluded.started_at, ended_at=excluded.ended_at, "
    "error=excluded.error"
)
LOG = "INSERT INTO logs (run_id, task, attempt, time, level, message) VALUES (?,?,?,?,?,?)"
PROCESSED = "UPDATE events SET status = 'processed' WHERE uid = ?"
AUDIT = (
    "INSERT INTO audit (chain, pos, time, kind, subject, actor, data, prev_hash, hash) "
    "VALUES (?,?,?,?,?,?,?,?,?)"
)
AUDIT_COLS = "seq, time, kind, subject, actor, data, prev_hash, hash, chain, pos"
AUDIT_IMPORT = f"INSERT INTO audit ({AUDIT_COLS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
HEAD = "SELECT pos, hash FROM audit_heads WHERE chain = ?"
HEADS = (
    "INSERT INTO audit_heads (chain, pos, hash) VALUES (?,?,?) "
    "ON CONFLICT(chain) DO UPDATE SET pos = excluded.pos, hash = excluded.hash"
)
# Copied as they are; the next pruning names them again (named_by 0: no record names them).
ANCHOR_IMPORT = "INSERT INTO audit_anchors (chain, pos, hash, named_by) VALUES (?,?,?,0)"
DUP = (
    "INSERT INTO duplicates (source, count) VALUES (?, ?) "
    "ON CONFLICT(source) DO UPDATE SET count = count + excluded.count"
)


LEASE_COLS = "name, owner, host, pid, epoch, acquired_at, renewed_at, expires_at"
# Taken if free, expired, already ours, or forced; another holder's epoch goes up by one.
LEASE_TAKE = (
    f"INSERT INTO leases ({LEASE_COLS}) VALUES (?,?,?,?,1,?,?,?) ON CONFLICT(name) DO UPDATE SET "
    "epoch = CASE WHEN leases.owner = excluded.owner THEN leases.epoch ELSE leases.epoch + 1 END, "
    "acquired_at = CASE WHEN leases.owner = excluded.owner THEN leases.acquired_at "
    "ELSE excluded.acquired_at END, owner = excluded.owner, host = excluded.host, "
    "pid = excluded.pid, renewed_at = excluded.renewed_at, expires_at = excluded.expires_at "
    "WHERE leases.expires_at < excluded.renewed_at OR leases.owner = excluded.owner OR ? "
    f"RETURNING {LEASE_COLS}"
)


def dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def loads(raw: bytes | str | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def attempt_row(a: AttemptRecord) -> tuple[Any, ...]:
    return (a.run_id, a.task, a.attempt, str(a.state), a.started_at, a.ended_at, a.error)


def log_row(lg: LogRecord) -> tuple[Any, ...]:
    return (lg.run_id, lg.task, lg.attempt, lg.time, lg.level, lg.message)


def dead_row(dl_id: str, d: DeadLetter) -> tuple[Any, ...]:
    return (
        dl_id,
        d.source,
        d.reason,
        bytes(d.payload),
        dumps(dict(d.headers)),
        d.dedup_key,
        time.time(),
    )


def run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.flow,
        r.flow_version,
        dumps(r.params),
        str(r.state),
        r.priority,
        dumps(r.trigger),
        r.created_at,
        r.started_at,
        r.ended_at,
        r.waiting,
        r.error,
    )


def task_row(t: TaskRecord) -> tuple[Any, ...]:
    return (
        t.run_id,
        t.name,
        t.node,
        t.map_index,
        str(t.state),
        t.attempt,
        t.queued_at,
        t.started_at,
        t.ended_at,
        t.waiting,
        t.error,
        t.traceback,
        t.result,
    )


def run_from(row: Any, tasks: tuple[TaskRecord, ...] = ()) -> RunRecord:
    return RunRecord(
        id=row[0],
        flow=row[1],
        flow_version=row[2],
        params=loads(row[3]),
        state=RunState(row[4]),
        priority=row[5],
        trigger=loads(row[6]) or {},
        created_at=row[7],
        started_at=row[8],
        ended_at=row[9],
        waiting=row[10],
        error=row[11],
        tasks=tasks,
    )


def task_from(row: Any) -> TaskRecord:
    return TaskRecord(
        run_id=row[0],
        name=row[1],
        node=row[2],
        map_index=row[3],
        state=TaskState(row[4]),
        attempt=row[5],
        queued_at=row[6],
        started_at=row[7],
        ended_at=row[8],
        waiting=row[9],
        error=row[10],
        traceback=row[11],
        result=row[12],
    )


def event_from(row: Any) -> EventRecord:
    return EventRecord(
        seq=row[0],
        id=row[1],
        dedup_key=row[2],
        type=row[3],
        source=row[4],
        subject=row[5],
        time=row[6],
        data=loads(row[7]),
        extensions=loads(row[8]) or {},
        received_at=row[9],
        status=row[10],
        uid=row[11],
    )


def chunks(items: Sequence[Any], n: int = 500) -> Iterable[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]
