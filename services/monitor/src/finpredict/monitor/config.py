"""Monitor settings, read once from ``FINPREDICT_MONITOR_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from finpredict.common.config import ServiceSettings


class MonitorSettings(ServiceSettings):
    """Settings of the monitor service."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_MONITOR_", extra="ignore", frozen=True)

    port: int = Field(default=50054, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(default=9454, ge=-1, le=65535, description="Prometheus port; -1 disables.")
