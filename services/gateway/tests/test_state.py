"""The shared state without servers: migrations, the controller lease and its fencing, compare-and-set
saves, one active rollout per model across replicas, propagation to another replica's copy, the
exact merge of the replicas' window measurements, and the import of a pre-upgrade gateway's files.

Each test runs on SQLite and on a real PostgreSQL server (started once for the session)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, select

from finpredict.gateway.analysis import Thresholds, Verdict, analyze
from finpredict.gateway.live import LiveRollouts
from finpredict.gateway.policies import Experiment, PolicyError, PolicyStore
from finpredict.gateway.rollout import (
    Rollout,
    RolloutConflictError,
    RolloutState,
    RolloutStore,
    StaleRolloutError,
)
from finpredict.gateway.routing import Arm
from finpredict.gateway.state.db import (
    HEAD_REVISION,
    MIGRATIONS_DIR,
    VERSION_TABLE,
    create_state_engine,
    current_version,
    migrate,
    read_tx,
    sqlite_url,
)
from finpredict.gateway.state.lease import Fence, Lease, LeaseLostError
from finpredict.gateway.state.legacy import import_legacy
from finpredict.gateway.state.schema import metadata, window_stats
from finpredict.gateway.state.sync import Applied, Snapshot, StateSync
from finpredict.gateway.state.windows import Published, StepWindow, WindowStore, merge_windows

ADVANCE = Verdict("advance", "within limits", {"canary_requests": 300.0})
WAIT = Verdict("wait", "not enough traffic yet", {})
PERIOD = 2.0


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A migrated state database (a fresh one per test)."""
    if request.param == "postgres":
        url = request.getfixturevalue("postgres").new_database()
    else:
        url = sqlite_url(tmp_path / "gateway.db")
    engine = create_state_engine(url)
    migrate(engine)
    yield engine
    engine.dispose()


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


# ----- migrations ----------------------------------------------------------------------------------


def test_migrations_create_exactly_the_schema_and_are_idempotent(engine: Engine) -> None:
    migrate(engine)  # a second run is a no-op
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert conn.exec_driver_sql(f"SELECT version_num FROM {VERSION_TABLE}").scalar_one() == HEAD_REVISION
        assert current_version(conn) == 0
    assert set(inspect(engine).get_table_names()) == set(metadata.tables) | {VERSION_TABLE}


def test_head_revision_constant_is_alembics_head() -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    assert ScriptDirectory.from_config(cfg).get_heads() == [HEAD_REVISION]


# ----- the lease and fencing -------------------------------------------------------------------------


def test_one_holder_at_a_time_and_takeover_only_after_expiry(engine: Engine) -> None:
    clock = Clock()
    a, b = Lease(engine, "gw-a", PERIOD, clock=clock), Lease(engine, "gw-b", PERIOD, clock=clock)
    fence_a = a.acquire_or_renew(None)
    assert fence_a == Fence("gw-a", 1)
    assert b.acquire_or_renew(None) is None, "a live lease is not taken"
    clock.now += PERIOD * 0.9
    assert a.acquire_or_renew(fence_a) == fence_a, "renewal keeps the token"
    clock.now += PERIOD * 0.9
    assert b.acquire_or_renew(None) is None, "the renewal moved the expiry"
    clock.now += PERIOD * 0.2  # past the renewed expiry: a stopped leader lost it
    fence_b = b.acquire_or_renew(None)
    assert fence_b == Fence("gw-b", 2)
    assert a.acquire_or_renew(fence_a) is None, "the old leader neither renews nor re-acquires"
    assert a.current().holder == "gw-b"
    assert b.release(fence_b)
    assert a.acquire_or_renew(None) == Fence("gw-a", 3), "a released lease is free at once"


def test_a_restarted_replica_takes_its_own_lease_back_at_once(engine: Engine) -> None:
    clock = Clock()
    before = Lease(engine, "gw-a", PERIOD, clock=clock).acquire_or_renew(None)
    after = Lease(engine, "gw-a", PERIOD, clock=clock).acquire_or_renew(None)  # same id, new process
    assert before is not None
    assert after is not None
    assert after.token == before.token + 1  # which fences anything the old process still had in flight


def test_a_stale_leader_writes_no_decision(engine: Engine) -> None:
    clock = Clock()
    store = RolloutStore(engine)
    rollout = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
    store.create(rollout)
    a, b = Lease(engine, "gw-a", PERIOD, clock=clock), Lease(engine, "gw-b", PERIOD, clock=clock)
    fence_a = a.acquire_or_renew(None)
    assert fence_a is not None
    # the leader decides, is paused past its lease, another replica takes over ...
    stale = rollout.copy()
    stale.apply(ADVANCE, clock.now, replicas=3, replica="gw-a")
    clock.now += PERIOD + 0.1
    fence_b = b.acquire_or_renew(None)
    assert fence_b is not None
    # ... and the resumed leader's write is refused: nothing changes
    with pytest.raises(LeaseLostError):
        store.save(stale, fence=fence_a, now=clock.now)
    stored = store.get(rollout.id)
    assert stored is not None
    assert (stored.step_index, stored.revision, [d.verdict for d in stored.decisions]) == (0, 1, [])
    # an expired lease nobody took over is refused as well
    clock.now += PERIOD + 0.1
    with pytest.raises(LeaseLostError):
        store.save(rollout.copy(), fence=fence_b, now=clock.now)
    # the current leader's write goes through, once
    fence_b = b.acquire_or_renew(fence_b)
    assert fence_b is not None
    fresh = rollout.copy()
    fresh.apply(ADVANCE, clock.now, replicas=3, replica="gw-b")
    store.save(fresh, fence=fence_b, now=clock.now)
    stored = store.get(rollout.id)
    assert stored is not None
    assert (stored.step_index, stored.window, stored.decisions[-1].replicas) == (1, 1, 3)


