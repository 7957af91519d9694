"""The service's OpenTelemetry set-up: an SDK tracer provider exporting over OTLP/HTTP.

Tracing is on when ``[tracing] endpoint`` is set in ``evflow.toml`` (or
``EVFLOW_TRACING_ENDPOINT``), or when the standard variables ask for it
(``OTEL_EXPORTER_OTLP_ENDPOINT``, ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``, or
``OTEL_TRACES_EXPORTER=otlp``);
``OTEL_TRACES_EXPORTER=none`` turns it off. The SDK and the exporter come with
``pip install 'evflow[otel]'``. The library itself never installs a provider: an embedding
application configures OpenTelemetry its own way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from .. import tracing
from ..errors import ConfigError
from .config import TracingConfig

__all__ = ["setup_tracing"]


def wanted(cfg: TracingConfig, env: Mapping[str, str]) -> bool:
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(
        cfg.endpoint
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or exporter == "otlp"
    )


def setup_tracing(cfg: TracingConfig, env: Mapping[str, str]) -> Callable[[], None] | None:
    """Install an SDK tracer provider if tracing is wanted; returns its shutdown (which
    exports what is still buffered), or None when tracing stays off."""
    if not wanted(cfg, env):
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "tracing is configured ([tracing] endpoint or OTEL_* variables) but the "
            "OpenTelemetry SDK is not installed; install it with: pip install 'evflow[otel]'"
        ) from None
    attrs = {"service.name": cfg.service_name} if cfg.service_name else {}
    provider = TracerProvider(resource=Resource.create(attrs))  # also reads OTEL_SERVICE_NAME
    exporter = OTLPSpanExporter(endpoint=cfg.endpoint) if cfg.endpoint else OTLPSpanExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    # Global, so the user's own instrumentation inside tasks exports through it too.
    trace.set_tracer_provider(provider)
    tracing.use(provider)

    def shutdown() -> None:
        tracing.use(None)
        provider.shutdown()

    return shutdown
