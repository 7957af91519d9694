"""What the audit trail records: one :class:`AuditKind` per kind of record.

Kinds are ``<subject>.<what happened>``: ``event.*`` for intake, ``rule.*`` for the decisions
rules make about events, ``run.*`` and ``task.*`` for state changes (one per state, so the kind
of a transition is derived from the state it enters, never spelled by hand); ``audit.*`` for the
trail's own bookkeeping (a writer opening its chain, retention pruning old records).
"""

from __future__ import annotations

from enum import StrEnum

from .states import RunState, TaskState

__all__ = ["AuditKind"]


class AuditKind(StrEnum):
    EVENT_RECEIVED = "event.received"
    EVENT_EMITTED = "event.emitted"

    RULE_MATCHED = "rule.matched"
    RULE_NOT_MATCHED = "rule.not_matched"
    RULE_NOT_MAPPED = "rule.not_mapped"
    RULE_HELD = "rule.held"
    RULE_SKIPPED = "rule.skipped"
    RULE_DUPLICATE = "rule.duplicate"
    RULE_FLOW_MISSING = "rule.flow_missing"
    RULE_CORRELATION_TIMED_OUT = "rule.correlation_timed_out"

    RUN_QUEUED = "run.queued"
    RUN_RUNNING = "run.running"
    RUN_SUCCEEDED = "run.succeeded"
    RUN_FAILED = "run.failed"
    RUN_CANCELLED = "run.cancelled"
    RUN_CANCEL_REQUESTED = "run.cancel_requested"
    RUN_RESUMED = "run.resumed"
    RUN_RETRIED = "run.retried"

    TASK_PENDING = "task.pending"
    TASK_WAITING = "task.waiting"
    TASK_RUNNING = "task.running"
    TASK_RETRYING = "task.retrying"
    TASK_INTERRUPTED = "task.interrupted"
    TASK_SUCCEEDED = "task.succeeded"
    TASK_FAILED = "task.failed"
    TASK_SKIPPED = "task.skipped"
    TASK_UPSTREAM_FAILED = "task.upstream_failed"
    TASK_CANCELLED = "task.cancelled"

    AUDIT_CHAIN_OPENED = "audit.chain_opened"
    AUDIT_PRUNED = "audit.pruned"

    @classmethod
    def of_run(cls, state: RunState) -> AuditKind:
        """The kind recording a run entering ``state``."""
        return cls(f"run.{state}")

    @classmethod
    def of_task(cls, state: TaskState) -> AuditKind:
        """The kind recording a task entering ``state``."""
        return cls(f"task.{state}")
