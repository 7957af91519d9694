"""Callbacks and alert sinks: a real Engine on SQLite, a real HTTP receiver on a loopback port."""

from __future__ import annotations

import logging
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import orjson
import pytest
from anyio.abc import TaskStatus
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evflow import Correlate, Engine, Event, Flow, Rule, RunState, flow, task
from evflow.clock import ManualClock
from evflow.errors import FlowDefinitionError
from evflow.http.server import HttpServer
from evflow.service.alerts import AlertManager, CallbackContext
from evflow.service.config import AlertSink
from tests.engines import new_engine
from tests.observers import LIMIT_S, until


class Receiver:
    """A local HTTP endpoint recording every JSON body POSTed to ``/<name>``.

    ``/broken`` answers 500; ``/slow`` answers only once ``release`` is set.
    """

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any]]] = []
        self.release = anyio.Event()
        self._changed = anyio.Event()
        self.port = 0
        self.app = Starlette(routes=[Route("/{name}", self._endpoint, methods=["POST"])])

    async def _endpoint(self, request: Request) -> Response:
        name = request.path_params["name"]
        if name == "broken":
            return Response("boom", status_code=500)
        if name == "slow":
            await self.release.wait()
            return Response(status_code=204)
        self.received.append((name, orjson.loads(await request.body())))
        self._changed.set()
        self._changed = anyio.Event()
        return Response(status_code=204)

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name}"

    def bodies(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            b for n, b in self.received if n == name and (kind is None or b.get("kind") == kind)
        ]

    async def until(self, name: str, kind: str | None = None, n: int = 1) -> list[dict[str, Any]]:
        with anyio.fail_after(LIMIT_S):
            while len(self.bodies(name, kind)) < n:
                await self._changed.wait()
        return self.bodies(name, kind)


@asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    async with anyio.create_task_group() as tg:
        with anyio.fail_after(LIMIT_S):
            rec.port = await tg.start(HttpServer(access_log=False).serve, rec.app, "127.0.0.1", 0)
        try:
            yield rec
        finally:
            rec.release.set()
            tg.cancel_scope.cancel()


@asynccontextmanager
async def alerting(
    engine: Engine, sinks: Sequence[AlertSink], **options: Any
) -> AsyncIterator[AlertManager]:
    """An AlertManager observing ``engine``; on exit it is closed and has sent what it queued."""
    manager = AlertManager(sinks, **options).attach(engine)
    done = anyio.Event()

    async def run(*, task_status: TaskStatus[None]) -> None:
        try:
            await manager.run(task_status=task_status)
        finally:
            done.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(LIMIT_S):
            await tg.start(run)
        yield manager
        manager.close()
        with anyio.fail_after(LIMIT_S):
            await done.wait()


def closed_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def alerts_log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "evflow.alerts")


# -- flows used below --------------------------------------------------------------------------
@task(retries=1, retry_delay=0)
async def always_fails() -> None:
    raise RuntimeError("disk on fire")


@flow
def fragile() -> None:
    always_fails()


@task
async def fine() -> str:
    return "ok"


@flow
def sturdy() -> None:
    fine()


# -- run_failed -------------------------------------------------------------------------------
async def test_a_failed_run_sends_exactly_one_alert(tmp_path: Path) -> None:
    async with receiver() as rec:
        engine = new_engine(tmp_path)
        sinks = [AlertSink("ops", rec.url("hook"))]
        async with engine, alerting(engine, sinks, base_url="http://evflow.local") as alerts:
            with anyio.fail_after(LIMIT_S):
                result = await engine.run(fragile)
                ok = await engine.run(sturdy)
            assert result.state is RunState.FAILED
            assert result.tasks["always_fails"].attempts == 2  # failed twice: retries=1
            assert ok.ok
            (body,) = await rec.until("hook", "run_failed")
            # A duplicated notification of the same ending does not send a second alert.
            alerts.run_state(await engine.store.get_run(result.run_id, with_tasks=False))
        bodies = rec.bodies("hook")
        assert len(bodies) == 1, bodies
        assert body["kind"] == "run_failed"
        assert body["flow"] == "fragile"
        assert body["run_id"] == result.run_id
        assert body["state"] == "failed"
        assert "always_fails" in body["error"]
        assert body["time"] and body["started_at"] and body["ended_at"]
        assert body["url"] == f"http://evflow.local/api/runs/{result.run_id}"
        assert alerts.sent == 1 and alerts.failed == 0


async def test_a_retried_run_that_fails_again_alerts_again(tmp_path: Path) -> None:
    async with receiver() as rec:
        engine = new_engine(tmp_path)
        async with engine, alerting(engine, [AlertSink("ops", rec.url("hook"))]):
            with anyio.fail_after(LIMIT_S):
                first = await engine.run(fragile)
                await rec.until("hook", "run_failed")
                await engine.retry(first.run_id)
                again = await engine.wait(first.run_id)
            assert again.state is RunState.FAILED
            await rec.until("hook", "run_failed", n=2)
        assert [b["run_id"] for b in rec.bodies("hook")] == [first.run_id] * 2


