"""The sha256 of each version's reference profile, recorded at registration (existing rows
backfilled from their stored bytes), so that a consumer can verify the profile it received.

Revision ID: 0002_profile_sha256
Revises: 0001_initial
Create Date: 2026-12-04
"""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from alembic import op

revision = "0002_profile_sha256"
down_revision = "0001_initial"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.add_column(
            sa.Column("reference_profile_sha256", sa.String(64), nullable=False, server_default="")
        )
    conn = op.get_bind()
    versions = sa.table(
        "versions",
        sa.column("id", sa.Integer),
        sa.column("reference_profile", sa.LargeBinary),
        sa.column("reference_profile_sha256", sa.String(64)),
    )
    rows = conn.execute(
        sa.select(versions.c.id, versions.c.reference_profile).where(
            sa.func.length(versions.c.reference_profile) > 0
        )
    ).all()
    for row in rows:
        conn.execute(
            versions.update()
            .where(versions.c.id == row.id)
            .values(reference_profile_sha256=hashlib.sha256(bytes(row.reference_profile)).hexdigest())
        )


def downgrade() -> None:
    with op.batch_alter_table("versions") as batch:
        batch.drop_column("reference_profile_sha256")
