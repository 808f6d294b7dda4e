"""Database engine, migrations and write transactions for SQLite (WAL) and PostgreSQL.

Write transactions serialise where they must:

* SQLite: every write transaction starts with ``BEGIN IMMEDIATE`` (one writer at a time, the
  others wait up to the busy timeout), in WAL mode so readers never block;
* PostgreSQL: the model row (``UPDATE ... RETURNING`` / ``SELECT ... FOR UPDATE``) and the single
  ``registry_state`` row are locked inside the transaction, so version numbers and event ids
  are allocated (and committed) strictly in order.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine

from finpredict import sqldb
from finpredict.sqldb import read_tx, write_tx

__all__ = ["HEAD_REVISION", "MIGRATIONS_DIR", "create_db_engine", "migrate", "read_tx", "write_tx"]

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The newest migration; a test checks it is Alembic's head. A database already there is not
# touched (and Alembic is not even imported: faster restarts).
HEAD_REVISION = "0004_compute_gate"
_MIGRATION_LOCK = 0x7265_6769  # PostgreSQL advisory lock: one registry replica migrates at a time


def create_db_engine(url: str) -> Engine:
    """The registry's engine: SQLite with foreign keys and a 60 s busy timeout, or PostgreSQL."""
    return sqldb.create_db_engine(url, sqlite_busy_timeout_s=60.0, sqlite_foreign_keys=True)


def current_revision(engine: Engine) -> str | None:
    return sqldb.current_revision(engine)


def migrate(engine: Engine) -> None:
    """Brings the schema to the newest migration (idempotent)."""
    sqldb.migrate(engine, MIGRATIONS_DIR, HEAD_REVISION, pg_advisory_lock=_MIGRATION_LOCK)
