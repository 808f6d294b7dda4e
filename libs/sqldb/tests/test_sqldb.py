"""The shared SQL helpers on SQLite: WAL and write locking, rollback on error, idempotent migrations."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, insert, select

from finpredict.sqldb import create_db_engine, current_revision, read_tx, write_tx

META = MetaData()
ROWS = Table("rows", META, Column("id", Integer, primary_key=True))


def test_sqlite_runs_in_wal_mode_and_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'sub' / 'db.sqlite'}")
    META.create_all(engine)
    with read_tx(engine) as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"

    def half_written() -> None:
        with write_tx(engine) as conn:
            conn.execute(insert(ROWS).values(id=1))
            raise RuntimeError("half-way")

    with pytest.raises(RuntimeError):
        half_written()
    with write_tx(engine) as conn:
        conn.execute(insert(ROWS).values(id=2))
    with read_tx(engine) as conn:
        assert [r.id for r in conn.execute(select(ROWS))] == [2]
    assert current_revision(engine) is None  # never migrated


def test_concurrent_writers_serialise_instead_of_failing(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'db.sqlite'}", sqlite_busy_timeout_s=10)
    META.create_all(engine)
    errors: list[BaseException] = []

    def write(start: int) -> None:
        try:
            for i in range(start, start + 50):
                with write_tx(engine) as conn:
                    conn.execute(insert(ROWS).values(id=i))
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k * 1000,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors
    with read_tx(engine) as conn:
        assert len(conn.execute(select(ROWS)).all()) == 200
