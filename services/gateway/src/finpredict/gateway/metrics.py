"""Prometheus metrics of the gateway (names are referenced by infra/prometheus rules and dashboards).

Labels are bounded: model, version, variant, outcome, reason, verdict. Never entity or request ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from finpredict.common.metrics import LATENCY_BUCKETS

SCORE_SECONDS = Histogram(
    "finpredict_gateway_score_seconds",
    "End-to-end scoring latency of a routed request (gateway in to response out), by variant.",
    ["model", "version", "variant"],
    buckets=LATENCY_BUCKETS,
)
SCORED_TOTAL = Counter(
    "finpredict_gateway_scored_total",
    "Applications scored, by model version, variant and outcome (ok or error).",
    ["model", "version", "variant", "outcome"],
)
CANARY_FALLBACKS_TOTAL = Counter(
    "finpredict_gateway_canary_fallbacks_total",
    "Applications routed to the canary that were answered by stable because the canary failed.",
    ["model"],
)
LOG_DROPPED_TOTAL = Counter(
    "finpredict_gateway_prediction_log_dropped_total",
    "Prediction records not delivered to the monitor, by reason (buffer_full, send_failed, rejected).",
    ["reason"],
)
for _reason in ("buffer_full", "send_failed", "rejected"):
    LOG_DROPPED_TOTAL.labels(_reason)  # exported at 0, so the first drop shows in rate()
LOG_SENT_TOTAL = Counter(
    "finpredict_gateway_prediction_log_sent_total", "Prediction records delivered to the monitor."
)
OUTCOMES_TOTAL = Counter(
    "finpredict_gateway_outcomes_total",
    "Outcomes clients reported (RecordOutcomes), by what the monitor made of them: matched, unmatched "
    "(waiting for their prediction), duplicate (already recorded); failed: the monitor did not record them.",
    ["result"],
)
for _result in ("matched", "unmatched", "duplicate", "failed"):
    OUTCOMES_TOTAL.labels(_result)
OUTCOMES_ANALYSED_TOTAL = Counter(
    "finpredict_gateway_outcomes_analysed_total",
    "Outcomes the monitor matched to their prediction, by whether this replica counted them into a "
    "rollout's or an experiment's analysis (counted) or no running one served their version (ignored).",
    ["result"],
)
for _result in ("counted", "ignored"):
    OUTCOMES_ANALYSED_TOTAL.labels(_result)
LOG_SENDER_RESTARTS_TOTAL = Counter(
    "finpredict_gateway_prediction_log_sender_restarts_total",
    "Times the prediction-log sender failed unexpectedly (its batch counted as dropped) and started again.",
)
LOG_BUFFER_RECORDS = Gauge(
    "finpredict_gateway_prediction_log_buffer_records", "Prediction records waiting to be sent."
)
ROLLOUT_WEIGHT_PERCENT = Gauge(
    "finpredict_gateway_rollout_weight_percent", "Current canary weight of the model's rollout.", ["model"]
)
ROLLOUT_STEP = Gauge(
    "finpredict_gateway_rollout_step", "Current step index of the model's rollout.", ["model"]
)
ROLLOUT_DECISIONS_TOTAL = Counter(
    "finpredict_gateway_rollout_decisions_total",
    "Rollout decisions, by verdict (wait, advance, rollback, halt, promote, promoted, pause, resume, abort).",
    ["model", "verdict"],
)
HANDOFF_CHECKS_TOTAL = Counter(
    "finpredict_gateway_handoff_checks_total",
    "The hand-off watcher's looks at a model's newest version, by outcome: started (its rollout), "
    "waiting (another rollout of the model is active), rolled_out (it had a rollout before), off (the "
    "policy hands nothing off, or not this version), unsatisfied (the version fails the policy), "
    "refused (the policy's rollout settings were refused).",
    ["model", "outcome"],
)
ROLLOUT_INPUTS_UNCOUNTED_TOTAL = Counter(
    "finpredict_gateway_rollout_inputs_uncounted_total",
    "Scored requests of a rollout whose inputs were left out of the model checks' sample (more were "
    "waiting to be counted than MAX_PENDING_ROWS), by variant; their other measurements count.",
    ["variant"],
)
SAMPLE_RATIO_MISMATCH_TOTAL = Counter(
    "finpredict_gateway_rollout_sample_ratio_mismatch_total",
    "Rollouts halted because the variants' request counts do not match the configured weights.",
    ["model"],
)
CIRCUIT_OPEN = Gauge(
    "finpredict_gateway_circuit_open", "1 while the circuit to a model version is open.", ["model", "version"]
)
SHADOW_TOTAL = Counter(
    "finpredict_gateway_shadow_total",
    "Mirrored (shadow) calls, by outcome (ok, error, skipped when too many are in flight).",
    ["model", "outcome"],
)
SHADOW_SCORE_DIFF = Histogram(
    "finpredict_gateway_shadow_score_abs_diff",
    "Absolute difference between the shadow version's score and the served score.",
    ["model"],
    buckets=(0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0),
)
BACKEND_BATCH_ROWS = Histogram(
    "finpredict_gateway_backend_batch_rows",
    "Rows per coalesced model-server call.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
)
BACKEND_RETRIES_TOTAL = Counter(
    "finpredict_gateway_backend_retries_total",
    "Model-server attempts retried (after UNAVAILABLE or a deadline).",
    ["model"],
)
STATE_ERRORS_TOTAL = Counter(
    "finpredict_gateway_state_errors_total",
    "Calls to the shared state database that failed (it was unreachable or timed out), by operation "
    "(refresh, publish, lease, write, read): while refreshes fail, routing keeps the last known state.",
    ["operation"],
)
for _operation in ("refresh", "publish", "lease", "write", "read"):
    STATE_ERRORS_TOTAL.labels(_operation)
STATE_VERSION = Gauge(
    "finpredict_gateway_state_version", "Change counter of the shared state this replica routes by."
)
STATE_AGE_SECONDS = Gauge(
    "finpredict_gateway_state_age_seconds",
    "Seconds since this replica last read the shared state successfully (grows while it is unreachable).",
)
CONTROLLER_LEADER = Gauge(
    "finpredict_gateway_controller_leader", "1 while this replica holds the rollout-controller lease."
)
FENCED_WRITES_TOTAL = Counter(
    "finpredict_gateway_fenced_writes_total",
    "Controller decisions refused because this replica no longer held the lease (nothing was written).",
)
FEEDBACK_TOTAL = Counter(
    "finpredict_gateway_feedback_total",
    "Analyst feedback clients recorded (RecordFeedback), by what the monitor made of it: recorded, "
    "duplicate (an exact repeat of the request's latest); failed: the monitor did not record it.",
    ["result"],
)
for _result in ("recorded", "duplicate", "failed"):
    FEEDBACK_TOTAL.labels(_result)
REVIEW_CASES_TOTAL = Counter(
    "finpredict_gateway_review_cases_total",
    "Edge cases offered to the prediction log for the monitor's review queue, by kind (refused: "
    "validation refused the request; canary_fallback: stable answered for a failed canary).",
    ["model", "kind"],
)
