"""OpenTelemetry traces from the event to the task, continuing the sender's trace.

evflow depends only on ``opentelemetry-api``: with no SDK installed or configured, every helper
here returns at once (one ``isinstance`` check), so tracing costs nothing measurable. The API
itself is imported only once something could trace: a provider given to :func:`use`, or
OpenTelemetry already imported by the application (no provider is set without it). The service
installs the SDK when ``[tracing]`` or the standard ``OTEL_*`` variables ask for it
(:mod:`evflow.service.telemetry`); an embedding application may install its own.

The chain, and where its links are kept durably:

* **intake** — one span per event, a child of the sender's context (W3C ``traceparent`` /
  ``tracestate`` from an HTTP header, a Kafka record header, or the CloudEvents
  distributed-tracing extension attribute). The stored event carries the intake span's context
  in its ``traceparent`` extension, so a decision made after a restart still joins the trace.
* **decision** — one span per rule decision that starts a run, a child of the (first) event's
  context and linked to every event of a batch or correlation. The run's ``trigger`` keeps the
  decision span's context.
* **run** — one span per run (per execution of it), a child of the decision (or of nothing, for
  a run started from the API or the CLI).
* **task attempt** — one span per attempt, retries included, a child of the run span; while the
  task's code runs it is the current span, so the user's own instrumentation nests under it.
  Waiting for a slot shows as a span event.

Attributes are stable and never hold payloads or params (they may carry personal data).
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import replace
from functools import cache
from typing import TYPE_CHECKING, Any

import anyio

from .events import Event

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.trace import Span, SpanKind, TracerProvider
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = [
    "NO_SPAN",
    "TRACEPARENT",
    "TRACESTATE",
    "IntakeSpans",
    "carrier_of",
    "context_of",
    "enabled",
    "failed",
    "inject",
    "start_span",
    "trace_id_of",
    "use",
]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# version-traceid-parentid-flags; all-zero ids are invalid (W3C Trace Context, section 3.2).
_TRACEPARENT_RE = re.compile(
    r"^[0-9a-f]{2}-(?!0{32})[0-9a-f]{32}-(?!0{16})[0-9a-f]{16}-[0-9a-f]{2}$"
)
_provider: TracerProvider | None = None  # set by use(); else the global provider


def use(provider: TracerProvider | None) -> None:
    """Trace through ``provider`` instead of OpenTelemetry's global one (None: the global)."""
    global _provider
    _provider = provider


@cache
def _propagator() -> TraceContextTextMapPropagator:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def _current_provider() -> TracerProvider:
    from opentelemetry import trace

    return _provider if _provider is not None else trace.get_tracer_provider()


def _recording(provider: TracerProvider) -> bool:
    from opentelemetry import trace

    return not isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider))


_global_real = False  # a real global provider, once set, is never replaced (OpenTelemetry's rule)
_global_checked_at = -1e9


def enabled() -> bool:
    """True once a real tracer provider (an SDK) is installed; the default proxy records
    nothing, and then evflow builds no spans at all.

    Asked once per span, so it is cheap: the global provider is looked up at most once a
    second until a real one appears (spans in the first second after an application installs
    one without :func:`use` may be missed).
    """
    global _global_real, _global_checked_at
    if _provider is not None:
        return _recording(_provider)
    if _global_real:
        return True
    if "opentelemetry.trace" not in sys.modules:  # nothing can have set a global provider
        return False
    now = time.monotonic()
    if now - _global_checked_at < 1.0:
        return False
    _global_checked_at = now
    _global_real = _recording(_current_provider())
    return _global_real


def carrier_of(fields: Mapping[str, Any]) -> dict[str, str]:
    """The W3C trace context found in ``fields``: CloudEvents extension attributes (an event's
    ``extensions``), HTTP headers, or Kafka record headers (the ``headers`` extension).

    Only a well-formed ``traceparent`` counts; a malformed one is ignored (the trace starts
    here), never an error.
    """
    found: dict[str, str] = {}
    for source in (fields, fields.get("headers")):
        if not isinstance(source, Mapping):
            continue
        for key, value in source.items():
            k = str(key).lower()
            if k in (TRACEPARENT, "ce-traceparent", "ce_traceparent") and TRACEPARENT not in found:
                if isinstance(value, str) and _TRACEPARENT_RE.match(value.strip()):
                    found[TRACEPARENT] = value.strip()
            elif (
                k in (TRACESTATE, "ce-tracestate", "ce_tracestate")
                and TRACESTATE not in found
                and isinstance(value, str)
            ):
                found[TRACESTATE] = value.strip()
        if TRACEPARENT in found:
            break
    if TRACEPARENT not in found:
        return {}
    return found


