"""Airflow's trigger rule names, and the evflow rule each one runs as."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, cast

from ...errors import FlowDefinitionError
from ...flows import TriggerRule as FlowTriggerRule
from ...flows.tasks import caller_location

__all__ = ["TriggerRule", "evflow_rule"]


class TriggerRule(StrEnum):
    """Airflow's trigger rule names (``airflow.utils.trigger_rule.TriggerRule``)."""

    ALL_SUCCESS = "all_success"
    ALL_FAILED = "all_failed"
    ALL_DONE = "all_done"
    ALL_DONE_MIN_ONE_SUCCESS = "all_done_min_one_success"
    ALL_DONE_SETUP_SUCCESS = "all_done_setup_success"
    ONE_SUCCESS = "one_success"
    ONE_FAILED = "one_failed"
    ONE_DONE = "one_done"
    NONE_FAILED = "none_failed"
    NONE_FAILED_OR_SKIPPED = "none_failed_or_skipped"
    NONE_SKIPPED = "none_skipped"
    NONE_FAILED_MIN_ONE_SUCCESS = "none_failed_min_one_success"
    ALL_SKIPPED = "all_skipped"
    ALWAYS = "always"
    DUMMY = "dummy"


_RULES: dict[str, str] = {
    # Airflow's all_success skips a task when an upstream was skipped; evflow's native one
    # leaves skipped upstreams out (a friendlier join after a branch): use the strict one here.
    "all_success": "all_success_strict",
    "all_failed": "all_failed",
    "all_done": "all_done",
    "all_done_min_one_success": "all_done_min_one_success",
    "all_skipped": "all_skipped",
    "one_success": "one_success",
    "one_failed": "one_failed",
    "one_done": "one_done",
    "none_failed": "none_failed",
    "none_failed_min_one_success": "none_failed_min_one_success",
    "none_failed_or_skipped": "none_failed_min_one_success",  # its old name
    "none_skipped": "none_skipped",
    "always": "always",
    "dummy": "always",  # its old name
}


def evflow_rule(value: Any, dag_id: str, task_id: str) -> FlowTriggerRule:
    """The evflow trigger rule for Airflow's ``value``; an unknown one names the task."""
    rule = str(value.value if isinstance(value, TriggerRule) else value)
    mapped = _RULES.get(rule)
    if mapped is None:
        known = sorted(_RULES) if rule not in {r.value for r in TriggerRule} else None
        reason = (
            f"unknown trigger_rule {rule!r}; expected one of {', '.join(known)}"
            if known
            else f"trigger_rule {rule!r} has no evflow equivalent"
        )
        raise FlowDefinitionError(
            f"DAG {dag_id!r}, task {task_id!r}: {reason}",
            flow=dag_id,
            task=task_id,
            location=caller_location(),
        )
    return cast(FlowTriggerRule, mapped)
