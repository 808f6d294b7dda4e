"""OpenTelemetry tracing: provider set-up, context propagation through gRPC metadata."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_configured = False


def configure_tracing(service: str, otlp_endpoint: str = "", exporter: SpanExporter | None = None) -> None:
    """Installs a tracer provider for ``service``; spans are exported over OTLP when an endpoint
    is set (or to ``exporter``), and otherwise only created (trace ids still flow everywhere)."""
    global _configured
    if _configured:
        return
    provider = TracerProvider(resource=Resource.create({"service.name": f"finpredict-{service}"}))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _configured = True


def shutdown_tracing() -> None:
    """Flushes and closes span export (the last spans of a draining service are not lost)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.shutdown()


def current_trace_id() -> str:
    """The 32-hex-digit id of the current trace, or '' outside a recording span."""
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def extract_context(metadata: Iterable[tuple[str, str | bytes]] | None) -> object:
    """The trace context carried by incoming gRPC metadata (W3C traceparent)."""
    carrier = {k: v.decode() if isinstance(v, bytes) else v for k, v in (metadata or ())}
    return propagate.extract(carrier)


def inject_metadata(metadata: Sequence[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
    """``metadata`` plus the current trace context, for an outgoing gRPC call."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return [*(metadata or ()), *carrier.items()]
