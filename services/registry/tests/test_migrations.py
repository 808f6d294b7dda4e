"""The committed Alembic migrations create exactly the schema the code uses, on both databases."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect

from finpredict.registry.db import HEAD_REVISION, MIGRATIONS_DIR, create_db_engine, migrate
from finpredict.registry.schema import metadata
from finpredict.testkit.registry import Postgres


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
                conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar_one() == HEAD_REVISION
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


def test_profile_checksums_are_backfilled_for_versions_registered_before_they_existed(tmp_path: Path) -> None:
    from alembic import command
    from alembic.config import Config

    engine = create_db_engine(f"sqlite:///{tmp_path / 'r.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0001_initial")
            conn.commit()
            conn.exec_driver_sql(
                "INSERT INTO models (id, name, description, tags_json, created_at_us, created_by, "
                "latest_version) VALUES (1, 'm', '', '{}', 0, 'a', 2)"
            )
            for vid, profile in ((1, b"profile-bytes"), (2, b"")):
                conn.exec_driver_sql(
                    "INSERT INTO versions (id, model_id, version, status, description, created_at_us, "
                    "created_by, artifact_sha256, artifact_size, artifact_uri, artifact_format, "
                    "manifest_json, feature_schema_pb, threshold, lineage_json, wandb_link_status, "
                    "reference_profile) "
                    "VALUES (?, 1, ?, 1, '', 0, 'a', '', 0, '', '', '{}', ?, 0.5, '{}', '', ?)",
                    (vid, vid, b"", profile),
                )
            conn.commit()
        migrate(engine)
        with engine.connect() as conn:
            got = dict(conn.exec_driver_sql("SELECT id, reference_profile_sha256 FROM versions").all())
        assert got == {1: hashlib.sha256(b"profile-bytes").hexdigest(), 2: ""}
    finally:
        engine.dispose()
