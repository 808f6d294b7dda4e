"""ModelServer settings, read once from ``FINPREDICT_MODEL_SERVER_*`` environment variables.

``port``/``metrics_port`` are the control server's (health, reflection, metrics of the
supervisor); predictions go to Serve's gRPC ingress on ``serve_grpc_port``. Each Serve replica
reads its own :class:`ReplicaSettings` (its process has its own environment).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ServiceSettings

DEFAULT_SERVE_CONFIG = Path(__file__).with_name("serve_config.yaml")


class ModelServerSettings(ServiceSettings):
    """Settings of the model-server service (the Serve supervisor)."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_MODEL_SERVER_", extra="ignore", frozen=True)

    port: int = Field(
        default=addresses.MODEL_SERVER_PORT,
        ge=0,
        le=65535,
        description="Control gRPC port; 0 picks a free port.",
    )
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


class ReplicaSettings(BaseSettings):
    """What each Serve replica reads from its own environment.

    That is the environment of ``ray start`` (a local Ray started by the supervisor inherits the
    supervisor's) or of the KubeRay worker pod, never the Serve config, which Ray stores and shows
    in its dashboard.
    """

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_", extra="ignore", frozen=True)

    model_server_registry_token: SecretStr = Field(
        default=SecretStr(""),
        description="Registry bearer token (reader role) the Serve replicas download versions with.",
    )
    services_token: SecretStr = Field(
        default=SecretStr(""),
        description="The replicas' registry token when `FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN` is empty "
        "(`task up` writes one to `.run/secrets.env`).",
    )
    model_server_otlp_endpoint: str = Field(
        default="",
        description="OTLP/gRPC endpoint the replicas export their spans to (as the supervisor does); "
        "empty: spans are created (trace ids flow to the registry) but not exported.",
    )

    @property
    def registry_token(self) -> str:
        """The token the replica sends to the registry."""
        own = self.model_server_registry_token.get_secret_value()
        return own or self.services_token.get_secret_value()
