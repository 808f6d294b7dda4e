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
    "Records stored but never folded into drift windows, by why the version has no reference profile: "
    "no_profile (the registry holds none for it), not_found (the registry does not know the version), "
    "no_registry (none cached and no registry configured). Records of a version whose profile is still "
    "being fetched are not counted: they are folded when it arrives.",
    [*_MV, "reason"],
)
RECORDS_EXPIRED = Counter(
    "finpredict_monitor_records_expired_total",
    "What was deleted because it fell out of the retention period, by kind: predictions (from the "
    "request-id index and the windows), partitions (prediction hours and outcome days of the logs).",
    ["kind"],
)
PROFILE_FETCHES = Counter(
    "finpredict_monitor_profile_fetches_total",
    "Reference profile fetches from the registry, by result: ok, or why it failed: unavailable, denied, "
    "error (retried with backoff), checksum (the bytes do not match the registry's sha256), invalid "
    "(not a drift_core profile) (both retried), not_found, no_profile (final).",
    ["result"],
)
for _result in ("ok", "unavailable", "denied", "error", "checksum", "invalid", "not_found", "no_profile"):
    PROFILE_FETCHES.labels(_result)
PROFILES_PENDING = Gauge(
    "finpredict_monitor_profiles_pending",
    "Model versions whose reference profile is being fetched (their records are kept, their drift "
    "windows evaluated once it arrives).",
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
    "Outcomes recorded, by result: matched (to a stored prediction), waiting (for a prediction not seen "
    "yet), matched_late (a waiting one whose prediction arrived), orphaned (waited longer than the "
    "outcome wait, or pushed out of a full waiting list: dropped), duplicate (its request already has "
    "an outcome, or one waiting: ignored).",
    ["result"],
)
for _result in ("matched", "waiting", "matched_late", "orphaned", "duplicate"):
    OUTCOMES.labels(_result)
OUTCOMES_WAITING = Gauge(
    "finpredict_monitor_outcomes_waiting", "Outcomes waiting for their prediction (see the outcome wait)."
)
FEATURE_PSI = Gauge(
    "finpredict_monitor_feature_psi",
    "PSI of a feature in the latest closed window.",
    [*_MV, "feature", "window"],
)
FEATURE_KL = Gauge(
    "finpredict_monitor_feature_kl",
    "KL(window || reference) of a feature in the latest closed window.",
    [*_MV, "feature", "window"],
)
FEATURE_JS = Gauge(
    "finpredict_monitor_feature_js",
    "Jensen-Shannon divergence of a feature in the latest closed window.",
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
RETRAINING_JOINED = Counter(
    "finpredict_monitor_retraining_joined_total",
    "Retraining triggers answered with the job already running for the model (one job per model at a "
    "time), by trigger kind.",
    ["trigger"],
)
RETRAINING_FINISHED = Counter(
    "finpredict_monitor_retraining_finished_total",
    "Retraining runs ended, by result: registered (a new version) or failed (with a recorded reason).",
    ["result"],
)
WATCHERS = Gauge("finpredict_monitor_watchers", "Open WatchAlerts streams.")
WATCHERS_DROPPED = Counter(
    "finpredict_monitor_watchers_dropped_total",
    "WatchAlerts subscribers dropped (RESOURCE_EXHAUSTED) because they fell behind by more than the queue.",
)
HOUSEKEEPING_ERRORS = Counter(
    "finpredict_monitor_housekeeping_errors_total",
    "Rounds of periodic upkeep (orphaning outcomes, retention, snapshots) that failed and were retried.",
)
SNAPSHOTS = Counter(
    "finpredict_monitor_snapshots_total", "Snapshots of the window state written, by result.", ["result"]
)
RECOVERY_SECONDS = Gauge(
    "finpredict_monitor_recovery_seconds", "Seconds the last start-up took to rebuild the state."
)
FUTURE_REFUSED = Counter(
    "finpredict_monitor_future_times_refused_total",
    "Times refused for being more than the allowed skew ahead of the wall clock (they never move the "
    "evaluation clock), by source: record, outcome, evaluate.",
    ["source"],
)
FEEDBACK = Counter(
    "finpredict_monitor_feedback_total",
    "Analyst feedback recorded on scored decisions, by verdict (confirmed, disputed, overridden): the "
    "overridden share is the override rate (alert FinpredictOverrideRateHigh).",
    ["verdict"],
)
for _verdict in ("confirmed", "disputed", "overridden"):
    FEEDBACK.labels(_verdict)  # exported at 0, so the first override shows in rate()
FEEDBACK_DUPLICATE = Counter(
    "finpredict_monitor_feedback_duplicate_total",
    "Feedback ignored as an exact repeat of its request's latest feedback (a retried call).",
)
REVIEW_CASES = Counter(
    "finpredict_monitor_review_cases_total",
    "Edge cases the gateway sent to the review queue, by kind (refused: validation refused the request; "
    "canary_fallback: the canary failed and stable answered). Review-band scores are found when listed.",
    ["kind"],
)
for _kind in ("refused", "canary_fallback"):
    REVIEW_CASES.labels(_kind)
