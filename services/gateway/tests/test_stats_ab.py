"""A/B experiments: per-arm intervals that cover the truth, effects, the stopping recommendation."""

from __future__ import annotations

import numpy as np
import pytest

from finpredict.gateway.stats.ab import compare_arms
from finpredict.gateway.stats.counts import ArmCounts, Stratum

THRESHOLD = 0.2


def _arm(n: int, rng: np.random.Generator, *, odds: float = 1.0, errors: int = 0) -> tuple[ArmCounts, float]:
    """An arm whose served scores have ``odds`` times the true odds; returns it with its true
    default rate among approved (from a large draw of the same arm)."""
    true_p = rng.beta(1.5, 10, n)
    served = true_p * odds / (1 - true_p + true_p * odds)
    y = rng.random(n) < true_p
    arm = ArmCounts()
    arm.add_requests(requests=n + errors, errors=errors, scores=served, threshold=THRESHOLD)
    arm.add_outcomes(served, y, threshold=THRESHOLD)
    big = rng.beta(1.5, 10, 2_000_000)
    ok = big * odds / (1 - big + big * odds) < THRESHOLD
    return arm, float(big[ok].mean())


def _experiment(n: int, odds_b: float, seed: int = 1) -> tuple[list[Stratum], float, float]:
    rng = np.random.default_rng(seed)
    a, rate_a = _arm(n, rng)
    b, rate_b = _arm(n, rng, odds=odds_b)
    return [Stratum({"a": 0.5, "b": 0.5}, {"a": a, "b": b})], rate_a, rate_b


def test_per_arm_default_rates_and_their_difference_cover_the_truth() -> None:
    strata, rate_a, rate_b = _experiment(20_000, odds_b=0.5)
    exp = compare_arms(strata, "a", "b")
    arm_a, arm_b = exp.arms
    assert arm_a.default_rate.lower <= rate_a <= arm_a.default_rate.upper
    assert arm_b.default_rate.lower <= rate_b <= arm_b.default_rate.upper
    effect = next(e for e in exp.effects if e.metric == "default_rate")
    assert effect.lower <= rate_b - rate_a <= effect.upper
    assert effect.alpha_spent == pytest.approx(0.05 / 4)
    assert exp.recommendation == "stop_a_better"  # b's halved odds approve riskier applicants
    assert "default_rate differs" in exp.reason


@pytest.mark.parametrize(
    ("n", "odds_b", "primary", "equivalence", "recommendation"),
    [
        (300, 0.8, "default_rate", None, "continue"),  # too little data to tell
        (20_000, 1.0, "auc", {"auc": 0.05}, "stop_equivalent"),
        (20_000, 0.5, "approval_rate", None, "stop_b_better"),  # b approves more
    ],
)
def test_recommendation(
    n: int, odds_b: float, primary: str, equivalence: dict[str, float] | None, recommendation: str
) -> None:
    strata, _, _ = _experiment(n, odds_b)
    kwargs = {"equivalence": equivalence} if equivalence else {}
    assert compare_arms(strata, "a", "b", primary=primary, **kwargs).recommendation == recommendation  # type: ignore[arg-type]


def test_a_broken_split_halts() -> None:
    strata, _, _ = _experiment(5000, 1.0)
    strata[0].arms["b"].requests //= 2
    exp = compare_arms(strata, "a", "b")
    assert exp.recommendation == "halt"
    assert exp.srm.mismatch
    assert exp.to_dict()["recommendation"] == "halt"
