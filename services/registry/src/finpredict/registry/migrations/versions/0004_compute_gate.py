"""The pipeline's ``latency_p99_ms`` gate is renamed ``compute_p99_ms``: it times the model's
in-process compute of single-row predictions, not prediction latency (the serving p99 is judged
by the gateway's canary analysis and alerted on by Prometheus).

Renamed in place, nothing else changed: the gate in every stored promotion policy (its
comparator and threshold kept), and every recorded gate result of that name (its value,
threshold and verdict kept; its detail says under which name it was recorded), so that a
version registered before keeps satisfying the default policy (a rollback to it is allowed as
before). A policy or version that already has a ``compute_p99_ms`` gate keeps both untouched.
Version metrics keep the names they were recorded with.

Revision ID: 0004_compute_gate
Revises: 0003_promotion_policies
Create Date: 2026-12-05
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0004_compute_gate"
down_revision = "0003_promotion_policies"
branch_labels = None
depends_on = None

OLD = "latency_p99_ms"
NEW = "compute_p99_ms"
# Appended to the detail of each renamed gate result (and taken off again by the downgrade).
NOTE = f" [recorded as {OLD}; renamed {NEW} by registry migration {revision}]"

_policies = sa.table(
    "promotion_policies",
    sa.column("model_id", sa.Integer),
    sa.column("policy_json", sa.Text),
)
_gates = sa.table(
    "gate_results",
    sa.column("id", sa.Integer),
    sa.column("version_id", sa.Integer),
    sa.column("name", sa.String(128)),
    sa.column("detail", sa.Text),
)


def _rename_policy_gates(old: str, new: str) -> None:
    conn = op.get_bind()
    for row in conn.execute(sa.select(_policies.c.model_id, _policies.c.policy_json)).all():
        doc = json.loads(row.policy_json)
        names = {g["name"] for g in doc["gates"]}
        if old not in names or new in names:
            continue
        for g in doc["gates"]:
            if g["name"] == old:
                g["name"] = new
        conn.execute(
            _policies.update()
            .where(_policies.c.model_id == row.model_id)
            .values(policy_json=json.dumps(doc, sort_keys=True))
        )


def _gate_rows(name: str, other: str) -> Sequence[Any]:
    """Gate results named ``name`` of versions without a result named ``other``."""
    taken = sa.select(_gates.c.version_id).where(_gates.c.name == other)
    query = sa.select(_gates.c.id, _gates.c.detail).where(
        _gates.c.name == name, _gates.c.version_id.not_in(taken)
    )
    return op.get_bind().execute(query).all()


def upgrade() -> None:
    _rename_policy_gates(OLD, NEW)
    conn = op.get_bind()
    for row in _gate_rows(OLD, NEW):
        conn.execute(_gates.update().where(_gates.c.id == row.id).values(name=NEW, detail=row.detail + NOTE))


def downgrade() -> None:
    _rename_policy_gates(NEW, OLD)
    conn = op.get_bind()
    for row in _gate_rows(NEW, OLD):
        if row.detail.endswith(NOTE):
            conn.execute(
                _gates.update()
                .where(_gates.c.id == row.id)
                .values(name=OLD, detail=row.detail.removesuffix(NOTE))
            )
