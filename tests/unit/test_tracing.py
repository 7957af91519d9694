"""The tracing helpers against the real OpenTelemetry SDK and its in-memory exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from evflow import tracing

SENDER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


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


def test_the_trace_context_is_found_wherever_a_source_puts_it() -> None:
    assert tracing.carrier_of({"traceparent": SENDER}) == {"traceparent": SENDER}
    assert tracing.carrier_of({"Traceparent": SENDER, "TraceState": "k=v"}) == {
        "traceparent": SENDER,
        "tracestate": "k=v",
    }
    assert tracing.carrier_of({"ce-traceparent": SENDER}) == {"traceparent": SENDER}
    kafka = {"topic": "t", "headers": {"traceparent": SENDER, "tracestate": "a=1"}}
    assert tracing.carrier_of(kafka) == {"traceparent": SENDER, "tracestate": "a=1"}
    assert tracing.trace_id_of(kafka) == "0af7651916cd43dd8448eb211c80319c"


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        12,
    ],
)
def test_a_malformed_traceparent_is_ignored_not_an_error(bad: object) -> None:
    assert tracing.carrier_of({"traceparent": bad, "tracestate": "k=v"}) == {}
    assert tracing.context_of({"traceparent": bad}) is None
    assert tracing.trace_id_of({"traceparent": bad}) is None


def test_without_an_sdk_no_span_is_built() -> None:
    assert not tracing.enabled()
    with tracing.start_span("evflow.intake", parent={"traceparent": SENDER}) as span:
        assert span is None


def test_stored_contexts_chain_spans_into_the_senders_trace(spans: InMemorySpanExporter) -> None:
    with tracing.start_span("intake", parent={"traceparent": SENDER}) as intake:
        assert intake is not None
        stored_event = tracing.inject(intake)  # kept with the event in the store
    with tracing.start_span("decision", parent=stored_event) as decision:
        assert decision is not None
        stored_trigger = tracing.inject(decision)  # kept in the run's trigger
    with tracing.start_span("run", parent=stored_trigger, current=True) as run:
        assert run is not None
        with tracing.start_span("attempt", parent=tracing.inject(run)):
            pass
    by_name = {s.name: s for s in spans.get_finished_spans()}
    assert set(by_name) == {"intake", "decision", "run", "attempt"}
    trace_ids = {s.context.trace_id for s in by_name.values()}
    assert trace_ids == {0x0AF7651916CD43DD8448EB211C80319C}
    assert by_name["intake"].parent is not None
    assert by_name["intake"].parent.span_id == 0xB7AD6B7169203331
    for child, parent in [("decision", "intake"), ("run", "decision"), ("attempt", "run")]:
        up, ctx = by_name[child].parent, by_name[parent].context
        assert up is not None and ctx is not None
        assert up.span_id == ctx.span_id


def test_a_batch_links_every_events_trace(spans: InMemorySpanExporter) -> None:
    others = [{"traceparent": f"00-{i:032x}-{i:016x}-01"} for i in range(1, 4)]
    with tracing.start_span("decision", parent=others[0], links=others):
        pass
    (span,) = spans.get_finished_spans()
    assert [link.context.trace_id for link in span.links] == [1, 2, 3]


def test_an_exception_marks_the_span_failed_and_propagates(
    spans: InMemorySpanExporter,
) -> None:
    with (
        pytest.raises(ValueError, match="bad row"),
        tracing.start_span("attempt", attributes={"evflow.task": "load"}),
    ):
        raise ValueError("bad row 7")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: bad row 7"
    assert span.attributes is not None and span.attributes["evflow.task"] == "load"
    (event,) = span.events
    assert event.name == "exception"
    assert event.attributes is not None
    assert event.attributes["exception.type"] == "ValueError"
