"""The shared state's engine, transactions, migrations and change counter.

SQLite (one gateway, the default) or PostgreSQL (any number of replicas). Write transactions
serialise on the single ``state_meta`` row: every change locks and increments it first
(``BEGIN IMMEDIATE`` on SQLite), so changes are applied in one order and the counter tells
every replica that something changed. PostgreSQL connections have short connect, statement and
TCP timeouts: a lost database fails a call within seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, inspect, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import NullPool

from finpredict.gateway import metrics
from finpredict.gateway.state.schema import STATE_ROW, state_meta

log = logging.getLogger("finpredict.gateway.state")
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it is Alembic's head. A database already there is not
# touched (and Alembic is not imported).
HEAD_REVISION = "0001_initial"
VERSION_TABLE = "gateway_alembic_version"  # not Alembic's default: a database may be shared
_WRITE = "finpredict_write"
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
    """An engine for ``url``; SQLite gets WAL, a busy timeout and explicit write locking."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url, connect_args={"timeout": 30, "check_same_thread": False}, poolclass=NullPool
        )

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            immediate = conn.get_execution_options().get(_WRITE, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

        return engine
    return create_engine(
        url, pool_size=4, max_overflow=4, pool_timeout=5, pool_pre_ping=True, connect_args=PG_CONNECT_ARGS
    )


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    with engine.connect() as conn, conn.begin():
        yield conn


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
    with engine.connect() as conn:
        if not inspect(conn).has_table(VERSION_TABLE):
            return None
        value = conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar_one_or_none()
        return str(value) if value is not None else None


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest migration (idempotent; safe with replicas starting together)."""
    if current_revision(engine) == HEAD_REVISION:
        return
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_WRITE: True})
        else:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({_MIGRATION_LOCK})")
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if engine.dialect.name != "sqlite":
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({_MIGRATION_LOCK})")
                conn.commit()
    log.info("gateway state migrated", extra={"dialect": engine.dialect.name})
