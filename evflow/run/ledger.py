"""The ledger of one run: every store write and audit entry its execution makes goes here.

The executor says what happened (a run started, tasks changed state, an attempt ended, log
lines were written); the ledger turns that into store writes. It is the one place to change
when the store's interface changes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Mapping
from typing import Any

from ..audit_kinds import AuditKind
from ..records import AttemptRecord, LogRecord, RunRecord, TaskRecord
from ..store.base import AuditEntry, Changes, Store

__all__ = ["Ledger"]


class Ledger:
    """Records one run's transitions in ``store`` (grouped commits) and its audit trail."""

    __slots__ = ("run_id", "store")

    def __init__(self, store: Store, run_id: str) -> None:
        self.store = store
        self.run_id = run_id

    def run_changed(
        self,
        run: RunRecord,
        kind: AuditKind,
        data: Mapping[str, Any] | None = None,
        *,
        wait: bool = False,
    ) -> Awaitable[None]:
        """The run's record changed (``kind``: ``run.running``, ``run.succeeded``, ...)."""
        return self.store.apply(
            Changes(runs=[run], audit=[AuditEntry(kind, f"run:{run.id}", data)]), wait=wait
        )

    def tasks_changed(
        self,
        tasks: list[TaskRecord],
        kind: AuditKind | None,
        data: Mapping[str, Any] | None = None,
        attempts: list[AttemptRecord] | None = None,
    ) -> Awaitable[None]:
        """Task records changed together; ``kind`` (``task.running``, ...) audits each of them;
        ``attempts`` are the attempts that ended with this change.

        Returns the store's awaitable directly (no coroutine of its own: this runs on every
        transition of every task)."""
        audit = []
        if kind is not None:  # a loop, not a comprehension: no cells made for kind and data
            for t in tasks:
                audit.append(AuditEntry(kind, f"run:{self.run_id}/task:{t.name}", data))
        return self.store.apply(Changes(tasks=tasks, audit=audit, attempts=attempts or []))

    def task_waiting(self, task: TaskRecord, reason: str) -> None:
        """A limit made ``task`` wait; recorded without waiting (called from sync code)."""
        self.store.apply_nowait(
            Changes(
                tasks=[task],
                audit=[
                    AuditEntry(
                        AuditKind.TASK_WAITING,
                        f"run:{self.run_id}/task:{task.name}",
                        {"reason": reason},
                    )
                ],
            )
        )

    async def logs(self, lines: list[LogRecord]) -> None:
        """Log lines the run's tasks wrote."""
        await self.store.apply(Changes(logs=lines))

    def flush(self) -> Awaitable[None]:
        """Wait until everything recorded so far is committed."""
        return self.store.flush()

    async def past_attempts(self) -> list[AttemptRecord]:
        """The attempts recorded for this run so far (committed ones)."""
        await self.store.flush()
        return await self.store.list_attempts(self.run_id)
