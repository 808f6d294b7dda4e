"""The registry's tables (SQLAlchemy Core). The Alembic migrations create exactly these.

Times are integer microseconds since the Unix epoch (UTC): portable across SQLite and
PostgreSQL and exact to compare. Structured fields are JSON text or protobuf bytes (never
pickles). ``audit_log`` is append-only: the code has no UPDATE or DELETE on it.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

# One row (id=1): the last audit/event id handed out. Audit writers lock it, so ids are
# allocated and committed strictly in order and WatchAliases can resume without gaps.
registry_state = Table(
    "registry_state",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("last_event_id", BigInteger, nullable=False),
)

models = Table(
    "models",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("description", Text, nullable=False),
    Column("tags_json", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("latest_version", BigInteger, nullable=False),
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("model_id", Integer, ForeignKey("models.id"), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("status", Integer, nullable=False),
    Column("description", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
    Column("created_by", String(128), nullable=False),
    Column("artifact_sha256", String(64), nullable=False),
    Column("artifact_size", BigInteger, nullable=False),
    Column("artifact_uri", Text, nullable=False),
    Column("artifact_format", String(64), nullable=False),
    Column("manifest_json", Text, nullable=False),
    Column("feature_schema_pb", LargeBinary, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("lineage_json", Text, nullable=False),
    Column("wandb_link_status", String(16), nullable=False),
    Column("reference_profile", LargeBinary, nullable=False),
    Column("reference_profile_sha256", String(64), nullable=False, server_default=""),
    Column("idempotency_key", String(128), nullable=True),
    UniqueConstraint("model_id", "version", name="uq_versions_model_version"),
    UniqueConstraint("model_id", "idempotency_key", name="uq_versions_model_idempotency"),
)
Index("ix_versions_created", versions.c.created_at_us)

version_tags = Table(
    "version_tags",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
)

version_metrics = Table(
    "version_metrics",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id"), primary_key=True),
    Column("name", String(128), primary_key=True),
    Column("value", Float, nullable=False),
)

gate_results = Table(
    "gate_results",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version_id", Integer, ForeignKey("versions.id"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("value", Float, nullable=False),
    Column("threshold", Float, nullable=False),
    Column("comparator", Integer, nullable=False),
    Column("passed", Boolean, nullable=False),
    Column("detail", Text, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)
Index("ix_gate_results_version", gate_results.c.version_id)

# A model's own promotion policy (finpredict.registry.policy JSON); a model without a row gets
# the default policy.
promotion_policies = Table(
    "promotion_policies",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("policy_json", Text, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
    Column("updated_by", String(128), nullable=False),
)

aliases = Table(
    "aliases",
    metadata,
    Column("model_id", Integer, ForeignKey("models.id"), primary_key=True),
    Column("name", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("updated_at_us", BigInteger, nullable=False),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("action", String(32), nullable=False),
    Column("model", String(64), nullable=False),
    Column("version", BigInteger, nullable=False),
    Column("alias", String(64), nullable=False),
    Column("from_version", BigInteger, nullable=False),
    Column("to_version", BigInteger, nullable=False),
    Column("actor", String(128), nullable=False),
    Column("reason", Text, nullable=False),
    Column("time_us", BigInteger, nullable=False),
)
Index("ix_audit_log_model", audit_log.c.model, audit_log.c.id)
