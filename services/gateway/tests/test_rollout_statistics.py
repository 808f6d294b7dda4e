"""The rollout's statistics without servers: approved counts in the windows, the per-step counts kept
in the shared state across a change of leader, the statistics recorded in each analysis decision
and shown by ``finpredict rollout status``, and a sample-ratio mismatch (the router's test hook
sending twice the canary weight) halting the rollout with its alert metric."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import cast

import numpy as np
from rich.console import Console
from sqlalchemy import Engine

from finpredict.common.rollout_statistics import decision_statistics
from finpredict.gateway import metrics
from finpredict.gateway.analysis import Thresholds, VariantWindow
from finpredict.gateway.catalog import Catalog
from finpredict.gateway.cli.render import render_rollout
from finpredict.gateway.config import GatewaySettings
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.rollout import Rollout, RolloutState, RolloutStore
from finpredict.gateway.rollout_proto import rollout_to_proto
from finpredict.gateway.state.db import create_state_engine, migrate, sqlite_url
from finpredict.gateway.state.lease import Lease, LeaseKeeper
from finpredict.gateway.state.windows import WindowStore
from finpredict.gateway.stats import ArmCounts, Stratum

LEASE_S = 2.0
THRESHOLD = 0.3


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


def _engine(tmp_path: Path) -> Engine:
    engine = create_state_engine(sqlite_url(tmp_path / "gateway.db"))
    migrate(engine)
    return engine


async def _controller(
    engine: Engine, replica: str, clock: Clock, *, canary_weight_factor: float = 1.0
) -> RolloutController:
    """A controller holding the lease (the catalog is never called: no rollout here reaches 100 %)."""
    keeper = LeaseKeeper(Lease(engine, replica, LEASE_S, clock=clock))
    await keeper.step()
    assert keeper.fence is not None, f"{replica} did not get the lease"
    return RolloutController(
        RolloutStore(engine),
        WindowStore(engine, replica=replica, source=f"{replica}/{uuid.uuid4().hex[:6]}", clock=clock),
        keeper,
        cast(Catalog, None),
        clock=clock,
        canary_weight_factor=canary_weight_factor,
    )


def _rollout(engine: Engine, clock: Clock, steps: list[float]) -> Rollout:
    rollout = Rollout(
        "credit",
        1,
        2,
        steps=steps,
        analysis_interval_s=1.0,
        min_requests_per_step=100,
        thresholds=Thresholds(max_p99_latency_ms=10_000, max_p99_latency_ratio=100),
        started_at=clock.now,
    )
    RolloutStore(engine).create(rollout)
    return rollout


def _route(controller: RolloutController, rollout: Rollout, n: int, rng: np.random.Generator) -> None:
    """``n`` requests of fresh customers, routed by the controller's split and recorded where served
    (the same score distribution on both variants: a candidate identical to stable)."""
    split = controller.split(rollout)
    for entity in (uuid.uuid4().hex for _ in range(n)):
        variant = split.assign(entity).name
        score = float(rng.beta(2, 6))
        controller.record(rollout.id, variant, ok=True, latency_ms=5.0, score=score, threshold=THRESHOLD)


def test_windows_count_approvals_and_carry_them_through_merge_and_json() -> None:
    w = VariantWindow()
    w.record_batch(4, ok=True, latency_ms=3.0, scores=[0.1, 0.29, 0.3, 0.9], threshold=THRESHOLD)
    w.record_batch(2, ok=True, latency_ms=3.0, scores=[0.05, 0.5])  # no threshold: no decisions counted
    w.record_batch(1, ok=False, latency_ms=3.0)
    assert (w.requests, w.errors, w.scored, w.approved) == (7, 1, 6, 2)
    other = VariantWindow()
    other.record(ok=True, latency_ms=1.0, score=0.2, threshold=THRESHOLD)
    w.merge(other)
    back = VariantWindow.from_dict(w.to_dict())
    assert (back.requests, back.scored, back.approved) == (8, 7, 3)
    old = w.to_dict()
    del old["approved"]  # a window published by a replica that predates the counter
    assert VariantWindow.from_dict(old).approved == 0


def test_strata_round_trip_through_json() -> None:
    arm = ArmCounts()
    arm.add_requests(requests=5, errors=1, scores=[0.1, 0.2, 0.6, 0.95], threshold=THRESHOLD)
    arm.add_outcomes([0.1, 0.6], [False, True], THRESHOLD)
    stratum = Stratum.canary(0.05, canary=arm)
    back = Stratum.from_dict(stratum.to_dict())
    assert back.weights == {"stable": 0.95, "canary": 0.05}
    got = back.arms["canary"]
    assert (got.requests, got.errors, got.approved, got.labeled, got.labeled_approved) == (5, 1, 2, 2, 1)
    assert np.array_equal(got.score_counts, arm.score_counts)
    assert np.array_equal(got.defaulted, arm.defaulted)


async def test_counts_since_the_start_survive_a_change_of_leader_and_decisions_record_statistics(
    tmp_path: Path,
) -> None:
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(7)
    rollout = _rollout(engine, clock, [10.0, 50.0, 75.0, 100.0])
    a = await _controller(engine, "gw-a", clock)
    a.live.apply(RolloutStore(engine).active())
    _route(a, rollout, 2_000, rng)
    clock.now += 1.5
    await a.tick()
    stored = RolloutStore(engine).get(rollout.id)
    assert stored is not None
    assert (stored.state, stored.step_index) == (RolloutState.PROGRESSING, 1), stored.decisions
    first = [Stratum.from_dict(s) for s in stored.strata]
    assert [s.weights["canary"] for s in first] == [0.1]
    served = first[0].arms["stable"].requests + first[0].arms["canary"].requests
    assert served == 2_000
    assert 0 < first[0].arms["canary"].approved < first[0].arms["canary"].requests
    decision = stored.decisions[-1]
    assert decision.verdict == "advance"
    assert decision.statistics["action"] == "pass"
    assert decision.statistics["srm"]["mismatch"] is False
    tests = {t["metric"]: t for t in decision.statistics["tests"]}
    assert tests["error_rate"]["n_canary"] == first[0].arms["canary"].requests
    assert tests["error_rate"]["alpha_spent"] > 0

    # gw-a is gone; gw-b takes the lease over and carries on from the stored counts
    clock.now += LEASE_S + 0.1
    b = await _controller(engine, "gw-b", clock)
    b.live.apply(RolloutStore(engine).active())
    current = b.live.active("credit")
    assert current is not None
    _route(b, current, 1_000, rng)
    clock.now += 1.5
    await b.tick()
    stored = RolloutStore(engine).get(rollout.id)
    assert stored is not None
    assert (stored.step_index, stored.decisions[-1].replica) == (2, "gw-b"), stored.decisions
    strata = [Stratum.from_dict(s) for s in stored.strata]
    assert [s.weights["canary"] for s in strata] == [0.1, 0.5]
    assert strata[0].to_dict() == first[0].to_dict()
    assert sum(arm.requests for arm in strata[1].arms.values()) == 1_000
    srm = stored.decisions[-1].statistics["srm"]
    assert sum(srm["observed"].values()) == 3_000

    # `finpredict rollout status` shows the statistics of the last analysis
    console = Console(width=200, record=True)
    console.print(render_rollout(rollout_to_proto(stored)))
    shown = console.export_text()
    assert "statistics of the last analysis" in shown
    assert "error_rate" in shown
    assert "approval_rate" in shown
    assert "sample ratio: ok" in shown
    # ... and, next to each analysis decision, the figures and statistics that drove it
    assert "what drove it" in shown
    drove = decision_statistics(rollout_to_proto(stored).decisions[-1])
    for needle in (
        "1 replica merged",
        "window n canary/stable",
        "error_rate ",
        "margin ",
        "stat ",
        "SRM ok p ",
        "latency_slo ",
        "stable over the latency SLO",
        "alpha 0.05",
    ):
        assert needle in drove, drove


async def test_a_router_sending_twice_the_canary_weight_halts_on_sample_ratio_mismatch(
    tmp_path: Path,
) -> None:
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(11)
    rollout = _rollout(engine, clock, [1.0, 5.0, 100.0])
    controller = await _controller(engine, "gw-a", clock, canary_weight_factor=2.0)  # the test hook
    controller.live.apply(RolloutStore(engine).active())
    alerts_before = metrics.SAMPLE_RATIO_MISMATCH_TOTAL.labels("credit")._value.get()
    _route(controller, rollout, 20_000, rng)
    canary = controller.live.window(rollout.id)
    assert canary is not None
    assert 300 < canary.canary.requests < 500  # about 2 % instead of 1 %
    clock.now += 1.5
    await controller.tick()
    stored = RolloutStore(engine).get(rollout.id)
    assert stored is not None
    assert stored.state is RolloutState.PAUSED, stored.decisions
    decision = stored.decisions[-1]
    assert decision.verdict == "halt"
    assert "sample ratio mismatch" in decision.reason
    assert decision.statistics["action"] == "halt"
    assert decision.statistics["srm"]["mismatch"] is True
    assert metrics.SAMPLE_RATIO_MISMATCH_TOTAL.labels("credit")._value.get() == alerts_before + 1
    assert stored.weight == 1.0  # halted where it was: an operator resumes or aborts
    assert stored.strata == []  # the broken window's counts are not kept


async def test_the_test_hook_is_off_by_default_and_a_correct_split_is_not_halted(tmp_path: Path) -> None:
    assert GatewaySettings().test_hook_canary_weight_factor == 1.0
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(13)
    rollout = _rollout(engine, clock, [1.0, 5.0, 100.0])
    controller = await _controller(engine, "gw-a", clock)
    controller.live.apply(RolloutStore(engine).active())
    _route(controller, rollout, 20_000, rng)
    clock.now += 1.5
    await controller.tick()
    stored = RolloutStore(engine).get(rollout.id)
    assert stored is not None
    assert (stored.state, stored.decisions[-1].verdict) == (RolloutState.PROGRESSING, "advance")
    assert stored.decisions[-1].statistics["srm"]["mismatch"] is False
