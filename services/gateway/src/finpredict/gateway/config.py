"""Gateway settings, read once from ``FINPREDICT_GATEWAY_*`` environment variables."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ServiceSettings


class GatewaySettings(ServiceSettings):
    """Settings of the gateway (the gRPC entry point for clients)."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_GATEWAY_", extra="ignore", frozen=True)

    port: int = Field(
        default=addresses.GATEWAY_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free port."
    )
    metrics_port: int = Field(default=9451, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens the gateway accepts ('token=subject:role[|role],...' or JSON): "
        "scoring needs 'reader', recording outcomes 'writer', rollout changes 'admin'.",
    )
    data_dir: Path = Field(
        default=Path(".run/gateway"), description="Folder of the default state database (SQLite, gateway.db)."
    )
    database_url: str = Field(
        default="",
        description="Rollouts, experiments, shadows and the controller lease, shared by every replica: "
        "a SQLAlchemy URL (postgresql+psycopg://... for several replicas); "
        "empty means sqlite:///<data_dir>/gateway.db (one gateway).",
    )
    replica_id: str = Field(
        default="",
        max_length=128,
        description="This replica's name in the shared state (controller lease, window measurements); "
        "unique per running gateway. Empty: <hostname>:<port> (the pod name in Kubernetes).",
    )
    lease_s: float = Field(
        default=10.0,
        ge=0.3,
        le=300,
        description="Controller lease: one replica runs the rollout analysis and renews the lease every "
        "third of this; if it dies another takes over within two of these.",
    )
    state_poll_s: float = Field(
        default=0.25,
        gt=0,
        le=5,
        description="How often each replica checks the shared state for changes (applied within about "
        "this) and publishes its window measurements.",
    )
    registry_target: str = Field(default=addresses.REGISTRY_ADDRESS, description="Registry gRPC address.")
    registry_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token for the registry; needs 'admin' to promote at the end of a rollout.",
    )
    model_server_target: str = Field(
        default=addresses.SERVE_GRPC_ADDRESS, description="Model server address (Ray Serve's gRPC ingress)."
    )
    model_server_application: str = Field(default="model-server", description="Serve application name.")
    monitor_target: str = Field(
        default=addresses.MONITOR_ADDRESS,
        description="Monitor gRPC address; empty disables the prediction log and outcomes.",
    )
    monitor_token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token for the monitor: the prediction log and outcomes need 'writer'.",
    )
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the registry, model server and monitor (enables TLS)."
    )
    tls_client_cert_file: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    tls_client_key_file: Path | None = Field(default=None, description="Client private key for mutual TLS.")
    backend_timeout_s: float = Field(
        default=2.0,
        gt=0,
        description="Deadline of one model-server attempt; a call (its retries included) never "
        "outlives the deadline of the client it serves.",
    )
    backend_retries: int = Field(
        default=2,
        ge=0,
        le=5,
        description="Retries of a model-server call on a fresh attempt: after UNAVAILABLE (a replica "
        "or proxy went away), or after an attempt ran out of its deadline (see backend_timeout_retries).",
    )
    backend_timeout_retries: int = Field(
        default=1,
        ge=0,
        le=5,
        description="Of those retries, how many may follow an attempt that ran out of its deadline; "
        "one goes only while the client's deadline leaves room for a full attempt, and each "
        "attempt that runs out counts as a failure towards the circuit breaker.",
    )
    batch_window_ms: float = Field(
        default=2.0,
        ge=0,
        le=100,
        description="How long concurrent requests wait to be coalesced into one call.",
    )
    max_batch_rows: int = Field(default=256, ge=1, le=10_000, description="Most rows in one coalesced call.")
    max_request_rows: int = Field(
        default=1000, ge=1, le=100_000, description="Most applications (or outcomes) in one request."
    )
    breaker_failures: int = Field(
        default=5, ge=1, description="Consecutive backend failures that open a version's circuit."
    )
    breaker_cooldown_s: float = Field(default=5.0, gt=0, description="Seconds an open circuit stays open.")
    alias_ttl_s: float = Field(
        default=1.0, ge=0, description="Seconds a resolved `production` alias is cached."
    )
    log_buffer_records: int = Field(
        default=50_000, ge=1, description="Prediction-log buffer; records beyond it are dropped and counted."
    )
    log_batch_records: int = Field(default=500, ge=1, description="Records per IngestPredictions call.")
    log_flush_s: float = Field(default=0.5, gt=0, description="Longest wait before a partial batch is sent.")
    controller_tick_s: float = Field(default=0.5, gt=0, description="How often the rollout controller wakes.")
    handoff_poll_s: float = Field(
        default=5.0,
        ge=0,
        description="How often the rollout controller (the lease holder) asks the registry for new "
        "versions that their model's promotion policy hands off to a canary, and starts those rollouts; "
        "0 disables the hand-off on this replica.",
    )
    test_hook_canary_weight_factor: float = Field(
        default=1.0,
        gt=0,
        description="Test hook, never for production: the router sends this multiple of each rollout's "
        "canary weight to the canary (2 sends 2 % for a 1 % step), a broken split the sample-ratio "
        "check must halt. 1 routes as configured.",
    )
    shadow_concurrency: int = Field(
        default=64, ge=1, description="Most shadow calls in flight; more are skipped."
    )

    def resolved_database_url(self) -> str:
        """The state database URL, defaulting to SQLite in the data folder."""
        return self.database_url or f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    def resolved_replica_id(self) -> str:
        """The replica id, defaulting to the host name and port (the pid when the port is chosen
        at start), so a restarted gateway takes its own controller lease back at once."""
        if self.replica_id:
            return self.replica_id
        return f"{socket.gethostname()}:{self.port}" if self.port else f"{socket.gethostname()}-{os.getpid()}"