def test_saves_are_compare_and_set_so_a_step_is_recorded_once(engine: Engine) -> None:
    store = RolloutStore(engine)
    rollout = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
    store.create(rollout)
    first, second = rollout.copy(), rollout.copy()  # two replicas read the same revision
    first.apply(ADVANCE, 1.0)
    store.save(first)
    second.apply(ADVANCE, 1.0)
    with pytest.raises(StaleRolloutError, match="changed meanwhile"):
        store.save(second)
    stored = store.get(rollout.id)
    assert stored is not None
    assert [d.verdict for d in stored.decisions] == ["advance"]
    assert stored.step_index == 1


def test_one_active_rollout_or_experiment_per_model_across_replicas(engine: Engine) -> None:
    a, b = RolloutStore(engine), RolloutStore(engine)  # two replicas' stores on one database
    a.create(Rollout("credit", 1, 2))
    with pytest.raises(RolloutConflictError, match="already has an active rollout"):
        b.create(Rollout("credit", 1, 3))
    policies = PolicyStore(engine)
    arms = [Arm("a", 1, 50.0), Arm("b", 2, 50.0)]
    with pytest.raises(PolicyError, match="has an active rollout"):
        asyncio.run(policies.start_experiment(Experiment("credit", arms)))
    asyncio.run(policies.start_experiment(Experiment("fraud", arms)))
    with pytest.raises(RolloutConflictError, match="running experiment"):
        b.create(Rollout("fraud", 1, 2))


# ----- window measurements -----------------------------------------------------------------------


def test_published_windows_are_read_back_and_pruned(engine: Engine) -> None:
    store = RolloutStore(engine)
    rollout = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
    store.create(rollout)
    a = WindowStore(engine, replica="gw-a", source="gw-a/1")
    b = WindowStore(engine, replica="gw-b", source="gw-b/1")
    w = StepWindow(0)
    w.canary.record_batch(7, ok=True, latency_ms=3.0, scores=[0.1] * 7)
    a.publish([(rollout.id, 0, w.to_json())])
    w.canary.record_batch(2, ok=False, latency_ms=9.0)
    a.publish([(rollout.id, 0, w.to_json())])  # an upsert: the whole window again
    b.publish([(rollout.id, 0, StepWindow(0).to_json())])
    got = {p.source: p.window for p in b.read(rollout.id, 0)}
    assert got["gw-a/1"].canary.to_dict() == w.canary.to_dict()
    assert got["gw-b/1"].requests == 0
    advanced = rollout.copy()
    advanced.apply(ADVANCE, 2.0)
    store.save(advanced)
    b.publish([(rollout.id, 1, StepWindow(1).to_json())])
    assert b.prune() == 2, "the rows of the past window go"
    with read_tx(engine) as conn:
        assert conn.execute(select(window_stats.c.window)).scalars().all() == [1]


# ----- propagation to another replica's in-memory copy -------------------------------------------


