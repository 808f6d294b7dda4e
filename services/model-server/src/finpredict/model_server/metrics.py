"""Per-version Prometheus metrics of the replicas (Ray exports them on each node's metrics port)."""

from __future__ import annotations

from ray.util import metrics as m

_VERSION = ("model", "version")
LATENCY_BOUNDARIES_MS = [0.5, 1, 2, 5, 10, 20, 35, 50, 75, 100, 200, 500, 1000, 5000]

REQUESTS = m.Counter(
    "finpredict_model_server_requests", "Predict requests answered, per model version.", tag_keys=_VERSION
)
ROWS = m.Counter("finpredict_model_server_rows", "Rows scored, per model version.", tag_keys=_VERSION)
ERRORS = m.Counter(
    "finpredict_model_server_errors",
    "Predict requests refused or failed, per model version and gRPC code.",
    tag_keys=(*_VERSION, "code"),
)
LATENCY = m.Histogram(
    "finpredict_model_server_latency_ms",
    "Predict latency inside the replica (ms), per model version.",
    boundaries=LATENCY_BOUNDARIES_MS,
    tag_keys=_VERSION,
)
BATCH_SIZE = m.Histogram(
    "finpredict_model_server_batch_size",
    "Requests coalesced into one XGBoost call (per model version of the batch's first request).",
    boundaries=[1, 2, 4, 8, 16, 32, 64, 128],
    tag_keys=_VERSION,
)
LOADS = m.Counter("finpredict_model_server_loads", "Model versions loaded.", tag_keys=_VERSION)
PRELOADS = m.Counter(
    "finpredict_model_server_preloads", "Versions preloaded on an alias event.", tag_keys=_VERSION
)
LOAD_FAILURES = m.Counter(
    "finpredict_model_server_load_failures",
    "Model versions refused at load (fetch or artifact verification).",
    tag_keys=(*_VERSION, "reason"),
)
