"""Callbacks on flows and tasks: the user's code told that a run or task ended, or retries.

``on_failure`` / ``on_success`` (and ``on_retry``) on a flow, ``on_failure`` / ``on_retry`` /
``on_success`` on a task. A callback is sync (run in a worker thread) or async; it gets one
:class:`CallbackContext`. One that raises is logged on ``evflow.alerts`` and never changes the
run's outcome. (Alert sinks, which post to webhooks, are in :mod:`evflow.alerts`.)
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping
from dataclasses import field
from types import MappingProxyType
from typing import Any, Literal

import anyio

from ..frozen import record
from ..records import RunRecord, TaskRecord
from ..states import RunState
from .dag import Flow
from .tasks import Task

__all__ = ["CallbackContext", "invoke_callback", "run_callbacks", "run_path", "task_callbacks"]

log = logging.getLogger("evflow.alerts")


@record
class CallbackContext:
    """What a callback is told: the run, the task (``None`` for a flow callback), its state."""

    flow: str
    run_id: str
    task: str | None
    state: str
    error: str | None = None
    attempt: int = 0
    params: Mapping[str, Any] = field(default_factory=dict)
    url_hint: str | None = None


def run_path(run_id: str) -> str:
    """The API path of a run, relative to the service's base URL."""
    return f"/api/runs/{run_id}"


async def invoke_callback(fn: Callable[..., Any], ctx: CallbackContext, kind: str = "") -> None:
    """Call ``fn(ctx)``: awaited if async, in a worker thread if sync; failures are logged."""
    try:
        if inspect.iscoroutinefunction(fn):
            await fn(ctx)
        else:
            value = await anyio.to_thread.run_sync(fn, ctx)
            if inspect.isawaitable(value):
                await value
    except Exception:
        log.exception(
            "%s callback %s of flow %r failed (run %s%s); the run goes on",
            kind or "a",
            getattr(fn, "__qualname__", repr(fn)),
            ctx.flow,
            ctx.run_id,
            f", task {ctx.task!r}" if ctx.task else "",
        )


async def task_callbacks(
    event: Literal["failure", "retry", "success"],
    flow: Flow,
    task: Task,
    run_id: str,
    record: TaskRecord,
    params: Mapping[str, Any],
) -> None:
    """The task's ``on_<event>`` callback; on a retry also the flow's ``on_retry``."""
    fns = [getattr(task, f"on_{event}", None)]
    if event == "retry":
        fns.append(flow.on_retry)
    if not any(fns):
        return
    ctx = CallbackContext(
        flow=flow.name,
        run_id=run_id,
        task=record.name,
        state=str(record.state),
        error=record.error,
        attempt=record.attempt,
        params=MappingProxyType(dict(params)),
        url_hint=run_path(run_id),
    )
    for fn in fns:
        if fn is not None:
            await invoke_callback(fn, ctx, f"on_{event}")


async def run_callbacks(flow: Flow, run: RunRecord) -> None:
    """The flow's ``on_success`` or ``on_failure`` callback for a run that just ended."""
    if run.state is RunState.SUCCEEDED:
        fn, kind = flow.on_success, "on_success"
    elif run.state is RunState.FAILED:
        fn, kind = flow.on_failure, "on_failure"
    else:
        return
    if fn is None:
        return
    ctx = CallbackContext(
        flow=flow.name,
        run_id=run.id,
        task=None,
        state=str(run.state),
        error=run.error,
        params=MappingProxyType(dict(run.params)),
        url_hint=run_path(run.id),
    )
    await invoke_callback(fn, ctx, kind)
