"""Gateway settings, read once from ``FINPREDICT_GATEWAY_*`` environment variables."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from finpredict.common.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Settings of the gateway (the gRPC entry point for clients)."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(default=50051, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(default=9451, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    registry_target: str = Field(default="127.0.0.1:50052", description="Registry gRPC address.")
    model_server_target: str = Field(default="127.0.0.1:50053", description="Model server gRPC address.")
    monitor_target: str = Field(default="127.0.0.1:50054", description="Monitor gRPC address.")
