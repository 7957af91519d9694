"""Copying a store to another (``evflow db copy``): SQLite to PostgreSQL when a deployment
outgrows one machine, or back. Everything moves (events, runs with their tasks, attempts and
logs, dead letters, cursors, duplicate counts and the audit trail, its chains, hashes, heads
and anchors unchanged), in batches, read through one store's protocol and written verbatim
into the other."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import StoreError
from .base import Rows, Store

__all__ = ["CopyReport", "copy_store"]

PAGE = 500


@dataclass
class CopyReport:
    """How many records of each kind were copied."""

    counts: dict[str, int] = field(default_factory=dict)

    def add(self, kind: str, n: int) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + n


async def _is_empty(store: Store) -> bool:
    return (
        not await store.list_events(limit=1)
        and not await store.list_runs(limit=1)
        and not await store.audit_rows(limit=1)
    )


async def copy_store(
    source: Store, target: Store, *, progress: Callable[[str, int], None] | None = None
) -> CopyReport:
    """Copy everything in ``source`` into ``target``, which must be empty.

    ``progress(kind, n)`` is called after each batch written. The source is read as it is;
    copy a store no service is writing to.
    """
    if not await _is_empty(target):
        raise StoreError(
            f"the target store {target.describe()} already holds events, runs or audit "
            "records; copy into a new, empty store"
        )
    report = CopyReport()

    async def write(kind: str, rows: Rows, n: int) -> None:
        await target.import_rows(rows)
        report.add(kind, n)
        if progress is not None:
            progress(kind, report.counts[kind])

    # Events oldest first, so they keep their order.
    events = []
    offset = 0
    while page := await source.list_events(limit=PAGE, offset=offset):
        events.extend(page)
        offset += len(page)
    events.reverse()
    for i in range(0, len(events), PAGE):
        chunk = events[i : i + PAGE]
        await write("events", Rows(events=chunk), len(chunk))

    offset = 0
    while runs := await source.list_runs(limit=PAGE // 5, offset=offset):
        offset += len(runs)
        rows = Rows()
        for summary in runs:
            rows.runs.append(await source.get_run(summary.id))
            rows.attempts.extend(await source.list_attempts(summary.id))
            after = 0
            while logs := await source.list_logs(summary.id, after_seq=after, limit=5_000):
                rows.logs.extend(logs)
                after = logs[-1].seq
        report.add("attempts", len(rows.attempts))
        report.add("log lines", len(rows.logs))
        await write("runs", rows, len(runs))

    offset = 0
    while letters := await source.list_dead_letters(limit=PAGE, offset=offset):
        offset += len(letters)
        await write("dead letters", Rows(dead_letters=letters), len(letters))

    rows = Rows(cursors=await source.list_cursors(), duplicates=await source.duplicate_counts())
    await write("cursors", rows, len(rows.cursors))

    # The heads first, as a snapshot: records appended after it are past their heads, as they
    # would be mid-write.
    heads = await source.audit_heads()
    anchors = await source.audit_anchors()  # where pruned chains take up
    after = 0
    while audit := await source.audit_rows(after_seq=after, limit=5_000):
        after = int(audit[-1][0])
        await write("audit records", Rows(audit=audit), len(audit))
    await target.import_rows(Rows(audit_heads=heads, audit_anchors=anchors))
    return report
