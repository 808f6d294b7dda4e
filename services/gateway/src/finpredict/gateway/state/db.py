"""The shared state's engine, transactions, migrations and change counter.

SQLite (one gateway, the default) or PostgreSQL (any number of replicas). Write transactions
serialise on the single ``state_meta`` row: every change locks and increments it first
(``BEGIN IMMEDIATE`` on SQLite), so changes are applied in one order and the counter tells
every replica that something changed. PostgreSQL connections have short connect, statement and
TCP timeouts: a lost database fails a call within seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

from finpredict import sqldb
from finpredict.gateway import metrics
from finpredict.gateway.state.schema import STATE_ROW, state_meta
from finpredict.sqldb import read_tx, write_tx

__all__ = [
    "HEAD_REVISION", "MIGRATIONS_DIR", "PG_CONNECT_ARGS", "UNAVAILABLE_ERRORS", "VERSION_TABLE",
    "StateUnavailableError", "bump_version", "call", "create_state_engine", "current_revision",
    "current_version", "migrate", "read_tx", "sqlite_url", "write_tx",
]  # fmt: skip

log = logging.getLogger("finpredict.gateway.state")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it is Alembic's head. A database already there is not
# touched (and Alembic is not imported).
HEAD_REVISION = "0001_initial"
VERSION_TABLE = "gateway_alembic_version"  # not Alembic's default: a database may be shared
_MIGRATION_LOCK = 0x6677_5354  # PostgreSQL advisory lock: one replica migrates at a time
PG_CONNECT_ARGS = {
    "connect_timeout": 3,
    "tcp_user_timeout": 5000,
    "keepalives": 1,
    "keepalives_idle": 5,
    "keepalives_interval": 2,
    "keepalives_count": 2,
    # A transaction idle for 2 s belongs to a paused or partitioned replica: the server ends it,
    # so its locks (the lease row's) do not hold up a takeover.
    "options": "-c statement_timeout=5000 -c lock_timeout=5000 -c idle_in_transaction_session_timeout=2000",
}

# What a lost or refusing database raises (connection refused or reset, timeouts, a full pool).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (OperationalError, InterfaceError, PoolTimeoutError)
P = ParamSpec("P")
T = TypeVar("T")


class StateUnavailableError(RuntimeError):
    """The shared state database could not be reached; a change was not made."""


async def call(operation: str, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Runs a blocking store call in a worker thread (the event loop never waits on the database);
    a lost database is counted under ``operation`` and raised as :class:`StateUnavailableError`."""
    try:
        return await asyncio.to_thread(fn, *args, **kwargs)
    except UNAVAILABLE_ERRORS as exc:
        metrics.STATE_ERRORS_TOTAL.labels(operation).inc()
        raise StateUnavailableError(
            f"the gateway's state database is unreachable ({type(exc).__name__}); try again"
        ) from exc


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{path.resolve()}"


def create_state_engine(url: str) -> Engine:
    """The state's engine: SQLite (one gateway) or PostgreSQL with short timeouts (replicas)."""
    return sqldb.create_db_engine(
        url, sqlite_busy_timeout_s=30.0, pool_size=4, max_overflow=4, pool_timeout_s=5.0,
        pg_connect_args=PG_CONNECT_ARGS,
    )  # fmt: skip


def bump_version(conn: Connection) -> int:
    """Increments the change counter inside a write transaction (locking it first) and returns it."""
    return int(
        conn.execute(
            update(state_meta)
            .where(state_meta.c.id == STATE_ROW)
            .values(version=state_meta.c.version + 1)
            .returning(state_meta.c.version)
        ).scalar_one()
    )


def current_version(conn: Connection) -> int:
    return int(conn.execute(select(state_meta.c.version).where(state_meta.c.id == STATE_ROW)).scalar_one())


def current_revision(engine: Engine) -> str | None:
    """The migration the database is at (None for an empty database)."""
    return sqldb.current_revision(engine, VERSION_TABLE)


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest migration (idempotent; safe with replicas starting together)."""
    if sqldb.migrate(
        engine, MIGRATIONS_DIR, HEAD_REVISION, version_table=VERSION_TABLE, pg_advisory_lock=_MIGRATION_LOCK
    ):
        log.info("gateway state migrated", extra={"dialect": engine.dialect.name})
