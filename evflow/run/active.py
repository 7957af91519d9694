"""A run this engine holds, from the moment it is started until it ends: waiting at a run gate,
then executing."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio

from ..latch import Latch
from ..records import RunRecord

if TYPE_CHECKING:
    from .executor import RunExecution

__all__ = ["ActiveRun"]


@dataclass(slots=True)
class ActiveRun:
    """A run held here; ``done`` is set once its driver has ended."""

    record: RunRecord
    #: While the run waits at a run gate: the scope that lets it go when it is stopped. A run
    #: that no gate applies to (most) has none: it is stopped through its execution.
    scope: anyio.CancelScope | None = None
    execution: RunExecution | None = None
    done: Latch = field(default_factory=Latch)
    cancel_reason: str | None = None
    stopped: bool = False  # stopped before it executed: it never will

    def let_go(self) -> None:
        """Stop the run before it executes: it leaves its gate, or never reaches one."""
        self.stopped = True
        if self.scope is not None:
            self.scope.cancel()
