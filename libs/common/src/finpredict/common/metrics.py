"""Prometheus metrics shared by every service, exposed in OpenMetrics with trace exemplars."""

from __future__ import annotations

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

# Buckets in seconds, dense around the seed's SLOs (50 ms p99 gate, 100 ms p99 alert).
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)

GRPC_SERVER_HANDLING_SECONDS = Histogram(
    "finpredict_grpc_server_handling_seconds",
    "Server-side latency of gRPC calls, by service, method and status code.",
    ["service", "grpc_method", "grpc_type", "grpc_code"],
    buckets=LATENCY_BUCKETS,
)
GRPC_SERVER_HANDLED_TOTAL = Counter(
    "finpredict_grpc_server_handled_total",
    "gRPC calls completed by the server, by service, method, kind and status code.",
    ["service", "grpc_method", "grpc_type", "grpc_code"],
)
GRPC_SERVER_STARTED_TOTAL = Counter(
    "finpredict_grpc_server_started_total",
    "gRPC calls started on the server, by service, method and kind.",
    ["service", "grpc_method", "grpc_type"],
)


def start_metrics_server(host: str, port: int, registry: CollectorRegistry = REGISTRY) -> int:
    """Serves /metrics (OpenMetrics when asked, so exemplars show) and returns the bound port."""
    server, _thread = start_http_server(port, addr=host, registry=registry)
    return int(server.server_port)
