"""The PostgreSQL store's SQL and its row conversions: each table's batched statements
(``INSERT … SELECT FROM unnest(…)`` over one binary array per column, each encoded as its
``%b::type[]`` cast says, :mod:`evflow.store.postgres_arrays`) and the records going in and out."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from ..records import AttemptRecord, EventRecord, LogRecord, RunRecord, TaskRecord
from ..states import RunState, TaskState
from .base import DeadLetter
from .urls import mask, postgres_target


def epoch(col: str) -> str:
    return f"extract(epoch from {col})::float8"


RUN_COLS = (
    "id, flow, flow_version, params::text, state, priority, trigger::text, "
    f"{epoch('created_at')}, {epoch('started_at')}, {epoch('ended_at')}, waiting, error"
)
TASK_COLS = (
    f"run_id, name, node, map_index, state, attempt, {epoch('queued_at')}, "
    f"{epoch('started_at')}, {epoch('ended_at')}, waiting, error, traceback, result"
)
EVENT_COLS = (
    "seq, id, dedup_key, type, source, subject, time, data::text, extensions::text, "
    f"{epoch('received_at')}, status, uid"
)
AUDIT_COLS = "seq, time, kind, subject, actor, data, prev_hash, hash, chain, pos"

EVENTS = """
INSERT INTO events (uid, id, dedup_key, type, source, subject, time, data, extensions,
                    received_at)
SELECT u, i, k, t, s, sub, tm, d::json, x::json, to_timestamp(%s)
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
            %b::timestamptz[], %b::text[], %b::text[]) WITH ORDINALITY
     AS v(u, i, k, t, s, sub, tm, d, x, n)
ORDER BY n
ON CONFLICT DO NOTHING
"""
CURSORS = """
INSERT INTO cursors (name, value) SELECT * FROM unnest(%b::text[], %b::text[])
ON CONFLICT (name) DO UPDATE SET value = excluded.value
"""
DEAD = """
INSERT INTO dead_letters (id, source, reason, payload, headers, dedup_key, received_at)
SELECT i, s, r, p, h::jsonb, k, to_timestamp(%s)
FROM unnest(%b::text[], %b::text[], %b::text[], %b::bytea[], %b::text[], %b::text[])
     AS v(i, s, r, p, h, k)
ON CONFLICT DO NOTHING
"""
RUN_SELECT = """
SELECT i, f, fv, p::jsonb, st, pr, tr::jsonb, to_timestamp(c), to_timestamp(sa),
       to_timestamp(ea), w, e
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::int[], %b::text[],
            %b::float8[], %b::float8[], %b::float8[], %b::text[], %b::text[]) WITH ORDINALITY
     AS v(i, f, fv, p, st, pr, tr, c, sa, ea, w, e, n)
ORDER BY n
"""
RUN_INTO = (
    "INSERT INTO runs (id, flow, flow_version, params, state, priority, trigger, created_at, "
    "started_at, ended_at, waiting, error)"
)
# Runs a rule creates: inserted only if absent, so deciding an event twice never resets a run.
RUNS_NEW = f"{RUN_INTO} {RUN_SELECT} ON CONFLICT (id) DO NOTHING RETURNING id"
RUNS = f"""{RUN_INTO} {RUN_SELECT}
ON CONFLICT (id) DO UPDATE SET flow_version = excluded.flow_version, params = excluded.params,
    state = excluded.state, priority = excluded.priority, started_at = excluded.started_at,
    ended_at = excluded.ended_at, waiting = excluded.waiting, error = excluded.error
"""
# In a cluster, each write transaction names its instance (see postgres_instances.FENCE).
INSTANCE = "nullif(current_setting('evflow.instance', true), '')"
TASK_INTO = f"""
INSERT INTO tasks (run_id, name, node, map_index, state, attempt, queued_at, started_at,
                   ended_at, waiting, error, traceback, result, instance)
SELECT r, nm, nd, mi, st, a, to_timestamp(q), to_timestamp(sa), to_timestamp(ea), w, e, tb, res,
       CASE WHEN st = 'pending' THEN NULL ELSE {INSTANCE} END
FROM unnest(%b::text[], %b::text[], %b::text[], %b::int[], %b::text[], %b::int[], %b::float8[],
            %b::float8[], %b::float8[], %b::text[], %b::text[], %b::text[], %b::bytea[])
     AS v(r, nm, nd, mi, st, a, q, sa, ea, w, e, tb, res)