async def test_slack_sink_gets_a_readable_message(tmp_path: Path) -> None:
    async with receiver() as rec:
        engine = new_engine(tmp_path)
        sinks = [
            AlertSink("slack", rec.url("slack"), kind="slack"),
            AlertSink("json", rec.url("json")),
        ]
        async with engine, alerting(engine, sinks):
            with anyio.fail_after(LIMIT_S):
                result = await engine.run(fragile)
            (msg,) = await rec.until("slack")
            await rec.until("json")
        assert "fragile" in msg["text"] and "failed" in msg["text"].lower()
        assert result.run_id in msg["text"]
        assert "disk on fire" in msg["text"]
        assert msg["blocks"] and msg["blocks"][0]["type"] == "section"
        assert len(rec.bodies("slack")) == 1 and len(rec.bodies("json")) == 1


async def test_a_broken_sink_never_breaks_a_run_and_is_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="evflow.alerts")
    async with receiver() as rec:
        engine = new_engine(tmp_path)
        sinks = [
            AlertSink("down", f"http://127.0.0.1:{closed_port()}/hook"),
            AlertSink("error500", rec.url("broken")),
            AlertSink("slowpoke", rec.url("slow"), kind="slack"),
            AlertSink("good", rec.url("hook")),
        ]
        async with engine, alerting(engine, sinks, timeout_s=0.5) as alerts:
            with anyio.fail_after(LIMIT_S):
                failed = await engine.run(fragile)
                ok = await engine.run(sturdy)
            assert failed.state is RunState.FAILED and ok.ok
            with anyio.fail_after(LIMIT_S):
                again = await engine.run(fragile)  # the engine and the manager carry on
            # Alerts go out one after another, each to all sinks at once: once the second
            # reached the good sink, every sink has had its answer (or not) for the first.
            await rec.until("hook", "run_failed", n=2)
        text = alerts_log(caplog)
        assert "alert sink 'down' failed" in text and "ConnectError" in text
        assert "alert sink 'error500' failed" in text and "HTTP 500" in text
        assert "alert sink 'slowpoke' failed" in text and "no answer within 0.5s" in text
        assert [b["run_id"] for b in rec.bodies("hook")] == [failed.run_id, again.run_id]
        assert alerts.failed >= 3


# -- SLA ---------------------------------------------------------------------------------------
async def test_a_run_past_its_sla_sends_exactly_one_sla_missed(tmp_path: Path) -> None:
    release = anyio.Event()

    @task
    async def blocked() -> str:
        await release.wait()
        return "released"

    slow = Flow("slow_report", sla_s=0.2)
    with slow:
        task(blocked)
    quick = Flow("quick_report", sla_s=60)
    with quick:
        task(fine)

    async with receiver() as rec:
        engine = new_engine(tmp_path)
        engine.add(slow)
        engine.add(quick)
        async with engine, alerting(engine, [AlertSink("ops", rec.url("hook"))]):
            with anyio.fail_after(LIMIT_S):
                fast = await engine.run(quick)
                run_id = await engine.submit(slow)
            (body,) = await rec.until("hook", "sla_missed")
            release.set()
            with anyio.fail_after(LIMIT_S):
                result = await engine.wait(run_id)
            assert result.ok and fast.ok
        assert rec.bodies("hook") == [body]
        assert body["run_id"] == run_id and body["flow"] == "slow_report"
        assert body["state"] == "running"
        assert body["sla_s"] == 0.2


