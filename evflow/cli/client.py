"""One :class:`Client` for every command: a running service over HTTP, or a store right here.

This module holds what both sides share: the :class:`Client` protocol the commands are written
against, the results it hands back and :class:`CliError`.
:class:`~evflow.cli.http_client.HttpClient` speaks the service's JSON API (``/api/...``);
:class:`~evflow.cli.local_client.LocalClient` opens the store in this process and, for the
commands that run flows (``run``, ``retry``, ``backfill``), an engine of its own on that store.
Both hand back the store's typed records, so each command renders them once.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol

from ..abc import Accepted
from ..errors import EvflowError
from ..events import Event
from ..frozen import record
from ..records import AttemptRecord, AuditRecord, EventRecord, LogRecord, RunRecord

if TYPE_CHECKING:
    from ..audit import VerifyResult


__all__ = [
    "Backfilled",
    "CliError",
    "Client",
    "DecidedEvent",
    "Queued",
    "Retried",
]


class CliError(EvflowError):
    """A user error: printed as one line, exit status 2."""


@record
class Queued:
    """A run was queued: by a service that starts it now (``started``), or in a store."""

    run_id: str
    started: bool


@record
class Retried:
    """A retry: queued on a service, or run here to its end (``record``)."""

    run_id: str
    record: RunRecord | None = None


@record
class Backfilled:
    """A backfill: runs queued on a service, or run here (``failed`` is then known)."""

    run_ids: list[str]
    failed: list[str] | None = None


@record
class DecidedEvent:
    """An event with the rule decisions it caused (from the audit trail)."""

    event: EventRecord
    decisions: list[AuditRecord]


class Client(Protocol):
    """What the commands need from wherever the state is."""

    #: where the state is, for messages: ``the service at URL`` or ``the store PATH``
    where: str
    #: whether runs queued through this client start now (a service) or later (a store)
    starts_runs: bool

    async def __aenter__(self) -> Client: ...
    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def list_runs(
        self, *, flow: str | None, state: str | None, limit: int
    ) -> list[RunRecord]: ...
    async def get_run(self, run_id: str) -> RunRecord: ...
    async def list_attempts(self, run_id: str) -> list[AttemptRecord]: ...
    async def list_logs(self, run_id: str, task: str | None = None) -> list[LogRecord]: ...
    async def list_events(self, *, source: str | None, limit: int) -> list[DecidedEvent]: ...
    async def emit(self, event: Event) -> Accepted: ...
    async def trigger(self, flow: str, params: Mapping[str, Any]) -> Queued: ...
    async def cancel(self, run_id: str) -> bool: ...
    async def retry(
        self, run_id: str, *, from_task: str | None = None, whole: bool = False
    ) -> Retried: ...
    async def backfill(
        self, flow: str, start: datetime, end: datetime, max_active: int
    ) -> Backfilled: ...
    async def verify_audit(self) -> VerifyResult: ...
    async def export_audit(self, out: BinaryIO, since: float | None) -> int: ...


def __getattr__(name: str) -> Any:
    """The two clients and ``open_store``, still importable from here (they import this module)."""
    if name == "HttpClient":
        from .http_client import HttpClient

        return HttpClient
    if name in ("LocalClient", "open_store"):
        from . import local_client

        return getattr(local_client, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
