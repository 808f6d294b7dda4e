"""The normal-mixture sequential test: its boundary, its decisions, and its guarantee under peeking."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finpredict.gateway.stats.sequential import (
    Evidence,
    confidence_sequence,
    decide,
    log_mixture_lr,
    radius,
)


@pytest.mark.parametrize(
    ("v", "alpha", "rho", "expected"),
    [
        (100.0, 0.05, 1.0, math.sqrt(101 * math.log(101 / 0.0025))),
        (1e4, 0.01, 2500.0, math.sqrt(12500 * math.log(12500 / (2500 * 1e-4)))),
        (0.0, 0.05, 4.0, math.sqrt(4 * math.log(1 / 0.0025))),
    ],
)
def test_mixture_radius_is_howard_et_al_eq_14(v: float, alpha: float, rho: float, expected: float) -> None:
    assert radius(v, alpha, rho) == pytest.approx(expected)


def test_rejecting_at_the_radius_is_rejecting_at_one_over_alpha() -> None:
    v, alpha, rho = 400.0, 0.05, 100.0
    r = radius(v, alpha, rho)
    assert log_mixture_lr(r, v, rho) == pytest.approx(math.log(1 / alpha))


def test_fixed_radius_is_the_z_quantile() -> None:
    assert radius(100.0, 0.05, 1.0, "fixed") == pytest.approx(1.959964 * 10, rel=1e-6)


@pytest.mark.parametrize(
    ("estimates", "s", "v"),
    [
        ([(0.1, 0.01)], 10.0, 100.0),
        ([(0.1, 0.01), (0.3, 0.04)], 10.0 + 7.5, 125.0),
        ([(0.1, 0.0), (0.2, math.nan), (math.nan, 1.0)], 0.0, 0.0),  # strata without information
    ],
)
def test_evidence_is_inverse_variance_weighted(
    estimates: list[tuple[float, float]], s: float, v: float
) -> None:
    e = Evidence.of(estimates)
    assert (e.s, e.v) == pytest.approx((s, v))


CASES = [
    # (estimate, variance, margin, worse, reject)
    (0.05, 1e-4, 0.0, "higher", True),
    (0.05, 1e-4, 0.0, "lower", False),
    (-0.05, 1e-4, 0.0, "lower", True),
    (0.05, 1e-4, 0.04, "higher", False),  # within the margin's reach
    (0.05, 1e-4, 0.0, "either", True),
    (-0.05, 1e-4, 0.0, "either", True),
    (0.005, 1e-4, 0.0, "either", False),
    (0.05, 1e-2, 0.0, "higher", False),  # too noisy
]


@pytest.mark.parametrize(("est", "var", "margin", "worse", "reject"), CASES)
def test_decisions(est: float, var: float, margin: float, worse: str, reject: bool) -> None:
    d = decide(
        "m", Evidence.of([(est, var)]), margin=margin, worse=worse,  # type: ignore[arg-type]
        alpha=0.05, tau=0.02, n_stable=10, n_canary=5, method="t",
    )  # fmt: skip
    assert d.reject is reject
    assert d.lower < est < d.upper
    assert (d.p_value <= 0.05) is reject  # the p-value and the sequence agree
    if worse != "lower":
        assert (d.statistic >= d.bound) is (reject and est > 0)


def test_no_data_never_rejects_and_has_an_unbounded_sequence() -> None:
    d = decide(
        "m", Evidence(), margin=0, worse="either", alpha=0.05, tau=0.1, n_stable=0, n_canary=0, method="t"
    )
    assert not d.reject
    assert not d.informative
    assert d.p_value == 1.0
    assert d.to_dict()["lower"] is None
    assert confidence_sequence(Evidence(), 0.05, 0.1) == (-math.inf, math.inf)


def _crossing_rate(boundary: str, looks: int, paths: int = 4000, alpha: float = 0.05) -> float:
    """Share of null random walks (unit variance per step) whose running test ever rejects."""
    rng = np.random.default_rng(3)
    s = np.cumsum(rng.standard_normal((paths, looks)), axis=1)
    v = np.arange(1, looks + 1, dtype=np.float64)
    bound = np.array([radius(float(x), alpha, 1 / 0.3**2, boundary) for x in v])  # type: ignore[arg-type]
    return float((np.abs(s) >= bound).any(axis=1).mean())


def test_peeking_at_every_look_keeps_the_mixture_below_alpha_and_not_the_fixed_test() -> None:
    mixture, fixed = _crossing_rate("mixture", 200), _crossing_rate("fixed", 200)
    assert mixture <= 0.05
    assert fixed > 0.2  # the naive re-test rejects a true null far more often than 5 %
