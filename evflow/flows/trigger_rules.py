"""Trigger rules: whether a task runs, given how its upstream tasks finished.

Rules are evaluated when all upstream tasks have finished. Skipped upstream tasks (a branch not
taken) are left out of the count, so a join after a branch still runs:

* ``all_success`` — all non-skipped upstreams succeeded (all skipped → skipped);
* ``none_failed`` — no upstream failed (runs even if all were skipped);
* ``all_done`` — always runs;
* ``one_success`` — at least one succeeded; ``one_failed`` — at least one failed;
* ``all_failed`` — every non-skipped upstream failed.

A task whose rule is not met is ``upstream_failed`` when an upstream failed, else ``skipped``.
(A task that a branch did not choose is ``skipped`` whatever its rule; the executor decides
that before asking its rule.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeAlias

from ..states import TaskState

__all__ = ["FAILED_STATES", "TRIGGER_RULES", "TriggerRule", "decide"]

TriggerRule: TypeAlias = Literal[
    "all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed"
]
TRIGGER_RULES: frozenset[str] = frozenset(
    ["all_success", "all_done", "one_success", "one_failed", "none_failed", "all_failed"]
)

#: Upstream states that count as failed for the rules (and make a run fail).
FAILED_STATES = frozenset({TaskState.FAILED, TaskState.UPSTREAM_FAILED, TaskState.CANCELLED})


def decide(rule: str, states: Sequence[TaskState]) -> TaskState | None:
    """What a task with trigger ``rule`` does given its finished upstream states.

    Returns ``None`` to run it, or the state to give it instead (skipped / upstream_failed).
    """
    if not states:
        return None
    live = [s for s in states if s is not TaskState.SKIPPED]
    failed = sum(1 for s in live if s in FAILED_STATES)
    ok = sum(1 for s in live if s is TaskState.SUCCEEDED)
    if rule == "all_done":
        return None
    if rule == "none_failed":
        return None if failed == 0 else TaskState.UPSTREAM_FAILED
    if not live:
        return TaskState.SKIPPED
    if rule == "all_success":
        return None if failed == 0 else TaskState.UPSTREAM_FAILED
    if rule == "one_success":
        return None if ok else TaskState.UPSTREAM_FAILED
    if rule == "one_failed":
        return None if failed else TaskState.SKIPPED
    if rule == "all_failed":
        return None if failed == len(live) else TaskState.SKIPPED
    raise ValueError(f"unknown trigger rule {rule!r}")
