"""Monitor settings, read once from ``FINPREDICT_MONITOR_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from finpredict.common.config import ServiceSettings

DEFAULT_RULES_FILE = Path(__file__).with_name("rules.yaml")


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_MONITOR_", extra="ignore", frozen=True)

    port: int = Field(default=50054, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(default=9454, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    data_dir: Path = Field(
        default=Path(".run/monitor"),
        description="Where the prediction and outcome logs (Parquet) and the alert state live.",
    )
    profiles_dir: Path = Field(
        default=Path(".run/monitor/profiles"),
        description="Reference profiles, one file per version: <profiles_dir>/<model>/<version>.bin "
        "(drift_core Profile.to_bytes(), as the pipeline's profile stage writes it).",
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
        "finpredict.common.auth). Ingest and outcomes need writer, reads need reader, EvaluateRules and "
        "TriggerRetraining need admin. Empty leaves every RPC open (a warning at start-up).",
    )
    retrain_workdir: Path | None = Field(
        default=None, description="Working directory of the retraining command (default: the monitor's)."
    )
