"""The :class:`~evflow.cli.client.Client` for a store in this process.

It opens the store (in one place, :func:`open_store`) and, for the commands that run flows
(``run``, ``retry``, ``backfill``), an engine of its own on that store.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

import anyio

from ..abc import Accepted
from ..events import Event
from ..flows import Flow
from ..records import AttemptRecord, LogRecord, RunRecord
from ..run.limits import Pool
from ..run.queue import new_run, queued_changes
from ..signals import TaskStateChanged
from ..store import connect, is_postgres, mask
from ..store.base import Store
from ..store.urls import sqlite_path
from .display import Progress

if TYPE_CHECKING:
    from ..audit import VerifyResult
    from ..engine import Engine

from .client import Backfilled, CliError, DecidedEvent, Queued, Retried

__all__ = ["LocalClient", "open_store", "retry_what"]


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
        pools: dict[str, int | Pool] = dict(cfg.pools)
        for fl in flows:
            for node in fl.nodes.values():
                if node.options.pool and node.options.pool not in pools:
                    pools[node.options.pool] = max(node.options.slots, 1)
        engine = Engine(
            self.store,
            pools=pools,
            max_tasks=cfg.engine.max_tasks,
            resume=False,
            grace_period_s=0,
            cluster=cfg.cluster.options(),
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