# -- callbacks ---------------------------------------------------------------------------------
async def test_callbacks_fire_once_per_outcome(tmp_path: Path) -> None:
    seen: list[tuple[str, CallbackContext]] = []
    threads: set[int] = set()

    def record(kind: str) -> Any:
        def cb(ctx: CallbackContext) -> None:
            threads.add(threading.get_ident())
            seen.append((kind, ctx))

        return cb

    async def flow_failed(ctx: CallbackContext) -> None:
        seen.append(("flow.on_failure", ctx))

    @task(
        retries=2,
        retry_delay=0,
        on_retry=record("task.on_retry"),
        on_failure=record("task.on_failure"),
    )
    async def flaky(n: int) -> None:
        raise ValueError(f"bad {n}")

    @task(on_success=record("task.on_success"))
    async def good() -> int:
        return 1

    @flow(on_failure=flow_failed, on_success=record("flow.on_success"))
    def failing(n: int = 7) -> None:
        flaky(n)

    @flow(on_failure=flow_failed, on_success=record("flow.on_success"))
    def passing() -> None:
        good()

    async with new_engine(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            bad = await engine.run(failing)
            ok = await engine.run(passing)
    assert bad.state is RunState.FAILED and ok.ok

    kinds = [k for k, _ in seen]
    assert kinds.count("task.on_retry") == 2  # == retries
    assert kinds.count("task.on_failure") == 1
    assert kinds.count("flow.on_failure") == 1
    assert kinds.count("task.on_success") == 1
    assert kinds.count("flow.on_success") == 1
    assert threading.get_ident() not in threads  # sync callbacks run in worker threads

    retries = [c for k, c in seen if k == "task.on_retry"]
    assert [c.attempt for c in retries] == [1, 2]
    assert all(c.state == "retrying" and c.task == "flaky" for c in retries)
    assert retries[0].error == "ValueError: bad 7" and retries[0].params == {"n": 7}
    (task_failed,) = [c for k, c in seen if k == "task.on_failure"]
    assert task_failed.state == "failed" and task_failed.attempt == 3
    (flow_fail,) = [c for k, c in seen if k == "flow.on_failure"]
    assert flow_fail.task is None and flow_fail.run_id == bad.run_id
    assert flow_fail.state == "failed" and "flaky" in (flow_fail.error or "")
    assert flow_fail.url_hint == f"/api/runs/{bad.run_id}"
    (flow_ok,) = [c for k, c in seen if k == "flow.on_success"]
    assert flow_ok.run_id == ok.run_id and flow_ok.state == "succeeded"


async def test_a_raising_callback_is_logged_and_never_breaks_the_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="evflow.alerts")

    def explode(ctx: CallbackContext) -> None:
        raise RuntimeError(f"callback bug in {ctx.flow}")

    async def explode_async(ctx: CallbackContext) -> None:
        raise RuntimeError("async callback bug")

    @task(on_success=explode, on_retry=explode_async, retries=1, retry_delay=0)
    async def first() -> int:
        return 41

    @task(on_success=explode_async)
    async def second(x: int) -> int:
        return x + 1

    @flow(on_success=explode)
    def chain() -> None:
        second(first())

    @flow(on_failure=explode_async)
    def broken() -> None:
        always_fails.with_options(on_retry=explode, on_failure=explode)()

    async with new_engine(tmp_path) as engine:
        with anyio.fail_after(LIMIT_S):
            ok = await engine.run(chain)
            bad = await engine.run(broken)
    assert ok.ok and ok.result("second") == 42
    assert bad.state is RunState.FAILED and bad.tasks["always_fails"].attempts == 2
    text = alerts_log(caplog)
    assert "on_success callback" in text and "'chain'" in text
    assert "on_retry callback" in text and "on_failure callback" in text
    assert any(r.exc_info for r in caplog.records if r.name == "evflow.alerts")


def test_callbacks_are_not_part_of_the_flow_version() -> None:
    async def work() -> None:
        return None

    def cb(ctx: CallbackContext) -> None:
        return None

    with Flow("versioned") as plain:
        task(work, retries=2)
    with Flow("versioned", on_failure=cb, on_success=cb) as hooked:
        task(work, retries=2, on_failure=cb, on_retry=cb, on_success=cb)
    assert plain.version == hooked.version

    t = task(on_failure=cb)(work)
    t2 = t.with_options(retries=3)
    assert t2.on_failure is cb and t2.options.retries == 3
    with pytest.raises(FlowDefinitionError, match="on_retry must be callable"):
        task(on_retry="not a function")(work)


# -- correlation time-outs --------------------------------------------------------------------
async def test_a_correlation_that_times_out_alerts_through_the_sinks(tmp_path: Path) -> None:
    clock = ManualClock(datetime(2026, 3, 1, 12, 0, tzinfo=UTC))
    async with receiver() as rec:
        engine = new_engine(tmp_path, clock=clock)
        engine.add(
            sturdy,
            Rule(
                on="order.*",
                correlate=Correlate(
                    a="order.placed",
                    b="payment.received",
                    key="data.order",
                    window_s=60,
                    on_timeout="alert",
                ),
            ),
        )
        sinks = [
            AlertSink("ops", rec.url("hook")),
            AlertSink("quiet", rec.url("quiet"), events=("run_failed",)),
        ]
        async with engine, alerting(engine, sinks):
            accepted = await engine.emit(Event("order.placed", data={"order": "o-1"}))

            async def held() -> bool:
                records = await engine.store.list_audit(subject=f"event:{accepted.event_id}")
                return any(r.kind == "rule.held" for r in records)

            await until(held)
            clock.advance(61)
            (body,) = await rec.until("hook", "correlation_timed_out")
        assert body["flow"] == "sturdy"
        assert body["rule"]
        assert "no b event ('payment.received') with data.order='o-1'" in body["message"]
        assert rec.bodies("quiet") == []  # a sink that did not ask for this kind gets nothing
