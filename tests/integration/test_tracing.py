"""Traces from the event to the task: a real engine, the OpenTelemetry SDK's in-memory exporter
in-process, and a real ``evflow serve`` exporting over OTLP/HTTP to a receiver on loopback."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import orjson
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evflow import Batch, Engine, Event, Rule, RunState, flow, task, tracing
from evflow.http.server import HttpServer
from evflow.sensors import KafkaSensor
from evflow.sensors.webhook import sign
from tests.brokers import KafkaBroker, unique_topic
from tests.integration import test_webhook as hooks
from tests.integration.test_sensors_engine import FAST, producer
from tests.integration.test_service import clean_env, serving, write
from tests.observers import RunLog, until

TRACE = "0af7651916cd43dd8448eb211c80319c"
SENDER_SPAN = "b7ad6b7169203331"
SENDER = f"00-{TRACE}-{SENDER_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    try:
        yield exporter
    finally:
        tracing.use(None)
        provider.shutdown()


@task
def parse(n: int) -> int:
    return n


@task(retries=1, retry_delay=0)
def load(n: int) -> int:
    if n < 0:
        raise ValueError(f"cannot load {n}")
    return n


@flow
def orders(n: int) -> None:
    load(parse(n))


@task
def count(items: list[dict[str, Any]]) -> int:
    return len(items)


@flow
def rollup(items: list[dict[str, Any]]) -> None:
    count(items)


def by_name(spans: InMemorySpanExporter) -> dict[str, list[ReadableSpan]]:
    out: dict[str, list[ReadableSpan]] = {}
    for s in spans.get_finished_spans():
        out.setdefault(s.name, []).append(s)
    return out


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_a_run_continues_the_senders_trace_down_to_each_task_attempt(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    runs = RunLog()
    async with engine:
        runs.attach(engine)
        engine.add(orders, Rule("order.created", params={"n": "{data.n}"}, name="orders"))
        await engine.emit(Event("order.created", data={"n": 3}, extensions={"traceparent": SENDER}))
        await engine.emit(
            Event("order.created", data={"n": -1}, extensions={"traceparent": SENDER})
        )
        finished = await runs.wait_for(2)
    assert sorted(str(r.state) for r in finished) == ["failed", "succeeded"]
    got = by_name(spans)
    intake = got["evflow.intake order.created"]
    assert len(intake) == 2
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {int(TRACE, 16)}
    assert {parent_of(s) for s in intake} == {int(SENDER_SPAN, 16)}
    decisions = got["evflow.decide orders"]
    assert {parent_of(s) for s in decisions} == {s.context.span_id for s in intake}
    run_spans = got["evflow.run orders"]
    assert {parent_of(s) for s in run_spans} == {s.context.span_id for s in decisions}
    failed_run = next(
        s for s in run_spans if s.attributes and s.attributes["evflow.state"] == "failed"
    )
    assert failed_run.status.status_code is StatusCode.ERROR
    attempts = got["evflow.task load"]
    assert len(attempts) == 3  # one for the good run, two (a retry) for the bad one
    failed_attempts = [a for a in attempts if a.status.status_code is StatusCode.ERROR]
    assert len(failed_attempts) == 2
    assert all(a.status.description == "ValueError: cannot load -1" for a in failed_attempts)
    assert {parent_of(a) for a in failed_attempts} == {failed_run.context.span_id}
    for a in attempts + got["evflow.task parse"]:
        assert a.attributes is not None
        assert {"evflow.flow", "evflow.task", "evflow.run_id", "evflow.attempt"} <= set(
            a.attributes
        )
        assert "n" not in str(dict(a.attributes).values())  # never params or payloads


async def test_a_batched_run_links_every_events_trace(
    engine: Engine, spans: InMemorySpanExporter
) -> None:
    runs = RunLog()
    senders = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 4)]
    async with engine:
        runs.attach(engine)
        engine.add(
            rollup,
            Rule("click", batch=Batch(count=3, param="items"), params={"i": "{data.i}"}, name="b"),
        )
        for i, tp in enumerate(senders):
            await engine.emit(Event("click", data={"i": i}, extensions={"traceparent": tp}))
        (run,) = await runs.wait_for(1)
    assert run.state is RunState.SUCCEEDED
    (decision,) = by_name(spans)["evflow.decide b"]
    assert sorted(link.context.trace_id for link in decision.links) == [1, 2, 3]
    assert decision.context.trace_id == 1  # a child of the first event's trace


@pytest.mark.kafka
async def test_a_kafka_records_traceparent_header_is_the_parent_of_its_intake(
    kafka_broker: KafkaBroker, kafka_topic: str, engine: Engine, spans: InMemorySpanExporter
) -> None:
    sensor = KafkaSensor(
        "orders",
        kafka_topic,
        bootstrap_servers=kafka_broker.bootstrap,
        group_id=unique_topic("group"),
        **FAST,
    )
    runs = RunLog()
    async with engine:
        runs.attach(engine)
        engine.add(orders, Rule(on=sensor, params={"n": "{data.n}"}, name="orders"))

        async def listening() -> bool:
            return engine.sensor_status.get("orders") == "listening"

        await until(listening)
        async with producer(kafka_broker) as p:
            await p.send_and_wait(
                kafka_topic,
                value=orjson.dumps({"n": 5}),
                partition=0,
                headers=[("traceparent", SENDER.encode())],
            )
        (run,) = await runs.wait_for(1)
    assert run.state is RunState.SUCCEEDED
    got = by_name(spans)
    (intake,) = got[f"evflow.intake kafka.{kafka_topic}"]
    assert intake.context.trace_id == int(TRACE, 16)
    assert parent_of(intake) == int(SENDER_SPAN, 16)
    (attempt,) = got["evflow.task load"]
    (run_span,) = got["evflow.run orders"]
    assert attempt.context.trace_id == int(TRACE, 16)
    assert parent_of(attempt) == run_span.context.span_id


@pytest.mark.parametrize("mode", ["structured", "binary"])
async def test_a_cloudevents_traceparent_attribute_wins_over_the_http_header(
    tmp_path: Path, spans: InMemorySpanExporter, mode: str
) -> None:
    other = "00-11111111111111111111111111111111-2222222222222222-01"  # the HTTP hop's
    if mode == "structured":
        body = orjson.dumps(
            {
                "specversion": "1.0",
                "type": "order.created",
                "source": "shop",
                "id": "ce-1",
                "traceparent": SENDER,
                "data": {"n": 1},
            }
        )
        headers = {"Content-Type": "application/cloudevents+json"}
    else:
        body = orjson.dumps({"n": 1})
        headers = {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-type": "order.created",
            "ce-source": "shop",
            "ce-id": "ce-1",
            "ce-traceparent": SENDER,
        }
    engine = hooks.new_engine(tmp_path)
    runs = RunLog().attach(engine)
    async with hooks.running(engine), hooks.serving(engine) as client:
        resp = await client.post(
            "/hooks/orders",
            content=body,
            headers={**headers, "traceparent": other, **sign(hooks.SECRET, body)},
        )
        assert resp.status_code == 202, resp.text
        (run,) = await runs.wait_for(1)
    assert run.state is RunState.SUCCEEDED
    (intake,) = by_name(spans)["evflow.intake order.created"]
    assert intake.context.trace_id == int(TRACE, 16)
    assert parent_of(intake) == int(SENDER_SPAN, 16)
    assert {s.context.trace_id for s in spans.get_finished_spans()} == {int(TRACE, 16)}


# -- the service, exporting over OTLP/HTTP --------------------------------------------------


class Collector:
    """An OTLP/HTTP traces endpoint on loopback: the spans it received, decoded."""

    def __init__(self) -> None:
        self.spans: list[Any] = []
        self.app = Starlette(routes=[Route("/v1/traces", self._receive, methods=["POST"])])

    async def _receive(self, request: Request) -> Response:
        req = ExportTraceServiceRequest()
        req.ParseFromString(await request.body())
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                self.spans.extend(ss.spans)
        return Response(b"", media_type="application/x-protobuf")


async def test_evflow_serve_exports_one_trace_from_the_webhook_sender_to_the_task(
    tmp_path: Path,
) -> None:
    project = tmp_path / "project"
    write(project / "evflow.toml", '[store]\npath = "var/evflow.db"\n')
    write(project / "flows" / "__init__.py", "")
    write(
        project / "flows" / "hello.py",
        """
        from opentelemetry import trace

        from evflow import flow, task

        @task
        def greet(name: str) -> str:
            with trace.get_tracer("user").start_as_current_span("user.work"):
                return f"hello {name}"

        @flow
        def hello(name: str) -> None:
            greet(name)
        """,
    )
    write(
        project / "sensors" / "hooks.py",
        """
        from evflow import Rule
        from evflow.sensors import WebhookSensor

        Rule(on=WebhookSensor("greet"), flow="hello", params={"name": "{data.name}"})
        """,
    )
    collector = Collector()
    async with anyio.create_task_group() as tg:
        port = await tg.start(HttpServer(access_log=False).serve, collector.app, "127.0.0.1", 0)
        env = clean_env(
            EVFLOW_TRACING_ENDPOINT=f"http://127.0.0.1:{port}/v1/traces",
            EVFLOW_TRACING_LINK="https://tracing.example/trace/{trace_id}",
            OTEL_BSP_SCHEDULE_DELAY="100",
        )
        async with serving(project, tmp_path / "logs", env) as service:
            assert "tracing  OTLP to" in service.stdout
            url = re.search(r"http://127\.0\.0\.1:\d+", service.stdout)
            assert url is not None
            async with httpx.AsyncClient(base_url=url.group(0)) as client:
                resp = await client.post(
                    "/hooks/greet",
                    content=orjson.dumps({"name": "ada"}),
                    headers={"Content-Type": "application/json", "traceparent": SENDER},
                )
                assert resp.status_code == 202, resp.text

                async def succeeded() -> bool:
                    runs = (await client.get("/api/runs")).json()["runs"]
                    return bool(runs) and runs[0]["state"] == "succeeded"

                await until(succeeded)
                (run,) = (await client.get("/api/runs")).json()["runs"]
                assert run["trace_id"] == TRACE
                (event,) = (await client.get("/api/events")).json()["events"]
                assert event["trace_id"] == TRACE
                index = (await client.get("/api")).json()
                assert index["trace_link"] == "https://tracing.example/trace/{trace_id}"
            assert await service.stop() == 0  # the shutdown exports what is buffered
        tg.cancel_scope.cancel()

    by = {s.name: s for s in collector.spans}
    assert {"evflow.intake webhook.greet", "evflow.decide", "evflow.run hello"} <= {
        n if not n.startswith("evflow.decide") else "evflow.decide" for n in by
    }, sorted(by)
    assert {s.trace_id.hex() for s in collector.spans} == {TRACE}
    intake = by["evflow.intake webhook.greet"]
    assert intake.parent_span_id.hex() == SENDER_SPAN
    decide = next(s for n, s in by.items() if n.startswith("evflow.decide"))
    assert decide.parent_span_id == intake.span_id
    assert by["evflow.run hello"].parent_span_id == decide.span_id
    assert by["evflow.task greet"].parent_span_id == by["evflow.run hello"].span_id
    # the task's own instrumentation nests under its attempt
    assert by["user.work"].parent_span_id == by["evflow.task greet"].span_id
    assert os.environ.get("EVFLOW_TRACING_ENDPOINT") is None  # the test's own env is untouched
