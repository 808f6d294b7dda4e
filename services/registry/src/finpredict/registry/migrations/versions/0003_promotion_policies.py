"""Per-model promotion policies (required gates with the registry's thresholds, required
lineage). Models without a row get the default policy, so existing models need no backfill.

Revision ID: 0003_promotion_policies
Revises: 0002_profile_sha256
Create Date: 2026-12-10
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_promotion_policies"
down_revision = "0002_profile_sha256"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "promotion_policies",
        sa.Column("model_id", sa.Integer, sa.ForeignKey("models.id"), primary_key=True),
        sa.Column("policy_json", sa.Text, nullable=False),
        sa.Column("updated_at_us", sa.BigInteger, nullable=False),
        sa.Column("updated_by", sa.String(128), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("promotion_policies")
