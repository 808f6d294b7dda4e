"""SQL storage helpers shared by the services that keep state in a database (registry, gateway).

SQLite is the embedded default, PostgreSQL the shared one. Write transactions serialise where
they must: on SQLite every write transaction starts with ``BEGIN IMMEDIATE`` (one writer at a
time, the others wait up to the busy timeout) in WAL mode, so readers never block; on
PostgreSQL each service locks its own rows inside the transaction. Migrations are Alembic's,
run on a connection this module hands over; a database already at the head revision is not
touched (and Alembic is not even imported).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

__all__ = ["create_db_engine", "current_revision", "migrate", "read_tx", "write_tx"]

log = logging.getLogger("finpredict.sqldb")
_WRITE = "finpredict_write"  # execution option: this transaction writes (SQLite: BEGIN IMMEDIATE)


def create_db_engine(
    url: str,
    *,
    sqlite_busy_timeout_s: float = 30.0,
    sqlite_foreign_keys: bool = False,
    pool_size: int = 10,
    max_overflow: int = 10,
    pool_timeout_s: float = 30.0,
    pg_connect_args: Mapping[str, Any] | None = None,
) -> Engine:
    """An engine for ``url``: SQLite gets WAL, full sync, a busy timeout and explicit write
    locking; PostgreSQL a pre-pinged pool with the given connect arguments."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(
            url,
            pool_size=pool_size,
            max_overflow=max_overflow,
            pool_timeout=pool_timeout_s,
            pool_pre_ping=True,
            connect_args=dict(pg_connect_args or {}),
        )
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        connect_args={"timeout": sqlite_busy_timeout_s, "check_same_thread": False},
        poolclass=NullPool,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        if sqlite_foreign_keys:
            cur.execute("PRAGMA foreign_keys=ON")
        cur.execute(f"PRAGMA busy_timeout={int(sqlite_busy_timeout_s * 1000)}")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextlib.contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction: committed on success, rolled back on any exception."""
    with engine.connect() as conn:
        conn.execution_options(**{_WRITE: True})
        with conn.begin():
            yield conn


@contextlib.contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read-only transaction (a consistent snapshot on both databases)."""
    with engine.connect() as conn, conn.begin():
        yield conn


def current_revision(engine: Engine, version_table: str = "alembic_version") -> str | None:
    """The migration the database is at (None for an empty database)."""
    with engine.connect() as conn:
        if not inspect(conn).has_table(version_table):
            return None
        value = conn.exec_driver_sql(f"SELECT version_num FROM {version_table}").scalar_one_or_none()
        return str(value) if value is not None else None


def migrate(
    engine: Engine,
    migrations_dir: Path,
    head_revision: str,
    *,
    version_table: str = "alembic_version",
    pg_advisory_lock: int | None = None,
) -> bool:
    """Brings the schema to the newest migration; idempotent. With ``pg_advisory_lock`` on
    PostgreSQL, replicas starting together migrate one at a time. True when it migrated."""
    if current_revision(engine, version_table) == head_revision:
        return False
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    locked = engine.dialect.name != "sqlite" and pg_advisory_lock is not None
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.execution_options(**{_WRITE: True})
        elif locked:
            conn.exec_driver_sql(f"SELECT pg_advisory_lock({pg_advisory_lock})")
            conn.commit()
        try:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        finally:
            if locked:
                conn.exec_driver_sql(f"SELECT pg_advisory_unlock({pg_advisory_lock})")
                conn.commit()
    log.info("database migrated", extra={"dialect": engine.dialect.name, "revision": head_revision})
    return True
