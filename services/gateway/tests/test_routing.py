"""Sticky hash-based assignment: observed shares match weights; customers do not hop."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from finpredict.gateway.routing import Arm, RoutingError, Split, hash_point

N = 20_000
ENTITIES = [f"customer-{i:06d}" for i in range(N)]


def _binomial_99(n: int, p: float) -> tuple[float, float]:
    """Two-sided 99% normal-approximation interval for a binomial count."""
    sd = math.sqrt(n * p * (1 - p))
    return n * p - 2.576 * sd, n * p + 2.576 * sd


@pytest.mark.parametrize("percent", [0.5, 1.0, 5.0, 25.0, 50.0, 100.0])
def test_canary_share_is_within_the_binomial_interval(percent: float) -> None:
    split = Split.canary(stable_version=1, canary_version=2, canary_percent=percent, salt="rollout-7")
    counts = Counter(split.assign(e).name for e in ENTITIES)
    low, high = _binomial_99(N, percent / 100)
    assert low <= counts["canary"] <= high, (percent, counts)


def test_three_arm_experiment_shares() -> None:
    split = Split((Arm("a", 1, 50.0), Arm("b", 2, 30.0), Arm("c", 3, 20.0)), salt="exp-1")
    counts = Counter(split.assign(e).name for e in ENTITIES)
    for arm in split.arms:
        low, high = _binomial_99(N, arm.weight / 100)
        assert low <= counts[arm.name] <= high, (arm, counts)


def test_assignment_is_sticky_and_canary_only_grows_between_steps() -> None:
    steps = [Split.canary(1, 2, w, salt="rollout-7") for w in (1.0, 5.0, 25.0, 100.0)]
    for split in steps:
        assert [split.assign(e) for e in ENTITIES[:500]] == [split.assign(e) for e in ENTITIES[:500]]
    previous: set[str] = set()
    for split in steps:
        on_canary = {e for e in ENTITIES if split.assign(e).name == "canary"}
        assert previous <= on_canary, "a customer on the canary stays there when the weight grows"
        previous = on_canary
    assert len(previous) == N


def test_a_new_salt_reshuffles_the_canary() -> None:
    a = {e for e in ENTITIES if Split.canary(1, 2, 10.0, salt="r1").assign(e).name == "canary"}
    b = {e for e in ENTITIES if Split.canary(1, 2, 10.0, salt="r2").assign(e).name == "canary"}
    overlap = len(a & b) / len(a)
    assert 0.05 < overlap < 0.15, overlap  # independent draws overlap ~10%


def test_hash_points_are_uniform() -> None:
    points = [hash_point(e, "s") for e in ENTITIES]
    deciles = Counter(int(p * 10) for p in points)
    for d in range(10):
        low, high = _binomial_99(N, 0.1)
        assert low <= deciles[d] <= high, deciles


@pytest.mark.parametrize(
    ("arms", "message"),
    [
        ((), "at least one arm"),
        ((Arm("a", 1, 60.0), Arm("a", 2, 40.0)), "unique"),
        ((Arm("a", 1, 60.0), Arm("b", 2, 30.0)), "add up to 100"),
        ((Arm("a", 1, 120.0), Arm("b", 2, -20.0)), "outside [0, 100]"),
    ],
)
def test_invalid_splits_are_refused(arms: tuple[Arm, ...], message: str) -> None:
    with pytest.raises(RoutingError, match=message.replace("[", r"\[").replace("]", r"\]")):
        Split(arms)
