"""Every exception evflow raises on purpose, in one place.

All derive from :class:`EvflowError`; where a stdlib base fits, it is a second base so that
callers who catch ``LookupError`` or ``ValueError`` still catch ours.
"""

from __future__ import annotations

from collections.abc import Mapping


class EvflowError(Exception):
    """Base class of every error evflow raises on purpose."""


class FlowDefinitionError(EvflowError, ValueError):
    """A flow does not validate: a cycle, a duplicate or foreign task, a non-callable, ...

    The message names the flow, the task and the file and line of the definition.
    """

    def __init__(
        self,
        message: str,
        *,
        flow: str | None = None,
        task: str | None = None,
        location: str | None = None,
    ) -> None:
        self.flow = flow
        self.task = task
        self.location = location
        parts = [message]
        if location:
            parts.append(f"(defined at {location})")
        super().__init__(" ".join(parts))


class CycleError(FlowDefinitionError):
    """The task graph of a flow has a cycle."""


class DuplicateTaskError(FlowDefinitionError):
    """Two tasks of one flow have the same name."""


class FlowNotFound(EvflowError, LookupError):
    """No flow of that name is registered or found."""


class RunNotFound(EvflowError, LookupError):
    """No run with that id is in the store."""


class EventNotFound(EvflowError, LookupError):
    """No event with that id is in the store."""


class TaskNotFound(EvflowError, LookupError):
    """No task of that name is in the run or flow."""


class UnknownPoolError(EvflowError, LookupError):
    """A task names a pool that the engine does not have."""


class ParamError(EvflowError, ValueError):
    """Run parameters do not fit the flow: missing, unknown or malformed."""


class ResultNotSerializable(EvflowError, TypeError):
    """A task returned a value that cannot be stored as JSON."""


class ScheduleError(EvflowError, ValueError):
    """A schedule (cron expression, interval, time zone) does not parse or is out of range."""


class RuleError(EvflowError, ValueError):
    """A rule is malformed: bad match filter, bad parameter path, unknown policy."""


class EventError(EvflowError, ValueError):
    """An event (or the bytes it came from) is malformed."""


class SensorError(EvflowError):
    """A sensor is misconfigured or cannot start."""


class StoreError(EvflowError):
    """The store cannot be opened, migrated or written."""


class SchemaVersionError(StoreError):
    """The store was written by a newer evflow than this one."""


class ConfigError(EvflowError, ValueError):
    """A configuration file or environment variable is invalid."""


class LoadError(EvflowError):
    """A flow or sensor file could not be loaded (import error, syntax error, bad definition)."""


class EngineNotRunning(EvflowError, RuntimeError):
    """The engine was used outside its ``async with`` block."""


class Saturated(EvflowError):
    """The engine's backlog is full; the caller should retry later."""

    def __init__(self, message: str = "engine backlog is full", retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class WebhookRejected(EvflowError):
    """A webhook request refused, with the HTTP ``status`` and ``headers`` to answer."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})


class StoreUnavailable(Saturated, StoreError):
    """The store's database cannot be reached right now (evflow reconnects with backoff);
    nothing was stored, and the caller should retry later, as when the backlog is full."""

    def __init__(self, message: str, retry_after_s: float = 5.0) -> None:
        super().__init__(message, retry_after_s)


class StoreInUse(StoreError):
    """Another live evflow instance runs this store's work (it holds the store's lease)."""


class OwnershipLost(EvflowError):
    """This instance could not renew its lease on the store in time, or another took it: it
    stops its work, so that two instances never run the same runs."""


class RunFailed(EvflowError):
    """Raised by ``RunResult.raise_for_state()`` when a run did not succeed."""


class ApiError(EvflowError):
    """An HTTP API answer other than success: its status, a message for the caller, and any
    headers it needs (``WWW-Authenticate``, ``Retry-After``)."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers
