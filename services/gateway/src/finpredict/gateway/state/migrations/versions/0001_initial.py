"""Initial gateway state: change counter, rollouts, experiments, shadows, leases, window statistics.

Revision ID: 0001_initial
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "state_meta",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.bulk_insert(
        sa.table("state_meta", sa.column("id", sa.Integer), sa.column("version", sa.BigInteger)),
        [{"id": 1, "version": 0}],
    )
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("active_model", sa.String(64), nullable=True, unique=True),
        sa.Column("revision", sa.BigInteger, nullable=False),
        sa.Column("window", sa.BigInteger, nullable=False),
        sa.Column("started_at", sa.Float, nullable=False),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_index("ix_rollouts_model", "rollouts", ["model"])
    op.create_table(
        "experiments",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("running_model", sa.String(64), nullable=True, unique=True),
        sa.Column("doc", sa.Text, nullable=False),
    )
    op.create_table(
        "shadows",
        sa.Column("model", sa.String(64), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("percent", sa.Float, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("token", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.bulk_insert(
        sa.table(
            "leases",
            sa.column("name", sa.String),
            sa.column("holder", sa.String),
            sa.column("token", sa.BigInteger),
            sa.column("expires_at", sa.Float),
        ),
        [{"name": "rollout-controller", "holder": "", "token": 0, "expires_at": 0.0}],
    )
    op.create_table(
        "window_stats",
        sa.Column("rollout_id", sa.String(32), primary_key=True),
        sa.Column("window", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("source", sa.String(160), primary_key=True),
        sa.Column("replica", sa.String(128), nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("stats", sa.Text, nullable=False),
    )


def downgrade() -> None:
    for table in ("window_stats", "leases", "shadows", "experiments", "rollouts", "state_meta"):
        op.drop_table(table)
