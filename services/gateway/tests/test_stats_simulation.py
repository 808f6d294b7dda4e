"""Acceptance: synthetic rollouts through the analysis code (no servers).

200 rollouts of a candidate identical to stable, analysed at every interval: at most alpha of
them may roll back. The bound: the count must not exceed the 99 % quantile of Bin(200, 0.05)
(a correct procedure fails this test with probability <= 1 %; ours is deterministic, seeded).
Every simulated request is a single-application call with a latency (the same distribution for
identical candidates), so the latency tests are part of the alpha claim. Broken candidates must
be caught (figures for all kinds: benchmarks/rollouts/bench_sequential.py).
"""

from __future__ import annotations

import math

from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.simulate import SimSettings, simulate


def binomial_quantile(n: int, p: float, q: float) -> int:
    """The smallest k with P(Bin(n, p) <= k) >= q."""
    total = 0.0
    for k in range(n + 1):
        total += math.comb(n, k) * p**k * (1 - p) ** (n - k)
        if total >= q:
            return k
    return n


def test_binomial_quantile() -> None:
    assert binomial_quantile(200, 0.05, 0.99) == 18


def test_identical_candidates_roll_back_at_most_alpha() -> None:
    result = simulate("identical", SimSettings(rollouts=200))
    assert int(result.stopped.sum()) <= binomial_quantile(200, 0.05, 0.99), result.checks
    assert not result.halted.any()
    # The label and latency tests were live in the later looks (a pass that tested nothing would
    # prove nothing).
    assert result.canary_labeled.min() >= StatLimits().min_labeled
    assert result.canary_calls.min() >= StatLimits().min_latency_calls


def test_a_candidate_trained_in_other_units_is_rolled_back_for_skew() -> None:
    result = simulate("unit_shift", SimSettings(rollouts=20))
    assert result.stopped.all()
    assert result.checks["skew"] == 20


def test_a_slower_candidate_is_rolled_back_by_the_latency_tests() -> None:
    result = simulate("slow", SimSettings(rollouts=20))
    assert result.stopped.all()
    assert not result.halted.any()
    assert set(result.checks) <= {"latency_slo", "latency_ratio"}, result.checks


def test_a_candidate_with_halved_odds_is_caught_by_its_labels() -> None:
    result = simulate("halved_odds", SimSettings(rollouts=20, requests_per_look=3000))
    assert result.stop_rate >= 0.8
    assert "calibration" in result.checks


def test_a_candidate_with_scores_pushed_toward_one_half_is_rolled_back_by_estimate_or_calibration() -> None:
    """Same ranking, miscalibrated toward 0.5 (its own profile agrees, so neither skew nor
    consistency sees it): the label-free estimate or the calibration check rolls every one back."""
    result = simulate("miscalibrated", SimSettings(rollouts=20))
    assert result.stopped.all()
    assert not result.halted.any()
    assert set(result.checks) <= {"estimate", "calibration"}, result.checks
