"""The :class:`~evflow.cli.client.Client` for a running service, through its JSON API."""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO

import httpx
import orjson

from ..abc import Accepted
from ..events import Event
from ..records import AttemptRecord, AuditRecord, EventRecord, LogRecord, RunRecord, TaskRecord
from ..states import RunState, TaskState

if TYPE_CHECKING:
    from ..audit import VerifyResult

from .client import Backfilled, CliError, DecidedEvent, Queued, Retried

__all__ = ["HttpClient", "run_from_json"]

HTTP_TIMEOUT_S = 30.0


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