def context_of(fields: Mapping[str, Any] | None) -> Context | None:
    """The OpenTelemetry context of the trace context in ``fields`` (None if there is none)."""
    if not fields:
        return None
    carrier = carrier_of(fields)
    if not carrier:
        return None
    return _propagator().extract(carrier)


def inject(span: Span) -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) naming ``span``, to store beside an event or run."""
    from opentelemetry import trace

    carrier: dict[str, str] = {}
    _propagator().inject(carrier, context=trace.set_span_in_context(span))
    return carrier


def trace_id_of(fields: Mapping[str, Any] | None) -> str | None:
    """The 32-hex trace id in ``fields``' ``traceparent``, for the UI and API."""
    carrier = carrier_of(fields) if fields else {}
    tp = carrier.get(TRACEPARENT)
    return tp.split("-")[1] if tp else None


NO_SPAN: AbstractContextManager[None] = nullcontext()


def start_span(
    name: str,
    *,
    parent: Mapping[str, Any] | None = None,
    links: Sequence[Mapping[str, Any]] = (),
    attributes: Mapping[str, str | int | float | bool] | None = None,
    kind: SpanKind | None = None,
    current: bool = False,
) -> AbstractContextManager[Span | None]:
    """A span named ``name`` (None when tracing is off), ended on exit.

    ``parent`` and each of ``links`` are mappings holding a ``traceparent`` (event extensions,
    a run's trigger). With ``current``, the span is the current one inside the block (user code
    then nests under it). An exception leaving the block marks the span as an error and records
    the exception's type and message, then propagates. With tracing off this costs one check.
    ``kind``: ``SpanKind.INTERNAL`` unless given.
    """
    if not enabled():
        return NO_SPAN
    return _span(name, parent, links, attributes, kind, current)


@contextmanager
def _span(
    name: str,
    parent: Mapping[str, Any] | None,
    links: Sequence[Mapping[str, Any]],
    attributes: Mapping[str, str | int | float | bool] | None,
    kind: SpanKind | None,
    current: bool,
) -> Iterator[Span]:
    from opentelemetry import trace

    ctx = context_of(parent)
    span_links = [
        trace.Link(trace.get_current_span(c).get_span_context())
        for link in links
        if (c := context_of(link)) is not None
    ]
    span = (
        _current_provider()
        .get_tracer("evflow")
        .start_span(
            name,
            context=ctx,
            kind=trace.SpanKind.INTERNAL if kind is None else kind,
            attributes=dict(attributes or {}),
            links=span_links,
        )
    )
    try:
        if current:
            with trace.use_span(span, end_on_exit=False, record_exception=False):
                yield span
        else:
            yield span
    except BaseException as exc:
        if _cancellation(exc):
            span.set_attribute("evflow.cancelled", True)  # stopped, not failed
        else:
            failed(span, exc)
        raise
    finally:
        span.end()


class IntakeSpans:
    """One ``evflow.intake`` span per event, each a child of the sender's context; ``events``
    are the events to store, carrying their span's context. End them with :meth:`end` once the
    store answered."""

    __slots__ = ("events", "spans")

    def __init__(self, events: Sequence[Event]) -> None:
        self.spans: list[Span] = []
        self.events = list(events)
        if not enabled():
            return
        from opentelemetry.trace import SpanKind

        tracer = _current_provider().get_tracer("evflow")
        for i, ev in enumerate(events):
            span = tracer.start_span(
                f"evflow.intake {ev.type}",
                context=context_of(ev.extensions),
                kind=SpanKind.CONSUMER,
                attributes={
                    "evflow.event.type": ev.type,
                    "evflow.event.source": ev.source,
                    "evflow.event.uid": ev.uid,
                },
            )
            self.spans.append(span)
            self.events[i] = replace(ev, extensions={**ev.extensions, **inject(span)})

    def end(self, duplicates: Sequence[bool] = (), error: BaseException | None = None) -> None:
        for i, span in enumerate(self.spans):
            if error is not None:
                failed(span, error)
            elif i < len(duplicates):
                span.set_attribute("evflow.event.duplicate", duplicates[i])
            span.end()


def _cancellation(exc: BaseException) -> bool:
    try:
        return isinstance(exc, anyio.get_cancelled_exc_class())
    except anyio.NoEventLoopError:  # outside any event loop nothing is being cancelled
        return False


def failed(span: Span | None, exc: BaseException | str) -> None:
    """Mark ``span`` as failed by ``exc`` (an exception, or an error message)."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, BaseException):
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    else:
        span.set_status(Status(StatusCode.ERROR, exc))
