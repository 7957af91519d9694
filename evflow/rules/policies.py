"""The policies a rule may carry (batch, correlate; debounce is a number of seconds) and the
when-running policy (queue, skip, replace)."""

from __future__ import annotations

from typing import Literal, TypeAlias

from ..errors import RuleError
from ..frozen import record
from .match import _ROOTS, _is_number, parse_path

WhenRunning: TypeAlias = Literal["queue", "skip", "replace"]
PolicyAction: TypeAlias = Literal["start", "skip", "replace"]
TimeoutAction: TypeAlias = Literal["ignore", "alert", "run"]

_WHEN_RUNNING = ("queue", "skip", "replace")
_ON_TIMEOUT = ("ignore", "alert", "run")


def policy_action(when_running: str, active_runs: int) -> PolicyAction:
    """What to do with a new run when the flow has ``active_runs`` active runs.

    ``queue`` always starts (the run waits for a free slot), ``skip`` drops it and ``replace``
    cancels the active runs first, each only when a run is active.
    """
    if when_running not in _WHEN_RUNNING:
        raise RuleError(
            f"when_running must be one of {', '.join(_WHEN_RUNNING)}, not {when_running!r}"
        )
    if active_runs < 0:
        raise RuleError(f"active_runs must be >= 0, not {active_runs}")
    if active_runs == 0 or when_running == "queue":
        return "start"
    return "skip" if when_running == "skip" else "replace"


@record
class Batch:
    """Collect ``count`` events, or the events of ``window_s`` seconds from the first, into one run.

    The run's parameter ``param`` is the list of each event's mapped params (or of event dicts
    ``{id, type, source, subject, time, data}`` when the rule has no ``params``).
    """

    count: int | None = None
    window_s: float | None = None
    param: str = "events"

    def __post_init__(self) -> None:
        if self.count is None and self.window_s is None:
            raise RuleError("batch needs a count, a window_s or both")
        if self.count is not None and (
            not isinstance(self.count, int) or isinstance(self.count, bool) or self.count < 1
        ):
            raise RuleError(f"batch count must be an integer >= 1, not {self.count!r}")
        if self.window_s is not None and (not _is_number(self.window_s) or self.window_s <= 0):
            raise RuleError(f"batch window_s must be a number > 0, not {self.window_s!r}")
        if not isinstance(self.param, str) or not self.param.isidentifier():
            raise RuleError(f"batch param must be an identifier, not {self.param!r}")


@record
class Correlate:
    """Pair an ``a`` event with a ``b`` event (type globs) whose ``key`` paths are equal.

    The pair must arrive within ``window_s`` of each other. A lone event times out after
    ``window_s``: ``on_timeout`` says whether that is ignored, alerted, or runs with only the
    side present (the other side's params are None).
    """

    a: str
    b: str
    key: str
    window_s: float
    on_timeout: TimeoutAction = "ignore"

    def __post_init__(self) -> None:
        for side in ("a", "b"):
            glob = getattr(self, side)
            if not isinstance(glob, str) or not glob:
                raise RuleError(f"correlate {side} must be a non-empty type glob, not {glob!r}")
        if not isinstance(self.key, str) or parse_path(self.key) is None:
            raise RuleError(
                f"correlate key {self.key!r} is not a path ({', '.join(_ROOTS)} or data.<path>)"
            )
        if not _is_number(self.window_s) or self.window_s <= 0:
            raise RuleError(f"correlate window_s must be a number > 0, not {self.window_s!r}")
        if self.on_timeout not in _ON_TIMEOUT:
            raise RuleError(
                f"correlate on_timeout must be one of {', '.join(_ON_TIMEOUT)}, "
                f"not {self.on_timeout!r}"
            )
