"""Trigger rules decided from upstream states alone: pure, no engine."""

from __future__ import annotations

import pytest

from evflow.flows.trigger_rules import TRIGGER_RULES, decide
from evflow.states import TaskState

OK, FAIL, SKIP = TaskState.SUCCEEDED, TaskState.FAILED, TaskState.SKIPPED
UPF, CAN = TaskState.UPSTREAM_FAILED, TaskState.CANCELLED
RUN = None


@pytest.mark.parametrize(
    ("rule", "states", "verdict"),
    [
        ("all_success", [OK, OK], RUN),
        ("all_success", [OK, FAIL], UPF),
        ("all_success", [OK, CAN], UPF),  # cancelled counts as failed
        ("all_success", [OK, SKIP], RUN),  # a branch not taken is left out
        ("all_success", [SKIP, SKIP], SKIP),
        ("none_failed", [SKIP, SKIP], RUN),
        ("none_failed", [OK, UPF], UPF),
        ("all_done", [FAIL, CAN], RUN),
        ("one_success", [FAIL, OK], RUN),
        ("one_success", [FAIL, FAIL], UPF),
        ("one_failed", [OK, FAIL], RUN),
        ("one_failed", [OK, OK], SKIP),
        ("all_failed", [FAIL, UPF], RUN),
        ("all_failed", [FAIL, OK], SKIP),
        ("all_failed", [FAIL, SKIP], RUN),
    ],
)
def test_decide(rule: str, states: list[TaskState], verdict: TaskState | None) -> None:
    assert decide(rule, states) is verdict


@pytest.mark.parametrize("rule", sorted(TRIGGER_RULES))
def test_a_task_without_upstreams_always_runs(rule: str) -> None:
    assert decide(rule, []) is None


def test_unknown_rule_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="'most_success'"):
        decide("most_success", [OK])
