"""One :class:`Client` for every command: a running service over HTTP, or a store right here.

:class:`HttpClient` speaks the service's JSON API (``/api/...``). :class:`LocalClient` opens the
store in this process (in one place, :func:`open_store`) and, for the commands that run flows
(``run``, ``retry``, ``backfill``), an engine of its own on that store. Both hand back the
store's typed records, so each command renders them once.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, Protocol, TextIO

import anyio
import httpx
import orjson

from ..abc import Accepted
from ..errors import EvflowError
from ..events import Event
from ..flows import Flow
from ..records import AttemptRecord, AuditRecord, EventRecord, LogRecord, RunRecord, TaskRecord
from ..run.queue import new_run, queued_changes
from ..signals import TaskStateChanged
from ..states import RunState, TaskState
from ..store import connect, is_postgres, mask
from ..store.base import Store
from ..store.urls import sqlite_path
from .display import Progress

if TYPE_CHECKING:
    from ..audit import VerifyResult
    from ..engine import Engine

__all__ = [
    "Backfilled",
    "CliError",
    "Client",
    "DecidedEvent",
    "HttpClient",
    "LocalClient",
    "Queued",
    "Retried",
    "open_store",
]

HTTP_TIMEOUT_S = 30.0


class CliError(EvflowError):
    """A user error: printed as one line, exit status 2."""


@dataclass(frozen=True, slots=True)
class Queued:
    """A run was queued: by a service that starts it now (``started``), or in a store."""

    run_id: str
    started: bool


@dataclass(frozen=True, slots=True)
class Retried:
    """A retry: queued on a service, or run here to its end (``record``)."""

    run_id: str
    record: RunRecord | None = None


@dataclass(frozen=True, slots=True)
class Backfilled:
    """A backfill: runs queued on a service, or run here (``failed`` is then known)."""

    run_ids: list[str]
    failed: list[str] | None = None


@dataclass(frozen=True, slots=True)
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


# -- HTTP ---------------------------------------------------------------------------------------


def run_from_json(d: Mapping[str, Any]) -> RunRecord:
    """A run as the API shows it, back into a record."""
    tasks = tuple(
        TaskRecord(
            run_id=d["id"],
            name=t["name"],
            node=t["node"],
            state=TaskState(t["state"]),
            attempt=t["attempt"],
            map_index=t.get("map_index"),
            queued_at=t.get("queued_at"),
            started_at=t.get("started_at"),
            ended_at=t.get("ended_at"),
            waiting=t.get("waiting"),
            error=t.get("error"),
            traceback=t.get("traceback"),
            result=orjson.dumps(t["result"]) if t.get("result") is not None else None,
        )
        for t in d.get("tasks", [])
    )
    return RunRecord(
        id=d["id"],
        flow=d["flow"],
        flow_version=d["flow_version"],
        params=d["params"],
        state=RunState(d["state"]),
        created_at=d["created_at"],
        priority=d.get("priority", 0),
        trigger=d.get("trigger", {}),
        started_at=d.get("started_at"),
        ended_at=d.get("ended_at"),
        waiting=d.get("waiting"),
        error=d.get("error"),
        tasks=tasks,
    )


def _event_from_json(e: Mapping[str, Any]) -> EventRecord:
    return EventRecord(
        seq=e.get("seq", 0),
        uid=e.get("uid", e["id"]),
        id=e["id"],
        dedup_key=e.get("dedup_key", ""),
        type=e["type"],
        source=e["source"],
        subject=e.get("subject"),
        time=e["time"],
        data=e.get("data"),
        extensions=e.get("extensions", {}),
        received_at=e.get("received_at", 0.0),
        status=e["status"],
    )


def _audit_from_json(a: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=a["seq"],
        time=a["time"],
        kind=a["kind"],
        subject=a["subject"],
        actor=a.get("actor"),
        data=a.get("data"),
        prev_hash=a.get("prev_hash", ""),
        hash=a.get("hash", ""),
    )


class HttpClient:
    """A running service, through its JSON API."""

    starts_runs = True

    def __init__(self, url: str, token: str | None = None) -> None:
        self.base = url.rstrip("/")
        self.where = f"the service at {self.base}"
        headers = {"Accept": "application/json"}
        token = token or os.environ.get("EVFLOW_API_TOKEN")
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.AsyncClient(base_url=self.base, headers=headers, timeout=HTTP_TIMEOUT_S)

    async def __aenter__(self) -> HttpClient:
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._http.aclose()

    async def _call(
        self, method: str, path: str, body: Any = None, query: Mapping[str, Any] | None = None
    ) -> Any:
        params = {k: v for k, v in (query or {}).items() if v is not None}
        content = orjson.dumps(body) if body is not None else None
        headers = {"Content-Type": "application/json"} if content is not None else None
        try:
            resp = await self._http.request(
                method, path, params=params, content=content, headers=headers
            )
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach {self.where}: {exc or type(exc).__name__}") from None
        if resp.is_error:
            try:
                msg = str(orjson.loads(resp.content).get("error", resp.text))
            except (orjson.JSONDecodeError, AttributeError):
                msg = resp.text[:200]
            raise CliError(f"{method} {self.base}{path}: HTTP {resp.status_code}: {msg}")
        return orjson.loads(resp.content) if resp.content else None

    async def list_runs(
        self, *, flow: str | None, state: str | None, limit: int
    ) -> list[RunRecord]:
        data = await self._call(
            "GET", "/api/runs", query={"flow": flow, "state": state, "limit": limit}
        )
        return [run_from_json(r) for r in data["runs"]]

    async def get_run(self, run_id: str) -> RunRecord:
        return run_from_json(await self._call("GET", f"/api/runs/{run_id}"))

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]:
        data = await self._call("GET", f"/api/runs/{run_id}")
        return [
            AttemptRecord(
                run_id=data["id"],
                task=a["task"],
                attempt=a["attempt"],
                state=TaskState(a["state"]),
                started_at=a.get("started_at"),
                ended_at=a.get("ended_at"),
                error=a.get("error"),
            )
            for a in data.get("attempts", [])
        ]

    async def list_logs(self, run_id: str, task: str | None = None) -> list[LogRecord]:
        data = await self._call("GET", f"/api/runs/{run_id}/logs", query={"task": task})
        return [
            LogRecord(
                run_id=data["run_id"],
                task=r["task"],
                attempt=r["attempt"],
                time=r["time"],
                level=r["level"],
                message=r["message"],
                seq=r.get("seq", 0),
            )
            for r in data["logs"]
        ]

    async def list_events(self, *, source: str | None, limit: int) -> list[DecidedEvent]:
        data = await self._call("GET", "/api/events", query={"limit": limit, "source": source})
        return [
            DecidedEvent(_event_from_json(e), [_audit_from_json(a) for a in e.get("decisions", [])])
            for e in data["events"]
        ]

    async def emit(self, event: Event) -> Accepted:
        res = await self._call("POST", "/api/events", event.to_dict())
        return Accepted(res["event_id"], bool(res.get("duplicate")))

    async def trigger(self, flow: str, params: Mapping[str, Any]) -> Queued:
        res = await self._call("POST", f"/api/flows/{flow}/runs", {"params": dict(params)})
        return Queued(res["run_id"], started=True)

    async def cancel(self, run_id: str) -> bool:
        return bool((await self._call("POST", f"/api/runs/{run_id}/cancel")).get("cancelled"))

    async def retry(
        self, run_id: str, *, from_task: str | None = None, whole: bool = False
    ) -> Retried:
        body = {"from_task": from_task, "whole": whole}
        return Retried((await self._call("POST", f"/api/runs/{run_id}/retry", body))["run_id"])

    async def backfill(
        self, flow: str, start: datetime, end: datetime, max_active: int
    ) -> Backfilled:
        body = {"start": start.isoformat(), "end": end.isoformat(), "max_active": max_active}
        return Backfilled(
            list((await self._call("POST", f"/api/flows/{flow}/backfill", body))["run_ids"])
        )

    async def verify_audit(self) -> VerifyResult:
        raise CliError(
            "audit verify checks the store itself, not what a service reports: "
            "run it where the store is, with --store PATH"
        )

    async def export_audit(self, out: BinaryIO, since: float | None) -> int:
        count, after_seq, page = 0, 0, 10_000
        while True:
            data = await self._call("GET", "/api/audit", query={"since": since, "limit": page})
            records = [a for a in data["audit"] if a["seq"] > after_seq]
            for rec in records:
                out.write(orjson.dumps(rec) + b"\n")
            count += len(records)
            if len(data["audit"]) < page or not records:
                return count
            after_seq, since = records[-1]["seq"], records[-1]["time"]


# -- a store right here -------------------------------------------------------------------------


def retry_what(from_task: str | None, whole: bool) -> str:
    """What a retry runs again, in words."""
    if whole:
        return "running every task again"
    if from_task:
        return f"running {from_task!r} and everything downstream of it again"
    return "retrying its failed tasks"


def open_store(path: str) -> Store:
    """The store at ``path``: the one place the command line opens a store."""
    return connect(path)


class LocalClient:
    """A store in this process; an engine of its own on it for the commands that run flows.

    ``project`` is the folder whose ``flows/`` the engine runs (``retry``, ``backfill``);
    ``out`` is where a run's live progress goes.
    """

    starts_runs = False

    def __init__(
        self,
        path: str,
        *,
        project: str | os.PathLike[str] = ".",
        must_exist: bool = True,
        out: TextIO = sys.stdout,
    ) -> None:
        self.location = path
        self.path = mask(path)  # for messages: never the password
        self.where = f"the store {self.path}"
        self.project = Path(project)
        self.must_exist = must_exist
        self.out = out
        self._store: Store | None = None
        self._cm: Any = None

    async def __aenter__(self) -> LocalClient:
        if (
            self.must_exist
            and not is_postgres(self.location)
            and not await anyio.Path(sqlite_path(self.location)).exists()
        ):
            raise CliError(f"no store at {self.path} (nothing has run yet, or pass --store PATH)")
        self._cm = open_store(self.location)
        self._store = await self._cm.__aenter__()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._cm is not None:
            await self._cm.__aexit__(et, e, tb)
        self._store = self._cm = None

    @property
    def store(self) -> Store:
        assert self._store is not None, "use `async with LocalClient(...)`"
        return self._store

    # -- reads ---------------------------------------------------------------------------------
    async def list_runs(
        self, *, flow: str | None, state: str | None, limit: int
    ) -> list[RunRecord]:
        return await self.store.list_runs(flow=flow, state=state, limit=limit)

    async def get_run(self, run_id: str) -> RunRecord:
        return await self.store.get_run(run_id)

    async def list_attempts(self, run_id: str) -> list[AttemptRecord]:
        run = await self.store.get_run(run_id, with_tasks=False)
        return await self.store.list_attempts(run.id)

    async def list_logs(self, run_id: str, task: str | None = None) -> list[LogRecord]:
        run = await self.store.get_run(run_id, with_tasks=False)
        return await self.store.list_logs(run.id, task)

    async def list_events(self, *, source: str | None, limit: int) -> list[DecidedEvent]:
        return [
            DecidedEvent(e, await self.store.list_audit(subject=f"event:{e.uid}"))
            for e in await self.store.list_events(limit=limit, source=source)
        ]

    async def verify_audit(self) -> VerifyResult:
        from ..audit import verify

        return await verify(self.store)

    async def export_audit(self, out: BinaryIO, since: float | None) -> int:
        from ..audit import export

        return await export(self.store, out, since)

    # -- writes: recorded in the store, decided and run by the service that runs on it ------------
    async def emit(self, event: Event) -> Accepted:
        (accepted,) = await self.store.add_events([event])
        return accepted

    async def trigger(self, flow: str, params: Mapping[str, Any]) -> Queued:
        fl = self.project_flow(flow)
        run = new_run(fl, params, trigger={"kind": "cli"})
        await self.store.apply(queued_changes(fl, [run]), wait=True)
        return Queued(run.id, started=False)

    async def cancel(self, run_id: str) -> bool:
        # For a run no service is running: queued, or left by a stopped service.
        async with self.engine([]) as engine:
            return await engine.cancel(run_id, actor="cli")

    # -- runs here, with progress ----------------------------------------------------------------
    async def run(self, fl: Flow, params: Mapping[str, Any]) -> RunRecord:
        """Run ``fl`` in this process to its end, showing its progress."""
        async with self.engine([fl]) as engine:
            run_id = await engine.submit_run(fl, params, trigger={"kind": "cli"})
            self.out.write(f"run {run_id} of flow {fl.name} (store {self.path})\n")
            return await self._follow(engine, fl, run_id)

    async def retry(
        self, run_id: str, *, from_task: str | None = None, whole: bool = False
    ) -> Retried:
        flow_name = (await self.store.get_run(run_id, with_tasks=False)).flow
        fl = self.project_flow(flow_name, what=f"run {run_id} is of flow {flow_name!r}, which")
        async with self.engine([fl]) as engine:
            new_id = await engine.retry(run_id, from_task=from_task, whole=whole, actor="cli")
            self.out.write(f"run {new_id} of flow {fl.name}: {retry_what(from_task, whole)}\n")
            return Retried(new_id, await self._follow(engine, fl, new_id))

    async def backfill(
        self, flow: str, start: datetime, end: datetime, max_active: int
    ) -> Backfilled:
        fl = self.project_flow(flow)
        async with self.engine([fl]) as engine:
            run_ids = await engine.backfill(flow, start, end, max_active=max_active, actor="cli")
            print(f"{len(run_ids)} run(s) of flow {flow} to backfill", file=sys.stderr)
            results = [await engine.wait(rid) for rid in run_ids]
        return Backfilled(run_ids, [r.run_id for r in results if not r.ok])

    def project_flow(self, name: str, *, what: str | None = None) -> Flow:
        from ..service.loader import load_project

        dep = load_project(self.project)
        if name not in dep.flows:
            raise CliError(
                f"{what or f'flow {name!r}'} is not in {dep.root / 'flows'} "
                f"(flows: {', '.join(sorted(dep.flows)) or 'none'}; pass --project)"
            )
        return dep.flows[name]

    def engine(self, flows: list[Flow]) -> Engine:
        """An engine on this store with ``flows`` (no schedules, no resume).

        A pool the config does not size gets as many slots as its largest task takes.
        """
        from ..engine import Engine
        from ..service.config import load_config

        cfg = load_config(self.project)
        pools = dict(cfg.pools)
        for fl in flows:
            for node in fl.nodes.values():
                if node.options.pool and node.options.pool not in pools:
                    pools[node.options.pool] = max(node.options.slots, 1)
        engine = Engine(
            self.store, pools=pools, max_tasks=cfg.engine.max_tasks, resume=False, grace_period_s=0
        )
        for fl in flows:
            engine.add(fl, schedule=False)
        return engine

    async def _follow(self, engine: Engine, fl: Flow, run_id: str) -> RunRecord:
        progress = Progress(fl.name, list(fl.nodes), self.out)

        def task_state(signal: TaskStateChanged) -> None:
            inst = signal.task
            if inst.run_id == run_id:
                progress.update(
                    inst.name,
                    inst.node,
                    str(inst.state),
                    inst.attempt,
                    inst.started_at,
                    inst.ended_at,
                    inst.waiting or inst.error or "",
                )

        engine.signals.subscribe(TaskStateChanged, task_state)
        progress.draw()
        await engine.wait(run_id)
        progress.draw()
        return await engine.store.get_run(run_id)