"""
TASKS_NEW = f"{TASK_INTO} ON CONFLICT (run_id, name) DO NOTHING"
# New runs and the pending tasks of those actually created, in one statement that answers with
# the created ids (so the batch need not wait for them before sending the rest).
RUNS_AND_TASKS_NEW = f"""
WITH created AS ({RUNS_NEW}),
     tasks_new AS ({TASK_INTO} WHERE r IN (SELECT id FROM created)
                   ON CONFLICT (run_id, name) DO NOTHING)
SELECT id FROM created
"""
TASKS = f"""{TASK_INTO}
ON CONFLICT (run_id, name) DO UPDATE SET state = excluded.state, attempt = excluded.attempt,
    queued_at = excluded.queued_at, started_at = excluded.started_at,
    ended_at = excluded.ended_at, waiting = excluded.waiting, error = excluded.error,
    traceback = excluded.traceback, result = excluded.result,
    instance = CASE excluded.state WHEN 'running' THEN {INSTANCE} WHEN 'pending' THEN NULL
                   ELSE COALESCE(tasks.instance, {INSTANCE}) END
"""
# A try is credited to the instance that started it (the task row says which), so a try
# recorded interrupted by the instance that adopted the run still names the one that ran it.
ATTEMPTS = f"""
INSERT INTO attempts (run_id, task, attempt, state, started_at, ended_at, error, instance)
SELECT r, t, a, s, to_timestamp(sa), to_timestamp(ea), e,
       COALESCE((SELECT k.instance FROM tasks k WHERE k.run_id = r AND k.name = t), {INSTANCE})
FROM unnest(%b::text[], %b::text[], %b::int[], %b::text[], %b::float8[], %b::float8[],
            %b::text[]) AS v(r, t, a, s, sa, ea, e)
ON CONFLICT (run_id, task, attempt) DO UPDATE SET state = excluded.state,
    started_at = excluded.started_at, ended_at = excluded.ended_at, error = excluded.error
"""
LOGS = """
INSERT INTO logs (run_id, task, attempt, time, level, message)
SELECT r, t, a, to_timestamp(tm), l, m
FROM unnest(%b::text[], %b::text[], %b::int[], %b::float8[], %b::text[], %b::text[])
     WITH ORDINALITY AS v(r, t, a, tm, l, m, n)
ORDER BY n
"""
IMPORT_EVENTS = """
INSERT INTO events (uid, id, dedup_key, type, source, subject, time, data, extensions,
                    received_at, status)
SELECT u, i, k, t, s, sub, tm, d::json, x::json, to_timestamp(r), st
FROM unnest(%b::text[], %b::text[], %b::text[], %b::text[], %b::text[], %b::text[],
            %b::timestamptz[], %b::text[], %b::text[], %b::float8[], %b::text[])
     WITH ORDINALITY AS v(u, i, k, t, s, sub, tm, d, x, r, st, n)
ORDER BY n
"""
LEASE_COLS = (
    f"name, owner, host, pid, epoch, {epoch('acquired_at')}, {epoch('renewed_at')}, "
    f"{epoch('expires_at')}"
)
# Taken if free, expired, already ours, or forced; another holder's epoch goes up by one.
LEASE_TAKE = f"""
INSERT INTO leases AS l (name, owner, host, pid, epoch, acquired_at, renewed_at, expires_at)
VALUES (%s, %s, %s, %s, 1, now(), now(), now() + make_interval(secs => %s))
ON CONFLICT (name) DO UPDATE SET
    epoch = CASE WHEN l.owner = excluded.owner THEN l.epoch ELSE l.epoch + 1 END,
    acquired_at = CASE WHEN l.owner = excluded.owner THEN l.acquired_at ELSE now() END,
    owner = excluded.owner, host = excluded.host, pid = excluded.pid,
    renewed_at = now(), expires_at = excluded.expires_at
WHERE l.expires_at < now() OR l.owner = excluded.owner OR %s
RETURNING {LEASE_COLS.replace("acquired_at", "l.acquired_at")}
"""
PROCESSED = "UPDATE events SET status = 'processed' WHERE uid = ANY(%b::text[])"
# The trail's sequence numbers are drawn as the rows arrive, in the order given.
AUDIT = """
INSERT INTO audit (chain, pos, time, kind, subject, actor, data, prev_hash, hash)
SELECT c, p, t, k, s, a, d, ph, h
FROM unnest(%b::text[], %b::bigint[], %b::float8[], %b::text[], %b::text[], %b::text[],
            %b::bytea[], %b::text[], %b::text[]) WITH ORDINALITY
     AS v(c, p, t, k, s, a, d, ph, h, n)
ORDER BY n
"""
AUDIT_IMPORT = f"""
INSERT INTO audit ({AUDIT_COLS})
SELECT * FROM unnest(%b::bigint[], %b::float8[], %b::text[], %b::text[], %b::text[],
                     %b::bytea[], %b::text[], %b::text[], %b::text[], %b::bigint[])
