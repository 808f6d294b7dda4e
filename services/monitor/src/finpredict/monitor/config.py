"""Monitor settings, read once from ``FINPREDICT_MONITOR_*`` environment variables."""

from __future__ import annotations

from datetime import time
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ServiceSettings
from finpredict.monitor.schedule import parse_schedule

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_MONITOR_", extra="ignore", frozen=True)

    port: int = Field(
        default=addresses.MONITOR_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free port."
    )
    metrics_port: int = Field(default=9454, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    data_dir: Path = Field(
        default=Path(".run/monitor"),
        description="Where the prediction and outcome logs (Parquet) and the alert state live.",
    )
    profiles_dir: Path | None = Field(
        default=None,
        description="The reference profiles' cache, one version per file: "
        "<profiles_dir>/<model>/<version>.bin (drift_core Profile.to_bytes(), with its registry sha256 "
        "and feature schema beside it), filled "
        "from the registry on first sight of a version; a file put there by hand is used as is. "
        "Default: <data_dir>/profiles.",
    )
    registry_target: str = Field(
        default=addresses.REGISTRY_ADDRESS,
        description="Registry gRPC address the reference profiles are fetched from; empty: only the "
        "profiles already in the cache are used.",
    )
    registry_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for the registry (the 'reader' role suffices)."
    )
    registry_tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the registry (enables TLS to it)."
    )
    profile_retry_initial_s: float = Field(
        default=1.0, gt=0, description="First wait before a failed profile fetch is retried (then doubled)."
    )
    profile_retry_max_s: float = Field(
        default=300.0, gt=0, description="Longest wait between retries of a profile fetch."
    )
    rules_file: Path = Field(default=DEFAULT_RULES_FILE, description="The alert rules (YAML).")
    alertmanager_url: str = Field(
        default="", description="Alertmanager base URL (API v2); empty disables delivery."
    )
    alert_resend_s: float = Field(
        default=60.0, gt=0, description="Seconds between re-posts of unchanged firing alerts to Alertmanager."
    )
    allowed_lateness_s: float = Field(
        default=300.0, ge=0, description="A window closes once event time has passed its end by this much."
    )
    evaluate_interval_s: float = Field(
        default=60.0,
        ge=0,
        description="Seconds between rule evaluations on the wall clock; 0 leaves evaluation to "
        "EvaluateRules (replays on a simulated clock).",
    )
    retrain_command: str = Field(
        default="",
        description="Command started (as a background subprocess) by a firing rule with retrain: true; "
        "empty disables the trigger. {model}, {alert_id} and {reason} are substituted.",
    )
    tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens: 'token=subject:role[|role],...' or a JSON map (see "
        "finpredict.common.auth). Ingest, outcomes and feedback need writer, reads need reader, "
        "EvaluateRules and TriggerRetraining need admin. Empty refuses every RPC (a warning at start-up), "
        "like the registry and the gateway.",
    )
    retrain_workdir: Path | None = Field(
        default=None, description="Working directory of the retraining command (default: the monitor's)."
    )
    label_maturity_days: float = Field(
        default=7.0,
        ge=0,
        description="Days after a prediction by which its outcome is due: a training export (`finpredict "
        "drift export`, the retraining snapshot) takes only predictions at least this old, and leaves "
        "the younger ones out (counted as unmatured).",
    )
    retrain_snapshot: Path | None = Field(
        default=None,
        description="Where the retraining trigger writes the production snapshot before it starts the "
        "command (relative paths: in the retraining working directory), e.g. "
        "data/production/snapshot.parquet for the pipeline's `production` source: the predictions of "
        "the model in the window of retrain_window_days ending at the alert's time (a manual trigger: "
        "the monitor's clock), joined with their matured outcomes. Unset: no snapshot.",
    )
    retrain_window_days: float = Field(
        default=30.0, gt=0, description="Length of the retraining snapshot's window, in days."
    )
    retrain_schedule: str = Field(
        default="",
        description="Daily retraining runs of the local stack: 'model=HH:MM,...' (time of day in UTC on "
        "the monitor's clock). The run of day D (trigger schedule:<D>) trains on the matured, labelled "
        "predictions of [D - label_maturity_days - retrain_schedule_window_days, D - "
        "label_maturity_days) and needs retrain_command and retrain_snapshot. Empty (the default): no "
        "scheduler; clusters run `finpredict retrain run --schedule` from a CronJob instead.",
    )
    retrain_schedule_window_days: float = Field(
        default=1.0, gt=0, description="Days of matured predictions each scheduled run trains on."
    )
    retention_days: int = Field(
        default=30,
        ge=1,
        le=3650,
        description="Days of event time the prediction log, the outcome log and the request-id index "
        "keep, counted back from the monitor's clock (the latest event or evaluation time); older "
        "records are deleted, and refused when they arrive.",
    )
    snapshot_interval_s: float = Field(
        default=300.0,
        gt=0,
        description="Least wall-clock seconds between snapshots of the window state (a restart reads "
        "the snapshot and only the logs written after it); one is also written at shutdown.",
    )
    max_future_skew_s: float = Field(
        default=300.0,
        ge=0,
        description="Records, outcomes and EvaluateRules times more than this many seconds ahead of the "
        "wall clock are refused (they would move the evaluation clock forward).",
    )
    outcome_wait_s: float = Field(
        default=3600.0,
        gt=0,
        description="How long an outcome for a request the monitor has not seen waits for its prediction "
        "before it is counted as orphaned and dropped.",
    )
    max_waiting_outcomes: int = Field(
        default=100_000,
        ge=1,
        description="Most outcomes waiting for their prediction; beyond it the oldest is orphaned.",
    )
    review_band: float = Field(
        default=0.05,
        ge=0,
        le=0.5,
        description="Half-width of the review band around the decision threshold: a served score at most "
        "this far from its threshold is a case in the review queue (`finpredict review list`), beside "
        "requests refused by validation and canary fallbacks; 0 lists no band cases.",
    )
    watch_queue_size: int = Field(
        default=1000,
        ge=1,
        description="Alert changes queued per WatchAlerts subscriber; one that falls further behind is "
        "dropped with RESOURCE_EXHAUSTED (and counted).",
    )

    @field_validator("retrain_schedule")
    @classmethod
    def _check_schedule(cls, value: str) -> str:
        parse_schedule(value)
        return value

    @property
    def schedule(self) -> dict[str, time]:
        """The local scheduler's time of day (UTC) by model; empty: off."""
        return parse_schedule(self.retrain_schedule)

    @property
    def cache_dir(self) -> Path:
        """Where the reference profiles are cached: ``profiles_dir``, else ``<data_dir>/profiles``."""
        return self.profiles_dir if self.profiles_dir is not None else self.data_dir / "profiles"
