"""The rollout controller's model checks, without servers: each variant's requests counted on its own
reference profile by every replica, merged by the leader, and judged by default limits.

A candidate whose training data had ``debt_service_coverage`` in percent is rolled back with a
reason naming the feature; a candidate retrained on a shifted population (its reference matches
the live traffic, stable's does not) advances although its scores differ from stable's far beyond
the score PSI limit, while one scoring unlike stable on a population that has not moved is still
rolled back; a candidate without a reference profile falls back to that score comparison.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import polars as pl
from sqlalchemy import Engine

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.gateway.analysis import Thresholds, VariantWindow
from finpredict.gateway.catalog import Catalog
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.inputs import ProfileColumns
from finpredict.gateway.live import LiveRollouts
from finpredict.gateway.rollout import Decision, Rollout, RolloutState, RolloutStore
from finpredict.gateway.state.db import create_state_engine, migrate, sqlite_url
from finpredict.gateway.state.lease import Lease, LeaseKeeper
from finpredict.gateway.state.windows import WindowStore
from finpredict.gateway.stats.skew import SCORE_COLUMN

SECTORS = ["retail", "manufacturing", "services", "transport"]
THRESHOLD = 0.3
Rows = list[Mapping[str, types_pb2.FeatureValue]]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Population:
    """Applications and the scores each version gives them."""

    dscr: npt.NDArray[np.float64]
    utilization: npt.NDArray[np.float64]
    sector: list[str]

    @classmethod
    def draw(cls, rng: np.random.Generator, n: int, *, recession: bool = False) -> Population:
        utilization = rng.beta(5, 3, n) if recession else rng.beta(2, 5, n)
        sector = [SECTORS[i] for i in rng.integers(0, len(SECTORS), n)]
        return cls(rng.lognormal(np.log(1.4), 0.3, n), utilization, sector)

    def frame(self, scores: npt.NDArray[np.float64], *, dscr_factor: float = 1.0) -> pl.DataFrame:
        return pl.DataFrame(
            {
                "debt_service_coverage": self.dscr * dscr_factor,
                "credit_utilization": self.utilization,
                "sector": self.sector,
                SCORE_COLUMN: scores,
            }
        )

    def rows(self) -> Rows:
        fv = types_pb2.FeatureValue
        return [
            {
                "debt_service_coverage": fv(number=d),
                "credit_utilization": fv(number=u),
                "sector": fv(category=s),
            }
            for d, u, s in zip(self.dscr.tolist(), self.utilization.tolist(), self.sector, strict=True)
        ]


def _profile(frame: pl.DataFrame) -> ProfileColumns:
    return ProfileColumns(drift_core.Profile.fit(frame, n_bins=10, allow_copy=True))


def _engine(tmp_path: Path) -> Engine:
    engine = create_state_engine(sqlite_url(tmp_path / "gateway.db"))
    migrate(engine)
    return engine


async def _leader(engine: Engine, clock: Clock) -> RolloutController:
    keeper = LeaseKeeper(Lease(engine, "gw-a", 60.0, clock=clock))  # held through every analysis here
    await keeper.step()
    assert keeper.fence is not None
    store = WindowStore(engine, replica="gw-a", source=f"gw-a/{uuid.uuid4().hex[:6]}", clock=clock)
    # the catalog is never called: no rollout here reaches 100 %
    return RolloutController(RolloutStore(engine), store, keeper, cast(Catalog, None), clock=clock)


def _start(engine: Engine, clock: Clock) -> Rollout:
    """A rollout with the default limits (only the latency SLO set aside: nothing here is timed)."""
    rollout = Rollout(
        "credit",
        1,
        2,
        steps=[10.0, 50.0, 100.0],
        analysis_interval_s=1.0,
        min_requests_per_step=100,
        thresholds=Thresholds(max_p99_latency_ms=10_000, max_p99_latency_ratio=100),
        started_at=clock.now,
    )
    RolloutStore(engine).create(rollout)
    return rollout


def _route(
    live: LiveRollouts,
    rollout: Rollout,
    population: Population,
    scores: Mapping[str, npt.NDArray[np.float64]],
    columns: Mapping[str, ProfileColumns | None],
) -> int:
    """Routes each application by the rollout's split and records the variants' batches as the
    request path does (the inputs with their version's profile); returns the canary's count."""
    split = live.split(rollout)
    rows = population.rows()
    picked: dict[str, list[int]] = {"stable": [], "canary": []}
    for i in range(len(rows)):
        picked[split.assign(uuid.uuid4().hex).name].append(i)
    for variant, idx in picked.items():
        live.record_batch(
            rollout.id,
            variant,
            len(idx),
            ok=True,
            latency_ms=5.0,
            scores=scores[variant][idx].tolist(),
            threshold=THRESHOLD,
            inputs=[rows[i] for i in idx],
            columns=columns[variant],
        )
    return len(picked["canary"])


async def _analyse(engine: Engine, clock: Clock, leader: RolloutController, rollout: Rollout) -> Rollout:
    clock.now += 1.5
    await leader.tick()
    stored = RolloutStore(engine).get(rollout.id)
    assert stored is not None
    return stored


def _explain(decisions: list[Decision]) -> list[tuple[str, str]]:
    return [(d.verdict, d.reason) for d in decisions]


async def test_a_feature_in_other_units_rolls_back_naming_it_after_merging_both_replicas(
    tmp_path: Path,
) -> None:
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(11)
    training = Population.draw(rng, 5_000)
    scores = rng.beta(2, 6, 5_000)
    stable_ref = _profile(training.frame(scores))
    broken_ref = _profile(training.frame(scores, dscr_factor=100.0))  # its feed sent 125 for 1.25
    rollout = _start(engine, clock)
    leader = await _leader(engine, clock)
    leader.live.apply(RolloutStore(engine).active())
    other = LiveRollouts()  # a second replica: it publishes, the leader merges
    other.apply(RolloutStore(engine).active())
    columns = {"stable": stable_ref, "canary": broken_ref}

    live = Population.draw(rng, 2_000)
    same = {"stable": rng.beta(2, 6, 2_000), "canary": rng.beta(2, 6, 2_000)}  # scores alone look fine
    canary = _route(leader.live, rollout, live, same, columns)
    stored = await _analyse(engine, clock, leader, rollout)
    assert stored.state is RolloutState.PROGRESSING, _explain(stored.decisions)
    assert stored.decisions[-1].verdict == "wait"  # no pass before the checks have the rows to judge
    assert "not enough canary rows for the model checks" in stored.decisions[-1].reason

    live = Population.draw(rng, 6_000)
    same = {"stable": rng.beta(2, 6, 6_000), "canary": rng.beta(2, 6, 6_000)}
    canary += _route(other, rollout, live, same, columns)
    await other.count_inputs()
    WindowStore(engine, replica="gw-b", source="gw-b/1", clock=clock).publish(other.unpublished())
    stored = await _analyse(engine, clock, leader, rollout)
    assert stored.state is RolloutState.ROLLED_BACK, _explain(stored.decisions)
    decision = stored.decisions[-1]
    assert decision.verdict == "rollback"
    assert decision.reason.startswith("training/serving skew in debt_service_coverage"), decision.reason
    assert decision.replicas == 2
    skew = decision.statistics["skew"]
    assert skew["worst"]["name"] == "debt_service_coverage"
    assert skew["rows"] == canary  # every scored canary request of both replicas, counted once
    assert decision.statistics["model_checks"]["mode"] == "reference"
    assert set(stored.inputs) == {"stable", "canary"}  # the closed window's counts are kept


async def test_a_model_retrained_on_the_shifted_population_advances_with_default_limits(
    tmp_path: Path,
) -> None:
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(12)
    before, after = Population.draw(rng, 5_000), Population.draw(rng, 5_000, recession=True)
    stable_ref = _profile(before.frame(rng.beta(2, 6, 5_000)))
    retrained_ref = _profile(after.frame(rng.beta(3, 3, 5_000)))
    rollout = _start(engine, clock)
    leader = await _leader(engine, clock)
    leader.live.apply(RolloutStore(engine).active())

    live = Population.draw(rng, 8_000, recession=True)
    # Stable's scores moved with the population; the retrained model scores as it did in training.
    scores = {"stable": rng.beta(2, 5, 8_000), "canary": rng.beta(3, 3, 8_000)}
    _route(leader.live, rollout, live, scores, {"stable": stable_ref, "canary": retrained_ref})
    stored = await _analyse(engine, clock, leader, rollout)
    decision = stored.decisions[-1]
    assert (stored.state, stored.step_index) == (RolloutState.PROGRESSING, 1), _explain(stored.decisions)
    assert decision.verdict == "advance"
    assert decision.metrics["score_psi"] > Thresholds().max_score_psi  # reported, no longer gating
    stats = decision.statistics
    assert stats["model_checks"]["mode"] == "reference"
    assert stats["skew"]["judged"]
    assert not stats["skew"]["skewed"]
    assert stats["consistency"]["judged"]
    assert stats["consistency"]["consistent"]
    shifted = {f["name"]: f for f in stats["skew"]["features"]}["credit_utilization"]
    assert shifted["stable_psi"] > 0.25 > shifted["psi"]  # stable's own reference no longer fits
    assert stats["model_checks"]["score_drift_gates"] is False
    assert stats["model_checks"]["population_shift"].startswith("credit_utilization PSI")


async def test_scores_unlike_stables_on_an_unshifted_population_still_roll_back(tmp_path: Path) -> None:
    """A candidate true to its own profile (trained on another base rate) scoring unlike stable on
    traffic that still fits stable's profile: no population shift explains it."""
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(15)
    training = Population.draw(rng, 5_000)
    stable_ref = _profile(training.frame(rng.beta(2, 6, 5_000)))
    other_rate = _profile(training.frame(rng.beta(6, 2, 5_000)))
    rollout = _start(engine, clock)
    leader = await _leader(engine, clock)
    leader.live.apply(RolloutStore(engine).active())
    live = Population.draw(rng, 8_000)
    scores = {"stable": rng.beta(2, 6, 8_000), "canary": rng.beta(6, 2, 8_000)}
    _route(leader.live, rollout, live, scores, {"stable": stable_ref, "canary": other_rate})
    stored = await _analyse(engine, clock, leader, rollout)
    decision = stored.decisions[-1]
    assert stored.state is RolloutState.ROLLED_BACK, _explain(stored.decisions)
    assert decision.reason.startswith("score distribution drifted from stable"), decision.reason
    assert "no population shift" in decision.reason
    stats = decision.statistics
    assert stats["skew"]["judged"]
    assert not stats["skew"]["skewed"]
    assert stats["consistency"]["consistent"]
    assert stats["model_checks"]["score_drift_gates"] is True


async def test_without_a_reference_profile_the_score_comparison_with_stable_decides(tmp_path: Path) -> None:
    engine, clock, rng = _engine(tmp_path), Clock(), np.random.default_rng(13)
    rollout = _start(engine, clock)
    leader = await _leader(engine, clock)
    leader.live.apply(RolloutStore(engine).active())
    live = Population.draw(rng, 3_000)
    scores = {"stable": rng.beta(2, 6, 3_000), "canary": rng.beta(4, 4, 3_000)}
    _route(leader.live, rollout, live, scores, {"stable": None, "canary": None})
    stored = await _analyse(engine, clock, leader, rollout)
    decision = stored.decisions[-1]
    assert stored.state is RolloutState.ROLLED_BACK, _explain(stored.decisions)
    assert decision.reason.startswith("score distribution drifted from stable"), decision.reason
    assert decision.statistics["model_checks"]["mode"] == "fallback"
    assert decision.statistics["skew"] is None


def test_counted_inputs_travel_with_the_window_and_merge() -> None:
    rng = np.random.default_rng(14)
    population = Population.draw(rng, 300)
    columns = _profile(population.frame(rng.beta(2, 6, 300)))
    a, b = VariantWindow(), VariantWindow()
    a.add_inputs(columns.count(population.rows()[:100], rng.beta(2, 6, 100).tolist()))
    b.add_inputs(columns.count(population.rows()[100:], rng.beta(2, 6, 200).tolist()))
    a.merge(VariantWindow.from_dict(b.to_dict()))
    assert a.inputs is not None
    assert a.inputs.n_rows == 300
    assert a.inputs.report()["sector"].psi < 0.1
    assert VariantWindow.from_dict(VariantWindow().to_dict()).inputs is None
