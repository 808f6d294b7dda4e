"""Console settings, read once from ``FINPREDICT_CONSOLE_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ServiceSettings


class ConsoleSettings(ServiceSettings):
    """Settings of the web console (an HTTP server in front of the registry, gateway and monitor).

    ``port`` is the HTTP port; ``tls_cert_file``/``tls_key_file`` serve HTTPS (and make the session
    cookie ``Secure``); ``tls_client_ca_file`` asks browsers for a client certificate. Sign-ins are
    sealed into their cookies with ``session_keys`` (:mod:`finpredict.console.auth`): nothing of
    them is kept in the process, so the console runs as any number of replicas.
    """

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_CONSOLE_", extra="ignore", frozen=True)

    port: int = Field(
        default=addresses.CONSOLE_PORT, ge=0, le=65535, description="HTTP port; 0 picks a free port."
    )
    metrics_port: int = Field(default=9455, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens people sign in with ('token=subject:role[|role],...' or JSON, as the "
        "gateway's): 'admin' shows and allows the rollout actions, which the console passes to the gateway "
        "with the same token (so give it the gateway's tokens). Empty: read-only for everyone.",
    )
    registry_target: str = Field(default=addresses.REGISTRY_ADDRESS, description="Registry gRPC address.")
    registry_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for the registry's reads ('reader')."
    )
    gateway_target: str = Field(default=addresses.GATEWAY_ADDRESS, description="Gateway gRPC address.")
    gateway_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for the gateway's rollout reads ('reader')."
    )
    monitor_target: str = Field(default=addresses.MONITOR_ADDRESS, description="Monitor gRPC address.")
    monitor_token: SecretStr = Field(
        default=SecretStr(""), description="Bearer token for the monitor's reads and lookups ('reader')."
    )
    tls_ca_file: Path | None = Field(
        default=None, description="CA bundle to verify the registry, gateway and monitor (enables TLS)."
    )
    tls_client_cert_file: Path | None = Field(default=None, description="Client certificate for mutual TLS.")
    tls_client_key_file: Path | None = Field(default=None, description="Client private key for mutual TLS.")
    call_timeout_s: float = Field(default=5.0, gt=0, le=120, description="Deadline of each backend call.")
    live_interval_s: float = Field(
        default=1.0, ge=0.05, le=60, description="How often a live page (a rollout) polls the gateway."
    )
    session_keys: SecretStr = Field(
        default=SecretStr(""),
        description="Keys sealing each sign-in into its own cookie (AES-256-GCM), so that any replica, "
        "or a restarted console, reads it: comma-separated, each 32 random bytes in base64 "
        "('openssl rand -base64 32'); the first seals, every one opens (to rotate, add a new key last, "
        "then move it first, then drop the old one session_ttl_s later). The same on every replica; "
        "required when tokens are set.",
    )
    session_ttl_s: float = Field(
        default=8 * 3600.0,
        gt=0,
        description="How long a sign-in lasts, from the time sealed into its cookie.",
    )
    cookie_secure: bool = Field(
        default=False,
        description="Mark the session cookie Secure even without TLS here (a proxy terminates HTTPS).",
    )
    drift_days: int = Field(default=30, ge=1, le=400, description="Days the drift page shows by default.")