def test_another_replica_applies_changes_and_keeps_its_own_writes(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def scenario() -> None:
        store_a, store_b = RolloutStore(engine), RolloutStore(engine)
        policies_b = PolicyStore(engine, applied_b := Applied())
        live_b = LiveRollouts()
        windows_b = WindowStore(engine, replica="gw-b", source="gw-b/1")
        sync_b = StateSync(engine, store_b, live_b, policies_b, windows_b, applied_b, poll_s=0.1)
        assert await sync_b.refresh()
        assert live_b.models() == set()
        rollout = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
        store_a.create(rollout)  # replica A starts it
        assert await sync_b.refresh()
        seen = live_b.active("credit")
        assert seen is not None
        assert seen.id == rollout.id
        assert live_b.split(seen).assign("customer-1") == rollout.split().assign("customer-1")
        live_b.record_batch(rollout.id, "canary", 4, ok=True, latency_ms=2.0, scores=[0.2] * 4)
        await sync_b.publish()
        assert [p.window.canary.requests for p in windows_b.read(rollout.id, 0)] == [4]
        # B's own write applies at once, and a snapshot read before it does not undo it
        arms = [Arm("a", 1, 50.0), Arm("b", 2, 50.0)]
        await policies_b.start_experiment(Experiment("fraud", arms))
        assert "fraud" in policies_b.experiments
        older = Snapshot(applied_b.floor - 1, [seen], [], {}, {})
        with monkeypatch.context() as m:
            m.setattr(sync_b, "_load", lambda models, applied: older)
            assert not await sync_b.refresh()
        assert "fraud" in policies_b.experiments
        # A aborts: B stops routing to the canary at its next refresh
        ended = rollout.copy()
        ended.abort("test", 3.0)
        store_a.save(ended)
        assert await sync_b.refresh()
        assert live_b.active("credit") is None
        assert "fraud" in policies_b.experiments

    asyncio.run(scenario())


def test_rollout_state_round_trips_with_its_window_and_decision_figures() -> None:
    rollout = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
    rollout.apply(WAIT, 1.0, replicas=2, replica="gw-a")
    rollout.apply(ADVANCE, 2.0, replicas=3, replica="gw-b")
    copy = rollout.copy()
    assert copy == rollout
    assert (copy.window, copy.window_started) == (1, 2.0)
    assert copy.decisions[-1].metrics == {"canary_requests": 300.0}
    copy.pause("x", 3.0)
    copy.resume("y", 4.0)
    assert (copy.window, copy.window_started, copy.state) == (2, 4.0, RolloutState.PROGRESSING)


def test_a_gateway_upgraded_in_place_imports_its_old_state_once(tmp_path: Path) -> None:
    old = Rollout("credit", 1, 2, steps=[10.0, 50.0, 100.0])
    old.apply(ADVANCE, 1.0)
    experiment = Experiment("fraud", [Arm("a", 1, 50.0), Arm("b", 2, 50.0)])
    with sqlite3.connect(tmp_path / "rollouts.db") as db:  # the layout before the shared state
        db.execute(
            "CREATE TABLE rollouts (id TEXT PRIMARY KEY, model TEXT, state TEXT, started_at REAL, doc TEXT)"
        )
        db.execute(
            "INSERT INTO rollouts VALUES (?, ?, ?, ?, ?)",
            (old.id, old.model, "progressing", 0.0, old.to_json()),
        )
    with sqlite3.connect(tmp_path / "policies.db") as db:
        db.execute("CREATE TABLE experiments (id TEXT PRIMARY KEY, model TEXT, running INTEGER, doc TEXT)")
        db.execute(
            "INSERT INTO experiments VALUES (?, ?, 1, ?)", (experiment.id, "fraud", experiment.to_json())
        )
        db.execute("CREATE TABLE shadows (model TEXT PRIMARY KEY, version INTEGER, percent REAL)")
        db.execute("INSERT INTO shadows VALUES ('credit', 3, 20.0)")
    engine = create_state_engine(sqlite_url(tmp_path / "gateway.db"))
    migrate(engine)
    try:
        assert import_legacy(engine, tmp_path) == 3
        assert import_legacy(engine, tmp_path) == 0, "once"
        (resumed,) = RolloutStore(engine).active()
        assert (resumed.id, resumed.step_index, resumed.window) == (old.id, 1, 1)
        experiments, shadows = PolicyStore(engine).load()
        assert experiments["fraud"].split().salt == experiment.id  # customers keep their arm
        assert shadows["credit"].percent == 20.0
    finally:
        engine.dispose()


def test_replica_windows_add_up_exactly_to_one_window_of_all_the_traffic() -> None:
    rng = np.random.default_rng(7)
    whole = StepWindow(4)
    parts = [StepWindow(4) for _ in range(3)]
    for i in range(600):
        variant = "canary" if i % 5 == 0 else "stable"
        ok = rng.random() > 0.02
        latency, scores = float(rng.gamma(4, 2.0)), rng.beta(2, 8, 3).tolist()
        for w in (whole, parts[i % 3]):
            w.side(variant).record_batch(3, ok=ok, latency_ms=latency, scores=scores if ok else ())
    published = [
        Published(f"gw-{i}", f"gw-{i}/x", StepWindow.from_json(4, p.to_json())) for i, p in enumerate(parts)
    ]
    stale = Published("gw-9", "gw-9/x", StepWindow(3))  # another window's row is left out
    stale.window.canary.record_batch(100, ok=False, latency_ms=1.0)
    # the leader (gw-0) sums the others' published rows and its own live window, not its own row
    merged, replicas = merge_windows(4, [*published, stale], parts[0], "gw-0/x", "gw-0")
    assert replicas == 3
    for side in ("stable", "canary"):
        got, want = merged.side(side).to_dict(), whole.side(side).to_dict()
        assert got.pop("score_sum") == pytest.approx(want.pop("score_sum"), rel=1e-12)  # (float sums)
        assert got == want  # every count and histogram bucket exactly
    limits = Thresholds(max_p99_latency_ms=1e6, max_p99_latency_ratio=1e6)
    assert analyze(merged.stable, merged.canary, limits, 50) == analyze(
        whole.stable, whole.canary, limits, 50
    )
    idle = StepWindow(4)  # a replica that routed nothing is not counted as contributing
    assert merge_windows(4, [Published("gw-5", "gw-5/x", idle)], None, "gw-0/x", "gw-0")[1] == 0
