"""Prometheus metrics of the monitor: model-quality statistics per version, record counters.

Labels carry model, version, feature, window size and rule names only (bounded sets), never
request or entity ids.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

_MV = ["model", "version"]

RECORDS_RECEIVED = Counter(
    "finpredict_monitor_records_received_total",
    "Prediction records received by IngestPredictions, before validation and deduplication (the "
    "denominator of the rejected share).",
)
RECORDS_INGESTED = Counter(
    "finpredict_monitor_records_ingested_total", "Prediction records durably appended.", _MV
)
RECORDS_DUPLICATE = Counter(
    "finpredict_monitor_records_duplicate_total", "Prediction records ignored as duplicate request ids.", _MV
)
RECORDS_REJECTED = Counter(
    "finpredict_monitor_records_rejected_total", "Prediction records refused as invalid, by field.", ["field"]
)
# Every field a record can be refused for starts at 0: a first burst of rejections is then an
# increase that rate() sees (a series born with its first value is not), and the rejected share
# alert (infra/prometheus/rules/alerts.yml) fires on it.
REJECTABLE_FIELDS = ("request_id", "model.name", "model.version", "time", "score", "threshold", "latency_ms")
for _field in (*REJECTABLE_FIELDS, "features"):
    RECORDS_REJECTED.labels(_field)
RECORDS_UNPROFILED = Counter(
    "finpredict_monitor_records_unprofiled_total",
    "Records stored but not folded into drift windows: the version has no reference profile.",
    _MV,
)
RECORDS_LATE = Counter(
    "finpredict_monitor_records_late_total",
    "Records that landed in an hourly window already evaluated by the rules (stored and counted in "
    "the window's statistics; rules are not re-evaluated).",
    _MV,
)
STORE_WRITE_FAILURES = Counter(
    "finpredict_monitor_store_write_failures_total",
    "Batches the log store could not write (refused, nothing acknowledged), by reason: full (no space "
    "or a file size limit) or io (any other I/O error).",
    ["reason"],
)
OUTCOMES = Counter(
    "finpredict_monitor_outcomes_total",
    "Outcomes recorded, by result (matched, unmatched, duplicate).",
    ["result"],
)
FEATURE_PSI = Gauge(
    "finpredict_monitor_feature_psi",
    "PSI of a feature in the latest closed window.",
    [*_MV, "feature", "window"],
)
FEATURE_MISSING = Gauge(
    "finpredict_monitor_feature_missing_ratio",
    "Missing share of a feature in the latest closed window.",
    [*_MV, "feature", "window"],
)
SCORE_KL = Gauge(
    "finpredict_monitor_score_kl",
    "KL(reference || window) of the score in the latest closed window.",
    [*_MV, "window"],
)
SCORE_JS = Gauge(
    "finpredict_monitor_score_js",
    "Jensen-Shannon divergence of the score in the latest closed window.",
    [*_MV, "window"],
)
WINDOW_PREDICTIONS = Gauge(
    "finpredict_monitor_window_predictions", "Predictions in the latest closed window.", [*_MV, "window"]
)
APPROVAL_RATE = Gauge(
    "finpredict_monitor_approval_ratio", "Approval rate in the latest closed window.", [*_MV, "window"]
)
ACCURACY = Gauge(
    "finpredict_monitor_accuracy_ratio",
    "Accuracy at the decision threshold in the latest labelled window.",
    [*_MV, "window"],
)
AUC = Gauge("finpredict_monitor_auc_ratio", "AUC-ROC in the latest labelled window.", [*_MV, "window"])
ECE = Gauge(
    "finpredict_monitor_ece_ratio",
    "Expected calibration error in the latest labelled window.",
    [*_MV, "window"],
)
LABELED = Gauge(
    "finpredict_monitor_window_labeled", "Matched outcomes in the latest labelled window.", [*_MV, "window"]
)
LABEL_DELAY = Gauge(
    "finpredict_monitor_label_delay_seconds",
    "Median delay between a prediction and its outcome in the latest labelled window.",
    _MV,
)
ALERTS_FIRING = Gauge("finpredict_monitor_alerts_firing", "Firing model-quality alerts.", ["rule", *_MV])
ALERT_TRANSITIONS = Counter(
    "finpredict_monitor_alert_transitions_total",
    "Alert state changes, by rule and new state.",
    ["rule", "state"],
)
ALERTMANAGER_POSTS = Counter(
    "finpredict_monitor_alertmanager_posts_total",
    "Alert batches posted to Alertmanager, by result.",
    ["result"],
)
RETRAINING_RUNS = Counter(
    "finpredict_monitor_retraining_runs_total", "Retraining runs started, by trigger kind.", ["trigger"]
)
