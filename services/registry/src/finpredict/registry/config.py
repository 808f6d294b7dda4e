"""Registry settings, read once from ``FINPREDICT_REGISTRY_*`` environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ConfigError, ServiceSettings, env_var_name


class RegistrySettings(ServiceSettings):
    """Settings of the registry service."""

    model_config = SettingsConfigDict(env_prefix="FINPREDICT_REGISTRY_", extra="ignore", frozen=True)

    port: int = Field(
        default=addresses.REGISTRY_PORT, ge=0, le=65535, description="gRPC port; 0 picks a free port."
    )
    metrics_port: int = Field(default=9452, ge=-1, le=65535, description="Prometheus port; -1 disables.")
    data_dir: Path = Field(
        default=Path(".run/registry"),
        description="Folder for the default SQLite database and the default artifact store.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL (sqlite:///... or postgresql+psycopg://...); "
        "empty means sqlite:///<data_dir>/registry.db.",
    )
    artifact_store: str = Field(
        default="",
        description="Artifact store: a local folder path or file:// URI; empty means <data_dir>/artifacts.",
    )
    tokens: SecretStr = Field(
        default=SecretStr(""),
        description="Bearer tokens: 'token=subject:role[|role],...' or a JSON map "
        "(see finpredict.common.auth).",
    )
    chunk_size: int = Field(
        default=1024 * 1024, ge=1024, le=8 * 1024 * 1024, description="Bytes per artifact download chunk."
    )
    max_artifact_bytes: int = Field(
        default=2 * 1024 * 1024 * 1024, gt=0, description="Largest artifact accepted by upload."
    )
    migrate_on_start: bool = Field(
        default=True, description="Apply database migrations at start-up (else run `migrate` first)."
    )
    wandb_mode: Literal["disabled", "offline", "online"] = Field(
        default="offline",
        description="W&B registry link on promotion: online links, offline records 'pending'.",
    )
    wandb_registry_path: str = Field(
        default="wandb-registry-model",
        description="W&B registry collection prefix the artifact is linked into (<prefix>/<model>).",
    )
    watch_poll_s: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="WatchAliases also polls the database this often (events written by other replicas).",
    )

    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data folder."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    def resolved_artifact_root(self) -> Path:
        """The local artifact store root; raises :class:`ConfigError` for unsupported URIs."""
        value = self.artifact_store
        if not value:
            return (self.data_dir / "artifacts").resolve()
        if value.startswith("file://"):
            return Path(value.removeprefix("file://")).resolve()
        if "://" in value:
            raise ConfigError(
                f"{env_var_name(type(self), 'artifact_store')}={value!r}: only local folders are "
                "implemented (the S3 store is an interface without an implementation in this build)"
            )
        return Path(value).resolve()

    def validate_extra(self) -> None:
        """Checks that need more than one field; raises :class:`ConfigError` naming the variable."""
        url = self.resolved_database_url()
        if not url.startswith(("sqlite", "postgresql")):
            raise ConfigError(
                f"{env_var_name(type(self), 'database_url')}: only sqlite:// and postgresql:// are supported"
            )
        self.resolved_artifact_root()
