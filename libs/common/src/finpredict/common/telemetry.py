"""OpenTelemetry tracing: provider set-up, context propagation through gRPC metadata."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

_configured = False


def configure_tracing(
    service: str,
    otlp_endpoint: str = "",
    exporter: SpanExporter | None = None,
    *,
    schedule_delay_ms: float | None = None,
    resource_attributes: Mapping[str, str] | None = None,
) -> None:
    """Installs a tracer provider for ``service``; spans are exported over OTLP when an endpoint
    is set (or to ``exporter``), and otherwise only created (trace ids still flow everywhere).

    ``schedule_delay_ms`` overrides how long finished spans wait before a batch is exported
    (default: ``OTEL_BSP_SCHEDULE_DELAY`` or 5 s); ``resource_attributes`` are added to
    ``service.name`` (e.g. the instance id of one replica among many)."""
    global _configured
    if _configured:
        return
    resource = {**(resource_attributes or {}), "service.name": f"finpredict-{service}"}
    provider = TracerProvider(resource=Resource.create(resource))
    if exporter is None and otlp_endpoint:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=otlp_endpoint)
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter, schedule_delay_millis=schedule_delay_ms))
    trace.set_tracer_provider(provider)
    _configured = True


def flush_tracing(timeout_ms: int = 5000) -> bool:
    """Exports the spans finished so far without shutting export down (for processes whose end
    this code does not control, e.g. a Ray Serve replica); False if it timed out."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return provider.force_flush(timeout_ms)
    return True


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
