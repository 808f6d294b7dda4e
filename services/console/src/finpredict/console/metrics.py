"""Prometheus metrics of the console (served on ``metrics_port`` like every service's)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from finpredict.common.metrics import LATENCY_BUCKETS

REQUESTS_TOTAL = Counter(
    "finpredict_console_requests_total",
    "HTTP requests answered by the console, by route and status code.",
    ["route", "code"],
)
REQUEST_SECONDS = Histogram(
    "finpredict_console_request_seconds",
    "Time to answer an HTTP request (live streams excluded), by route.",
    ["route"],
    buckets=LATENCY_BUCKETS,
)
BACKEND_ERRORS = Counter(
    "finpredict_console_backend_errors_total",
    "Failed calls to the registry, gateway or monitor, by service and gRPC status code.",
    ["service", "grpc_code"],
)
ADMIN_ACTIONS = Counter(
    "finpredict_console_admin_actions_total",
    "Rollout actions asked from the console, by action and outcome (ok, refused, failed).",
    ["action", "outcome"],
)
LIVE_STREAMS = Counter(
    "finpredict_console_live_streams_total",
    "Server-sent event streams opened (live rollout pages).",
)
