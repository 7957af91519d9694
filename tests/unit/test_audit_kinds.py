"""Audit kinds: one enum member per kind, and one per state a run or task enters."""

from __future__ import annotations

from evflow.audit_kinds import AuditKind
from evflow.states import RunState, TaskState


def test_every_state_has_its_audit_kind() -> None:
    for run_state in RunState:
        assert AuditKind.of_run(run_state) == f"run.{run_state}"
    for task_state in TaskState:
        assert AuditKind.of_task(task_state) == f"task.{task_state}"
    assert len({k.value for k in AuditKind}) == len(AuditKind)  # no two names for one kind
