"""Trigger rules: whether a task runs, given how its upstream tasks finished.

Rules are evaluated when all upstream tasks have finished. evflow's rules are Airflow's, with
one friendlier default: under ``all_success`` a skipped upstream (a branch not taken) is left out,
so a join after a branch still runs. ``all_success_strict`` is Airflow's ``all_success`` (a
skipped upstream skips the task); the Airflow compatibility layer uses it.

==============================  ================================================================
rule                            runs when
==============================  ================================================================
``all_success``                 every upstream that was not skipped succeeded (all skipped: skip)
``all_success_strict``          every upstream succeeded
``all_failed``                  every upstream failed (or was stopped by a failure)
``all_done``                    always, once every upstream is done
``all_done_min_one_success``    every upstream done, at least one succeeded
``all_skipped``                 every upstream was skipped
``one_success``                 at least one upstream succeeded
``one_failed``                  at least one upstream failed
``one_done``                    at least one upstream succeeded or failed
``none_failed``                 no upstream failed (succeeded or skipped)
``none_failed_min_one_success`` no upstream failed, and at least one succeeded
``none_skipped``                no upstream was skipped
``always``                      always
==============================  ================================================================

A task whose rule is not met is ``upstream_failed`` when an upstream failure is the reason,
else ``skipped``. (A task that a branch did not choose is ``skipped`` whatever its rule; the
executor decides that before asking its rule.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias

from ..states import TaskState

__all__ = ["FAILED_STATES", "TRIGGER_RULES", "TriggerRule", "decide"]

TriggerRule: TypeAlias = Literal[
    "all_success",
    "all_success_strict",
    "all_failed",
    "all_done",
    "all_done_min_one_success",
    "all_skipped",
    "one_success",
    "one_failed",
    "one_done",
    "none_failed",
    "none_failed_min_one_success",
    "none_skipped",
    "always",
]
TRIGGER_RULES: frozenset[str] = frozenset(TriggerRule.__args__)  # type: ignore[attr-defined]

#: Upstream states that count as failed for the rules (and make a run fail).
FAILED_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED})


def decide(rule: str, states: Sequence[TaskState]) -> TaskState | None:
    """What a task with trigger ``rule`` does given its finished upstream states.

    Returns ``None`` to run it, or the state to give it instead (skipped / upstream_failed).
    """
    if not states or rule in ("always", "all_done"):
        return None
    if rule == "all_success":
        for s in states:
            if s is not TaskState.SUCCEEDED:
                break
        else:
            return None  # every upstream succeeded: the common case, decided without counting
    skipped = sum(1 for s in states if s is TaskState.SKIPPED)
    failed = sum(1 for s in states if s in FAILED_STATES)
    ok = sum(1 for s in states if s is TaskState.SUCCEEDED)
    total = len(states)
    fail = TaskState.UPSTREAM_FAILED
    skip = TaskState.SKIPPED
    if rule == "all_success":
        if failed:
            return fail
        return None if ok else skip  # skipped upstreams are left out; all skipped: skip
    if rule == "all_success_strict":
        return fail if failed else (None if ok == total else skip)
    if rule == "all_failed":
        return None if failed == total else skip
    if rule == "all_done_min_one_success":
        return None if ok else skip
    if rule == "all_skipped":
        return None if skipped == total else skip
    if rule == "one_success":
        return None if ok else (fail if failed else skip)
    if rule == "one_failed":
        return None if failed else skip
    if rule == "one_done":
        return None if ok or failed else skip
    if rule == "none_failed":
        return None if not failed else fail
    if rule == "none_failed_min_one_success":
        return fail if failed else (None if ok else skip)
    if rule == "none_skipped":
        return None if not skipped else skip
    raise ValueError(f"unknown trigger rule {rule!r}")
