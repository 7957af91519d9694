"""What each thing that happens writes: the rows and audit records of one domain operation.

Callers say what happened ("these runs were queued", "this rule matched that event"); the
rows and :class:`~evflow.store.base.AuditEntry` records are built here and in
:mod:`evflow.run.ledger` (a run's own transitions) only, so the audit vocabulary lives in one
place and every backend receives the same :class:`~evflow.store.base.Changes`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from ..audit_kinds import AuditKind
from ..records import RunRecord, TaskRecord
from .base import AuditEntry, Changes, DeadLetter

__all__ = [
    "Decisions",
    "event_emitted",
    "run_cancel_requested",
    "run_cancelled",
    "run_crashed",
    "run_resumed",
    "run_retried",
    "run_waiting",
    "runs_queued",
]


def _run(run_id: str) -> str:
    return f"run:{run_id}"


def _event(event_id: str) -> str:
    return f"event:{event_id}"


def runs_queued(
    flow: str, runs: Sequence[RunRecord], tasks: Sequence[TaskRecord], actor: str | None = None
) -> Changes:
    """``runs`` of ``flow`` were queued with their pending ``tasks``."""
    return Changes(
        runs=list(runs),
        tasks=list(tasks),
        audit=[
            AuditEntry(
                AuditKind.RUN_QUEUED, _run(r.id), {"flow": flow, "trigger": r.trigger}, actor=actor
            )
            for r in runs
        ],
    )


def run_cancel_requested(run_id: str, reason: str, actor: str | None = None) -> Changes:
    return Changes(
        audit=[AuditEntry(AuditKind.RUN_CANCEL_REQUESTED, _run(run_id), {"reason": reason}, actor)]
    )


def run_cancelled(run: RunRecord, tasks: Sequence[TaskRecord], reason: str) -> Changes:
    """``run`` ended cancelled; ``tasks`` are its unfinished tasks, now skipped."""
    return Changes(
        runs=[run],
        tasks=list(tasks),
        audit=[AuditEntry(AuditKind.RUN_CANCELLED, _run(run.id), {"reason": reason})],
    )


def run_retried(
    run: RunRecord, reset: Sequence[TaskRecord], mode: str, actor: str | None = None
) -> Changes:
    """``run`` was queued again, its ``reset`` tasks to run again (``mode``: what was asked)."""
    return Changes(
        runs=[run],
        tasks=list(reset),
        audit=[
            AuditEntry(
                AuditKind.RUN_RETRIED,
                _run(run.id),
                {"mode": mode, "tasks": [t.name for t in reset]},
                actor=actor,
            )
        ],
    )


def run_resumed(run: RunRecord) -> Changes:
    """A new process took up ``run``, left unfinished by the last one."""
    return Changes(
        audit=[AuditEntry(AuditKind.RUN_RESUMED, _run(run.id), {"state": str(run.state)})]
    )


def run_waiting(run: RunRecord) -> Changes:
    """``run`` (its ``waiting`` set) waits for a place; no audit record: it is not a change
    of state, and the trail would grow with every wake-up."""
    return Changes(runs=[run])


def run_crashed(run: RunRecord) -> Changes:
    """The executor failed on ``run`` itself (a bug): the run is recorded failed."""
    return Changes(runs=[run])


def event_emitted(event_id: str, data: Mapping[str, Any], actor: str) -> Changes:
    """Someone (``actor``) sent the event through the API or the engine."""
    return Changes(audit=[AuditEntry(AuditKind.EVENT_EMITTED, _event(event_id), data, actor)])


class Decisions:
    """The rule loop's decisions about one batch of events, written in one commit.

    Each method records one decision about one or more events; :attr:`changes` is what to
    apply, and after it is applied, ``changes.created_runs`` says which runs were created.
    """

    def __init__(self) -> None:
        self._audit: list[AuditEntry] = []
        self._letters: list[DeadLetter] = []
        self._runs: list[RunRecord] = []
        self._tasks: list[TaskRecord] = []
        self._processed: list[str] = []
        self.changes = Changes(
            new_runs=self._runs,
            new_tasks=self._tasks,
            audit=self._audit,
            dead_letters=self._letters,
            processed_events=self._processed,
        )

    def _each(self, kind: AuditKind, event_ids: Iterable[str], data: Mapping[str, Any]) -> None:
        self._audit.extend(AuditEntry(kind, _event(eid), data) for eid in event_ids)

    def not_matched(self, event_id: str, reason: str) -> None:
        self._each(AuditKind.RULE_NOT_MATCHED, (event_id,), {"reason": reason})

    def held(self, event_id: str, rule: str, why: str) -> None:
        self._each(AuditKind.RULE_HELD, (event_id,), {"rule": rule, "why": why})

    def not_mapped(
        self, event_ids: Sequence[str], rule: str, reason: str, letter: DeadLetter
    ) -> None:
        """The rule could not build a run's parameters; the input goes to the dead letters in
        the same commit, so the two are never seen apart."""
        self._each(AuditKind.RULE_NOT_MAPPED, event_ids, {"rule": rule, "reason": reason})
        self._letters.append(letter)

    def correlation_timed_out(
        self, event_ids: Sequence[str], rule: str, key: Any, action: str, reason: str
    ) -> None:
        data = {"rule": rule, "key": key, "action": action, "reason": reason}
        self._each(AuditKind.RULE_CORRELATION_TIMED_OUT, event_ids, data)

    def duplicate(self, event_ids: Sequence[str], rule: str, run_id: str) -> None:
        self._each(AuditKind.RULE_DUPLICATE, event_ids, {"rule": rule, "run_id": run_id})

    def flow_missing(self, event_ids: Sequence[str], rule: str, flow: str) -> None:
        self._each(AuditKind.RULE_FLOW_MISSING, event_ids, {"rule": rule, "flow": flow})

    def skipped(self, event_ids: Sequence[str], rule: str, reason: str) -> None:
        self._each(AuditKind.RULE_SKIPPED, event_ids, {"rule": rule, "reason": reason})

    def matched(
        self, event_ids: Sequence[str], rule: str, run: RunRecord, tasks: Sequence[TaskRecord]
    ) -> None:
        """The rule starts ``run``: created only if no run has its id yet (deciding the same
        events twice never makes a second run)."""
        self._each(AuditKind.RULE_MATCHED, event_ids, {"rule": rule, "run_id": run.id})
        self._runs.append(run)
        self._tasks.extend(tasks)
        self._audit.append(
            AuditEntry(
                AuditKind.RUN_QUEUED, _run(run.id), {"flow": run.flow, "trigger": run.trigger}
            )
        )

    def creates(self, run_id: str) -> bool:
        """Whether a run with this id is already among this batch's new runs."""
        return any(r.id == run_id for r in self.changes.new_runs)

    def processed(self, event_ids: Iterable[str]) -> None:
        """These events are decided: they leave the pending set."""
        self._processed.extend(event_ids)
