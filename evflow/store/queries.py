"""What both backends' reads share, their SQL dialects aside: the filters they build (given
the dialect's placeholder and its conversion of a unix time), what an ambiguous or unknown id
raises, and the records made from rows that come back alike."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import orjson

from ..errors import EventNotFound, RunNotFound
from ..records import AuditRecord

__all__ = [
    "audit_query",
    "audit_record",
    "event_filter",
    "like_prefix",
    "like_short_id",
    "one_event",
    "one_run",
    "run_filter",
    "split_counts",
    "waits_of",
]


def like_prefix(text: str) -> str:
    """A LIKE pattern matching ``text`` literally as a prefix (``%`` and ``_`` escaped)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def like_short_id(text: str) -> tuple[str, str]:
    """LIKE patterns matching ``text`` as the beginning or the end of an id. A short id is
    usually an end: ids begin with the time they were made, so the runs of one minute share
    their first eight characters, and the UI and CLI show their last ones."""
    prefix = like_prefix(text)
    return prefix, "%" + prefix[:-1]


def total_from_page(n: int, limit: int, offset: int) -> int | None:
    """The total of a paged listing when its page shows it: a page of ``n`` short of ``limit``
    ends the listing (unless it is past the end), so no count is needed. None: count."""
    if n < limit and (n or not offset):
        return offset + n
    return None


# A run's own task records, and the instances of its mapped tasks.
PLAIN = " AND map_index IS NULL"
MAPPED = " AND map_index IS NOT NULL"


def task_filter(
    run_id: str, node: str | None, state: str | None, *, mark: str
) -> tuple[str, list[Any]]:
    """The condition on a run's tasks (of one node, in one state) and its parameters; ``mark``
    is the dialect's placeholder."""
    where = f"run_id = {mark}"
    params: list[Any] = [run_id]
    if node is not None:
        where += f" AND node = {mark}"
        params.append(node)
    if state is not None:
        where += f" AND state = {mark}"
        params.append(state)
    return where, params


def run_filter(
    flow: str | None,
    state: str | None,
    since: float | None,
    until: float | None,
    *,
    mark: str,
    instant: Callable[[str], str] = str,
) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (or "") and parameters of a runs listing; ``mark`` is the
    dialect's placeholder, ``instant`` turns one into a stored instant."""
    where: list[str] = []
    params: list[Any] = []
    if flow:
        where.append(f"flow = {mark}")
        params.append(flow)
    if state:
        where.append(f"state = {mark}")
        params.append(state)
    if since is not None:
        where.append(f"created_at >= {instant(mark)}")
        params.append(since)
    if until is not None:
        where.append(f"created_at < {instant(mark)}")
        params.append(until)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def event_filter(source: str | None, status: str | None, *, mark: str) -> tuple[str, list[Any]]:
    """The ``WHERE`` clause (or "") and parameters of an events listing."""
    where: list[str] = []
    params: list[Any] = []
    if source:
        where.append(f"source = {mark}")
        params.append(source)
    if status:
        where.append(f"status = {mark}")
        params.append(status)
    return (" WHERE " + " AND ".join(where)) if where else "", params


def one_run(run_id: str, rows: Sequence[Sequence[Any]], where: str) -> Sequence[Any]:
    """The one run row that a short id matched (``rows``: up to six matches); a clear error
    when it matched several, or none."""
    if len(rows) > 1:
        more = ", …" if len(rows) > 5 else ""
        raise RunNotFound(
            f"run id {run_id!r} is ambiguous: the ids of runs "
            f"{', '.join(str(r[0]) for r in rows[:5])}{more} begin or end with it; "
            "give more characters"
        )
    if not rows:
        raise RunNotFound(f"no run {run_id!r} in store {where}")
    return rows[0]


def one_event(event_id: str, rows: Sequence[Sequence[Any]], where: str) -> Sequence[Any]:
    """The one event row a sender id matched (``rows``: up to two); a clear error when the id
    is several sources' or unknown."""
    if len(rows) > 1:
        raise EventNotFound(
            f"several events have the sender id {event_id!r} (from different sources); "
            "name one by its evflow id (uid)"
        )
    if not rows:
        raise EventNotFound(f"no event {event_id!r} in store {where}")
    return rows[0]


def audit_query(
    cols: str, since: float | None, subject: str | None, limit: int | None, *, mark: str
) -> tuple[str, list[Any]]:
    """The query of an audit listing, in the trail's order."""
    query = f"SELECT {cols} FROM audit"
    where: list[str] = []
    params: list[Any] = []
    if since is not None:
        where.append(f"time >= {mark}")
        params.append(since)
    if subject is not None:
        where.append(f"subject = {mark}")
        params.append(subject)
    if where:
        query += " WHERE " + " AND ".join(where)
    query += " ORDER BY seq"
    if limit is not None:
        query += f" LIMIT {mark}"
        params.append(limit)
    return query, params


def audit_record(r: Sequence[Any]) -> AuditRecord:
    """A record from a row of ``seq, time, kind, subject, actor, data bytes, prev_hash, hash,
    chain, pos``."""
    data = None if r[5] is None else orjson.loads(r[5])
    return AuditRecord(r[0], r[1], r[2], r[3], r[4], data, r[6], r[7], r[8], r[9])


def waits_of(low: str, rows: Sequence[Sequence[Any]]) -> list[tuple[str, float, str]]:
    """``(task, time, reason)`` from ``task.waiting`` rows ``(subject, time, data bytes)``,
    the task named after the subject's prefix ``low``."""
    out: list[tuple[str, float, str]] = []
    for subject, when, data in rows:
        reason = ((orjson.loads(data) if data is not None else None) or {}).get("reason")
        out.append((str(subject)[len(low) :], float(when), str(reason or "")))
    return out


def split_counts(rows: Iterable[Sequence[Any]]) -> list[tuple[str, str, str, int, int, bool]]:
    """Rows of ``(run_id, node, state, own count, own highest attempt, instances count,
    instances' highest attempt)`` as :meth:`Store.task_counts` gives them: one tuple for the
    tasks' own records and one for the instances of mapped tasks, each only if there are any."""
    out: list[tuple[str, str, str, int, int, bool]] = []
    for run_id, node, state, own, own_try, inst, inst_try in rows:
        if own:
            out.append((run_id, node, state, int(own), int(own_try), False))
        if inst:
            out.append((run_id, node, state, int(inst), int(inst_try), True))
    return out
