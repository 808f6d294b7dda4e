"""The gateway's shared tables (SQLAlchemy Core). The Alembic migrations create exactly these.

Rollouts and experiments are JSON documents with a few columns to query and constrain on.
``active_model`` / ``running_model`` hold the model name while a rollout is active or an
experiment runs (NULL otherwise), so a unique constraint allows one of each per model on both
databases without partial indexes. ``revision`` is a rollout's compare-and-set counter.

``state_meta`` is one row whose ``version`` every state change increments in its transaction
(replicas poll it to learn that something changed); ``leases`` holds the controller lease and
its fencing token; ``window_stats`` the per-replica measurements of each rollout's current
analysis window (not part of the routing state: writing them does not change ``version``).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text

metadata = MetaData()

STATE_ROW = 1
CONTROLLER_LEASE = "rollout-controller"

state_meta = Table(
    "state_meta",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("version", BigInteger, nullable=False),
)

rollouts = Table(
    "rollouts",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(64), nullable=False, index=True),
    Column("state", String(16), nullable=False),
    Column("active_model", String(64), nullable=True, unique=True),
    Column("revision", BigInteger, nullable=False),
    Column("window", BigInteger, nullable=False),
    Column("started_at", Float, nullable=False),
    Column("doc", Text, nullable=False),
)

experiments = Table(
    "experiments",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("model", String(64), nullable=False),
    Column("running_model", String(64), nullable=True, unique=True),
    Column("doc", Text, nullable=False),
)

shadows = Table(
    "shadows",
    metadata,
    Column("model", String(64), primary_key=True),
    Column("version", BigInteger, nullable=False),
    Column("percent", Float, nullable=False),
)

leases = Table(
    "leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("holder", String(128), nullable=False),
    Column("token", BigInteger, nullable=False),
    Column("expires_at", Float, nullable=False),
)

window_stats = Table(
    "window_stats",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column("window", BigInteger, primary_key=True, autoincrement=False),
    Column("source", String(160), primary_key=True),
    Column("replica", String(128), nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("stats", Text, nullable=False),
)
