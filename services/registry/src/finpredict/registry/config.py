"""Registry settings, read once from ``FINPREDICT_REGISTRY_*`` environment variables.

The S3 artifact store's credentials and region are not settings of ours: boto3 reads the standard
``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_REGION`` (or a
profile, a web identity, instance metadata) itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import ConfigError, ServiceSettings, env_var_name

MIB = 1024 * 1024
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()/-]*$")


@dataclass(frozen=True)
class S3Location:
    """Where an S3 artifact store keeps its blobs: ``s3://<bucket>/<prefix>``."""

    bucket: str
    prefix: str  # empty, or ending with "/"

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """``s3://bucket[/prefix]``; raises :class:`ValueError` for a bad bucket name or prefix."""
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        prefix = prefix.strip("/")
        if not _BUCKET_RE.match(bucket):
            raise ValueError(f"{bucket!r} is not an S3 bucket name")
        if not _PREFIX_RE.match(prefix) or ".." in prefix.split("/") or "//" in prefix:
            raise ValueError(f"{prefix!r} is not a safe key prefix")
        return cls(bucket, f"{prefix}/" if prefix else "")

    def uri(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{key}"


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
        description="Artifact store: a local folder path, a file:// URI or s3://<bucket>[/<prefix>] "
        "(an S3-compatible bucket; credentials and region from the standard AWS_* variables, read by "
        "boto3); empty means <data_dir>/artifacts.",
    )
    s3_endpoint_url: str = Field(
        default="",
        description="Endpoint of an S3-compatible server (http://host:port, path-style addressing); "
        "empty means AWS S3 (or AWS_ENDPOINT_URL_S3).",
    )
    s3_region: str = Field(
        default="", description="S3 region; empty means boto3's own (AWS_REGION / AWS_DEFAULT_REGION)."
    )
    s3_multipart_threshold_bytes: int = Field(
        default=16 * MIB,
        ge=5 * MIB,
        description="Artifacts this large or larger go up as S3 multipart uploads.",
    )
    s3_multipart_chunk_bytes: int = Field(
        default=16 * MIB, ge=5 * MIB, le=5 * 1024 * MIB, description="Size of each S3 multipart part."
    )
    s3_connect_timeout_s: float = Field(
        default=2.0, gt=0, le=60, description="Seconds to connect to S3 before the attempt fails."
    )
    s3_read_timeout_s: float = Field(
        default=5.0,
        gt=0,
        le=300,
        description="Seconds S3 may stay silent on a connection before the attempt fails.",
    )
    s3_max_attempts: int = Field(
        default=3,
        ge=1,
        le=10,
        description="Attempts per S3 request (botocore standard retries); then UNAVAILABLE.",
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

    def resolved_artifact_store(self) -> Path | S3Location:
        """The local store's root folder or the S3 store's location; :class:`ConfigError` otherwise."""
        value = self.artifact_store
        name = env_var_name(type(self), "artifact_store")
        if not value:
            return (self.data_dir / "artifacts").resolve()
        if value.startswith("file://"):
            return Path(value.removeprefix("file://")).resolve()
        if value.startswith("s3://"):
            try:
                return S3Location.parse(value)
            except ValueError as exc:
                raise ConfigError(f"{name}={value!r}: {exc}") from None
        if "://" in value:
            raise ConfigError(f"{name}={value!r}: use a folder, file://... or s3://<bucket>[/<prefix>]")
        return Path(value).resolve()

    def s3_spool_dir(self) -> Path:
        """Where uploads to the S3 store are hashed before they are sent (swept at start-up)."""
        return (self.data_dir / "s3-uploads").resolve()

    def validate_extra(self) -> None:
        """Checks that need more than one field; raises :class:`ConfigError` naming the variable."""
        url = self.resolved_database_url()
        if not url.startswith(("sqlite", "postgresql")):
            raise ConfigError(
                f"{env_var_name(type(self), 'database_url')}: only sqlite:// and postgresql:// are supported"
            )
        self.resolved_artifact_store()
