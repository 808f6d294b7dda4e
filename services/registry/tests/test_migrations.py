"""The committed Alembic migrations create exactly the schema the code uses, on both databases."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from registry_testkit import Postgres
from sqlalchemy import inspect

from finpredict.registry.db import create_db_engine, migrate
from finpredict.registry.schema import metadata


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_migrations_match_the_schema_and_are_idempotent(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "postgres":
        pg: Postgres = request.getfixturevalue("postgres")
        url = pg.new_database()
    else:
        url = f"sqlite:///{tmp_path / 'r.db'}"
    engine = create_db_engine(url)
    try:
        migrate(engine)
        migrate(engine)  # a second run is a no-op
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
            assert diff == []
            assert (
                conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == "0001_initial"
            )
            assert conn.exec_driver_sql("SELECT last_event_id FROM registry_state").scalar_one() == 0
            if backend == "sqlite":
                assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
        assert set(inspect(engine).get_table_names()) >= set(metadata.tables)
    finally:
        engine.dispose()


def test_head_revision_constant_is_alembics_head() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from finpredict.registry.db import HEAD_REVISION, MIGRATIONS_DIR

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


def test_migrate_subcommand(tmp_path: Path) -> None:
    env = {"FINPREDICT_REGISTRY_DATA_DIR": str(tmp_path / "data"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "finpredict.registry", "migrate"], env=env, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    assert (tmp_path / "data" / "registry.db").exists()
    bad = subprocess.run(
        [sys.executable, "-m", "finpredict.registry", "frobnicate"], capture_output=True, timeout=60
    )
    assert bad.returncode != 0
    assert b"usage" in bad.stderr
