"""The committed Alembic migrations create exactly the schema the code uses, on both databases."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from finpredict.registry.db import HEAD_REVISION, MIGRATIONS_DIR, create_db_engine, migrate
from finpredict.registry.policy import COMPARATOR_GE, COMPARATOR_LE, HandOff, Policy, PolicyGate
from finpredict.registry.repo import Repository
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


def _old_database(conn: Connection, own_policy_json: str) -> None:
    """Models ``own`` (its own policy) and ``plain`` (the default), each with a version 1 whose
    gate results are those of the pipeline before the rename (``latency_p99_ms`` = 12.5)."""
    ge, le = COMPARATOR_GE, COMPARATOR_LE
    gates = [("auc_roc", 0.86, 0.82, ge), ("ece", 0.02, 0.05, le), ("latency_p99_ms", 12.5, 50.0, le)]
    gates.append(("demographic_parity_diff", 0.01, 0.05, le))
    lineage = '{"git_commit": "abc", "data_md5": {"d": "0"}, "dvc_lock_sha256": "f"}'
    for mid, name in ((1, "own"), (2, "plain")):
        conn.execute(
            text(
                "INSERT INTO models (id, name, description, tags_json, created_at_us, created_by, "
                "latest_version) VALUES (:id, :name, '', '{}', 0, 'a', 1)"
            ),
            {"id": mid, "name": name},
        )
        conn.execute(
            text(
                "INSERT INTO versions (id, model_id, version, status, description, created_at_us, "
                "created_by, artifact_sha256, artifact_size, artifact_uri, artifact_format, manifest_json, "
                "feature_schema_pb, threshold, lineage_json, wandb_link_status, reference_profile, "
                "reference_profile_sha256) VALUES "
                "(:id, :id, 1, 1, '', 0, 'a', '', 0, '', '', '{}', :empty, 0.5, :lineage, '', :profile, '')"
            ),
            {"id": mid, "empty": b"", "lineage": lineage, "profile": b"profile"},
        )
        for gate, value, threshold, comparator in gates:
            conn.execute(
                text(
                    "INSERT INTO gate_results (version_id, name, value, threshold, comparator, passed, "
                    "detail, created_at_us) "
                    "VALUES (:v, :name, :value, :threshold, :cmp, :ok, 'best of 3 rounds', 0)"
                ),
                {
                    "v": mid,
                    "name": gate,
                    "value": value,
                    "threshold": threshold,
                    "cmp": comparator,
                    "ok": True,
                },
            )
    conn.execute(
        text(
            "INSERT INTO promotion_policies (model_id, policy_json, updated_at_us, updated_by) "
            "VALUES (1, :policy, 7, 'operator')"
        ),
        {"policy": own_policy_json},
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_the_latency_gate_is_renamed_compute_in_stored_policies_and_gate_results(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """A database from before ``0004_compute_gate``, whose policies and gate results name the
    pipeline's gate ``latency_p99_ms``: after the migration both policies require
    ``compute_p99_ms`` (thresholds and the rest kept), both old versions still satisfy them (a
    rollback to one stays allowed), and their gate results keep their values and say under which
    name they were recorded; the downgrade puts everything back."""
    from alembic import command
    from alembic.config import Config

    url = request.getfixturevalue("postgres").new_database() if backend == "postgres" else None
    engine = create_db_engine(url or f"sqlite:///{tmp_path / 'r.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    own = Policy(
        gates=(
            PolicyGate("auc_roc", COMPARATOR_GE, 0.55),
            PolicyGate("latency_p99_ms", COMPARATOR_LE, 1000.0),
        ),
        required_lineage=("git_commit",),
        hand_off=HandOff(mode="canary", steps=(5.0, 100.0), after_version=1),
    )
    renamed = "SELECT version_id, value, threshold, detail FROM gate_results WHERE name = 'compute_p99_ms'"
    try:
        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "0003_promotion_policies")
            _old_database(conn, own.to_json())
            conn.commit()

        migrate(engine)
        repo = Repository(engine)
        found, problems = repo.check_policy("own", 1)
        assert found.policy == replace(
            own, gates=(own.gates[0], PolicyGate("compute_p99_ms", COMPARATOR_LE, 1000.0))
        )
        assert (found.updated_at_us, found.updated_by, problems) == (7, "operator", [])
        found, problems = repo.check_policy("plain", 1)
        assert (found.is_default, problems) == (True, [])
        with engine.connect() as conn:
            rows = conn.execute(text(renamed)).all()
            assert conn.execute(text("SELECT 1 FROM gate_results WHERE name = 'latency_p99_ms'")).all() == []
        assert sorted(r.version_id for r in rows) == [1, 2]
        note = "[recorded as latency_p99_ms; renamed compute_p99_ms by registry migration 0004_compute_gate]"
        assert {(r.value, r.threshold, r.detail) for r in rows} == {(12.5, 50.0, f"best of 3 rounds {note}")}

        with engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0003_promotion_policies")
            conn.commit()
            stored = conn.execute(text("SELECT policy_json FROM promotion_policies")).scalar_one()
            back = conn.execute(text("SELECT name, detail FROM gate_results WHERE value = 12.5")).all()
        assert Policy.from_json(stored) == own
        assert [tuple(r) for r in back] == [("latency_p99_ms", "best of 3 rounds")] * 2
    finally:
        engine.dispose()
