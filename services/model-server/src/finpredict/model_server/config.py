"""ModelServer settings, read once from ``FINPREDICT_MODEL_SERVER_*`` environment variables.

``port``/``metrics_port`` are the control server's (health, reflection, metrics of the
supervisor); predictions go to Serve's gRPC ingress on ``serve_grpc_port``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from finpredict.common.config import ServiceSettings

DEFAULT_SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")


class ModelServerSettings(ServiceSettings):
    """Settings of the model-server service (the Serve supervisor)."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_MODEL_SERVER_", extra="ignore", frozen=True)

    port: int = Field(default=50053, ge=0, le=65535, description="Control gRPC port; 0 picks a free port.")
    metrics_port: int = Field(default=9453, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    serve_config: Path = Field(default=DEFAULT_SERVE_CONFIG, description="The Serve config (YAML).")
    serve_grpc_port: int = Field(
        default=-1,
        ge=-1,
        le=65535,
        description="Serve gRPC ingress port; -1 keeps the config's, 0 picks one.",
    )
    serve_http_port: int = Field(
        default=-1, ge=-1, le=65535, description="Serve HTTP proxy port; -1 keeps the config's, 0 picks one."
    )
    app_name: str = Field(default="model-server", description="Serve application name (in the config).")
    ray_address: str = Field(
        default="", description="Ray cluster to deploy to (e.g. 127.0.0.1:6379); empty starts a local Ray."
    )
    ray_num_cpus: int = Field(
        default=2, ge=1, description="CPUs of the local Ray (when ray_address is empty)."
    )
    ray_temp_dir: Path | None = Field(default=None, description="Temp dir of the local Ray.")
    registry_target: str = Field(default="", description="Overrides the config's registry_target when set.")
    startup_timeout_s: float = Field(default=300, gt=0, description="Deadline for the app to be RUNNING.")
    delete_app_on_exit: bool = Field(
        default=True, description="On SIGTERM, delete the Serve app from a shared cluster after draining."
    )