"""
AUDIT_SEQ_PAST = "SELECT setval('audit_seq', (SELECT max(seq) FROM audit))"
AUDIT_HEAD = "SELECT pos, hash FROM audit_heads WHERE chain = %s FOR UPDATE"
AUDIT_HEADS = """
INSERT INTO audit_heads (chain, pos, hash)
SELECT * FROM unnest(%b::text[], %b::bigint[], %b::text[])
ON CONFLICT (chain) DO UPDATE SET pos = excluded.pos, hash = excluded.hash
"""
# A batch's audit records and its chains' new heads, in one statement (the two tables are
# independent: one statement costs the client less than two, even in a pipeline).
AUDIT_APPEND = f"WITH heads AS ({AUDIT_HEADS}) {AUDIT}"
# Copied as they are; the next pruning names them again (named_by 0: no record names them).
AUDIT_ANCHORS = """
INSERT INTO audit_anchors (chain, pos, hash, named_by)
SELECT c, p, h, 0 FROM unnest(%b::text[], %b::bigint[], %b::text[]) AS v(c, p, h)
"""
DUPS = """
INSERT INTO duplicates (source, count) SELECT * FROM unnest(%b::text[], %b::bigint[])
ON CONFLICT (source) DO UPDATE SET count = duplicates.count + excluded.count
"""

# Errors after which the connection, not the batch, is at fault: keep the batch, reconnect.


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def loads(raw: str | bytes | None) -> Any:
    return None if raw is None else orjson.loads(raw)


def text(value: str | None) -> str | None:
    """``value`` as PostgreSQL text can keep it: a NUL character (which text refuses, and which
    only a task's own error or log line can carry here) becomes U+FFFD."""
    if value is not None and "\x00" in value:
        return value.replace("\x00", "\ufffd")
    return value


def run_row(r: RunRecord) -> tuple[Any, ...]:
    return (
        r.id,
        r.flow,
        r.flow_version,
        dumps(r.params),
        str(r.state),
        r.priority,
        dumps(r.trigger) if r.trigger else None,
        r.created_at,
        r.started_at,
        r.ended_at,
        text(r.waiting),
        text(r.error),
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
        text(t.waiting),
        text(t.error),
        text(t.traceback),
        t.result,
    )


def run_from(row: Sequence[Any], tasks: tuple[TaskRecord, ...] = ()) -> RunRecord:
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


def task_from(row: Sequence[Any]) -> TaskRecord:
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
        result=None if row[12] is None else bytes(row[12]),
    )


def event_from(row: Sequence[Any]) -> EventRecord:
    return EventRecord(
        seq=row[0],
        id=row[1],
        dedup_key=row[2],
        type=row[3],
        source=row[4],
        subject=row[5],
        time=row[6].isoformat(),
        data=loads(row[7]),
        extensions=loads(row[8]) or {},
        received_at=row[9],
        status=row[10],
        uid=row[11],
    )


def audit_tuple(r: Sequence[Any]) -> tuple[Any, ...]:
    data = None if r[5] is None else bytes(r[5])
    return (r[0], r[1], r[2], r[3], r[4], data, r[6], r[7], r[8], r[9])


def describe_connect_error(url: str, exc: BaseException) -> str:
    """One line for a failed first connection: which server, what went wrong, what to do."""
    target = postgres_target(url)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    low = str(exc).lower()
    if "password authentication failed" in low or "no password supplied" in low:
        hint = "check the user and password in the store URL"
    elif "does not exist" in low and "database" in low:
        db = target.rsplit("/", 1)[-1]
        hint = f"create the database first (createdb {db}) or name an existing one"
    elif "connection refused" in low or "could not connect" in low or "timeout" in low:
        hint = "is the server running and listening there? check the host and port"
    elif "role" in low and "does not exist" in low:
        hint = "name a user that exists on the server"
    else:
        hint = "check the store URL (postgresql://user:password@host:port/database)"
    return f"cannot open the PostgreSQL store {mask(url)} ({target}): {text}; {hint}"


def attempt_row(a: AttemptRecord) -> tuple[Any, ...]:
    return (a.run_id, a.task, a.attempt, str(a.state), a.started_at, a.ended_at, text(a.error))


def log_row(lg: LogRecord) -> tuple[Any, ...]:
    return (lg.run_id, lg.task, lg.attempt, lg.time, lg.level, text(lg.message))


def dead_row(dl_id: str, d: DeadLetter) -> tuple[Any, ...]:
    return (
        dl_id,
        text(d.source),
        text(d.reason),
        bytes(d.payload),
        dumps(dict(d.headers)),
        d.dedup_key,
    )
