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
        ("all_failed", [FAIL, SKIP], SKIP),  # Airflow: a skipped upstream skips it
        # Airflow's other rules, case by case as its documentation states them
        ("all_success_strict", [OK, OK], RUN),
        ("all_success_strict", [OK, SKIP], SKIP),  # Airflow's all_success
        ("all_success_strict", [SKIP, FAIL], UPF),
        ("all_done_min_one_success", [FAIL, OK], RUN),
        ("all_done_min_one_success", [FAIL, SKIP], SKIP),
        ("all_skipped", [SKIP, SKIP], RUN),
        ("all_skipped", [SKIP, OK], SKIP),
        ("one_done", [SKIP, FAIL], RUN),
        ("one_done", [SKIP, OK], RUN),
        ("one_done", [SKIP, SKIP], SKIP),
        ("one_success", [SKIP, SKIP], SKIP),
        ("none_failed_min_one_success", [OK, SKIP], RUN),
        ("none_failed_min_one_success", [SKIP, SKIP], SKIP),
        ("none_failed_min_one_success", [OK, UPF], UPF),
        ("none_skipped", [OK, FAIL], RUN),
        ("none_skipped", [OK, SKIP], SKIP),
        ("always", [FAIL, SKIP], RUN),
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
