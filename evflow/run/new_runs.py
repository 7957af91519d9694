"""A new run: its id, its record with params bound, its pending tasks, what queueing it writes."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ..events import new_id
from ..flows.dag import Flow
from ..records import RunRecord, TaskRecord
from ..states import RunState, TaskState
from ..store import writes
from ..store.base import Changes

__all__ = [
    "new_run",
    "pending_tasks",
    "queued_changes",
    "run_id_for",
    "slot_params",
    "with_downstream",
]


def run_id_for(key: str, since: str | None = None) -> str:
    """A deterministic run id for an idempotency key: a replay finds the same run.

    ``since`` is an id made by :func:`~evflow.events.new_id` (the uid of the event that
    started the run, say): the run id then begins with its time, as a run id made fresh does,
    so runs started by events are stored in time order too."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    return digest[:32] if since is None else since[:12] + digest[12:32]


def new_run(
    flow: Flow,
    params: Mapping[str, Any],
    *,
    run_id: str | None = None,
    priority: int = 0,
    trigger: Mapping[str, Any] | None = None,
) -> RunRecord:
    """A queued run record of ``flow`` with its params bound (raises if they don't bind)."""
    return RunRecord(
        id=run_id or new_id(),
        flow=flow.name,
        flow_version=flow.version,
        params=flow.bind_params(params),
        state=RunState.QUEUED,
        created_at=time.time(),
        priority=priority,
        trigger=dict(trigger or {"kind": "api"}),
    )


def pending_tasks(flow: Flow, run: RunRecord) -> list[TaskRecord]:
    """One pending task row per node of ``flow``, for a new run."""
    return [TaskRecord(run_id=run.id, name=n, node=n, state=TaskState.PENDING) for n in flow.nodes]


def queued_changes(flow: Flow, runs: Sequence[RunRecord], actor: str | None = None) -> Changes:
    """What queueing ``runs`` writes: the runs, their pending tasks, ``run.queued`` records."""
    return writes.runs_queued(
        flow.name, runs, [t for r in runs for t in pending_tasks(flow, r)], actor
    )


def with_downstream(flow: Flow, name: str) -> set[str]:
    """``name`` and every task downstream of it."""
    found: set[str] = set()
    stack = [flow.nodes[name]]
    while stack:
        node = stack.pop()
        if node.name not in found:
            found.add(node.name)
            stack.extend(node.downstream)
    return found


def slot_params(flow: Flow, slot: datetime) -> dict[str, Any]:
    """A flow that takes a ``scheduled_time`` parameter gets its slot's time (ISO 8601)."""
    if "scheduled_time" in flow.defaults or "scheduled_time" in flow.required:
        return {"scheduled_time": slot.isoformat()}
    return {}
