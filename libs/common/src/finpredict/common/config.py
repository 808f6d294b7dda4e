"""Typed settings read once from the environment.

Each service subclasses :class:`ServiceSettings` with its own ``env_prefix`` (for example
``FINPREDICT_GATEWAY_``) and calls :func:`load_settings` once at start-up. A bad value fails
fast with a :class:`ConfigError` whose message names the environment variable. Every other
package reads its variables the same way, through a ``BaseSettings`` class in its ``config``
(or ``settings``) module; :class:`ClientSettings` holds what every command-line client reads.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from finpredict.common import addresses


class ConfigError(ValueError):
    """An environment variable has a bad value; the message names the variable."""


class ServiceSettings(BaseSettings):
    """Settings every gRPC service has. Subclasses set ``model_config`` with their prefix."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_", extra="ignore", frozen=True)

    host: str = Field(default=addresses.LOCALHOST, description="Address the gRPC server binds to.")
    port: int = Field(default=0, ge=0, le=65535, description="gRPC port; 0 picks a free port.")
    metrics_port: int = Field(
        default=0, ge=-1, le=65535, description="Prometheus /metrics port; 0 picks a free port, -1 disables."
    )
    ready_file: Path | None = Field(
        default=None, description="When set, the bound ports are written here as JSON once serving."
    )
    drain_delay_s: float = Field(
        default=0.0, ge=0, description="After SIGTERM, seconds health reports NOT_SERVING before stopping."
    )
    shutdown_grace_s: float = Field(
        default=10.0, ge=0, description="Seconds in-flight RPCs get to finish after the drain delay."
    )
    max_message_bytes: int = Field(
        default=16 * 1024 * 1024, gt=0, description="Largest gRPC message accepted or sent."
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["json", "text"] = "json"
    otlp_endpoint: str = Field(
        default="", description="OTLP/gRPC endpoint for traces; empty disables export."
    )
    tls_cert_file: Path | None = Field(default=None, description="Server certificate (PEM); enables TLS.")
    tls_key_file: Path | None = Field(default=None, description="Server private key (PEM).")
    tls_client_ca_file: Path | None = Field(
        default=None, description="CA bundle for client certificates; enables mutual TLS."
    )


class ClientSettings(BaseSettings):
    """The clients' settings: the caller's token and the services' addresses.

    Read by every command-line group (``finpredict models``, ``rollout``, ``score``, ``drift``) and
    the pipeline's register stage; a ``--token``/``--target`` option wins over them. An empty
    variable counts as unset.
    """

    model_config = SettingsConfigDict(
        env_prefix="FINPREDICT_",
        extra="ignore",
        frozen=True,
        env_ignore_empty=True,
        str_strip_whitespace=True,
    )

    token: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer token of the `finpredict` command line (or `--token`); `task up` writes one "
        "to `.run/secrets.env`.",
    )
    gateway_target: str = Field(
        default=addresses.GATEWAY_ADDRESS,
        description="Gateway address of `finpredict rollout`, `score` and `outcomes` (or `--target`).",
    )
    registry_target: str = Field(
        default=addresses.REGISTRY_ADDRESS,
        description="Registry address of `finpredict models` (or `--target`) and of the pipeline's "
        "register stage, which needs it set (`task train` starts a registry for it).",
    )
    monitor_target: str = Field(
        default=addresses.MONITOR_ADDRESS,
        description="Monitor address of `finpredict drift`, `finpredict retrain` and `finpredict review` "
        "(or `--target`).",
    )


S = TypeVar("S", bound=BaseSettings)


def env_var_name(settings_cls: type[BaseSettings], field: str) -> str:
    """The environment variable that sets ``field`` of ``settings_cls``: its prefix and name, or its
    ``validation_alias`` (``field`` may also be that alias, as validation errors name it)."""
    info = settings_cls.model_fields.get(field)
    if info is None:
        fields = settings_cls.model_fields.values()
        aliases = {f.validation_alias.upper() for f in fields if isinstance(f.validation_alias, str)}
        if field.upper() in aliases:
            return field.upper()
    elif isinstance(info.validation_alias, str):
        return info.validation_alias.upper()
    prefix = settings_cls.model_config.get("env_prefix", "") or ""
    return f"{prefix}{field}".upper()


def load_settings(settings_cls: type[S]) -> S:
    """Reads ``settings_cls`` from the environment, raising :class:`ConfigError` on bad values."""
    try:
        settings = settings_cls()
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            field = str(err["loc"][0]) if err["loc"] else "?"
            value = err.get("input")
            problems.append(f"{env_var_name(settings_cls, field)}={value!r}: {err['msg']}")
        raise ConfigError("invalid configuration: " + "; ".join(problems)) from None
    if isinstance(settings, ServiceSettings):
        _check_tls(settings_cls, settings)
    return settings


def _check_tls(settings_cls: type[BaseSettings], settings: ServiceSettings) -> None:
    if (settings.tls_cert_file is None) != (settings.tls_key_file is None):
        raise ConfigError(
            f"{env_var_name(settings_cls, 'tls_cert_file')} and {env_var_name(settings_cls, 'tls_key_file')} "
            "must be set together"
        )
    if settings.tls_client_ca_file is not None and settings.tls_cert_file is None:
        raise ConfigError(
            f"{env_var_name(settings_cls, 'tls_client_ca_file')} needs "
            f"{env_var_name(settings_cls, 'tls_cert_file')} (mutual TLS requires TLS)"
        )
