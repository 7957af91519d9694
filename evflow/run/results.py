"""What a caller gets back from a run: its state, and each task's state and result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from ..errors import RunFailed, TaskNotFound
from ..frozen import record
from ..records import RunRecord
from ..states import RunState, TaskState

__all__ = ["RunResult", "TaskResult"]


@record
class TaskResult:
    """One task instance's outcome as seen from the run's result."""

    name: str
    state: TaskState
    attempts: int
    result: Any = None
    error: str | None = None
    duration_s: float | None = None


@record
class RunResult:
    """A finished (or current) run: its state and each task's state and result."""

    run_id: str
    flow: str
    state: RunState
    params: Mapping[str, Any]
    tasks: Mapping[str, TaskResult]
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.state is RunState.SUCCEEDED

    def result(self, task: str) -> Any:
        """The result of ``task`` (a mapped task gives the list of its instances' results)."""
        try:
            return self.tasks[task].result
        except KeyError:
            raise TaskNotFound(
                f"run {self.run_id} has no task {task!r}; tasks: {', '.join(self.tasks)}"
            ) from None

    def raise_for_state(self) -> RunResult:
        if not self.ok:
            raise RunFailed(f"run {self.run_id} of flow {self.flow!r} {self.state}: {self.error}")
        return self

    @classmethod
    def from_record(cls, run: RunRecord) -> RunResult:
        tasks = {}
        for t in run.tasks:
            tasks[t.name] = TaskResult(
                name=t.name,
                state=t.state,
                attempts=t.attempt,
                result=orjson.loads(t.result) if t.result is not None else None,
                error=t.error,
                duration_s=t.duration_s,
            )
        return cls(
            run_id=run.id,
            flow=run.flow,
            state=run.state,
            params=dict(run.params),
            tasks=tasks,
            error=run.error,
        )
