"""Per-arm counts and canary-minus-stable effects: rates, AUC and its DeLong variance."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finpredict import metrics
from finpredict.gateway.analysis import SCORE_EDGES
from finpredict.gateway.stats.comparisons import auc_delong, default_rate, rate_difference
from finpredict.gateway.stats.counts import MIDPOINTS, SCORE_GRID, ArmCounts, bucket_of, histogram


def test_the_grid_is_the_gateways_score_grid() -> None:
    np.testing.assert_array_equal(SCORE_GRID, SCORE_EDGES)
    assert list(bucket_of([0.0, 0.0005, 0.001, 0.2, 0.9999, 1.0])) == [0, 0, 1, 200, 999, 999]


@pytest.mark.parametrize(
    ("x_c", "n_c", "x_s", "n_s", "diff", "var"),
    [
        (10, 100, 50, 1000, 0.05, (11 / 102) * (91 / 102) / 100 + (51 / 1002) * (951 / 1002) / 1000),
        (0, 100, 0, 1000, 0.0, (1 / 102) * (101 / 102) / 100 + (1 / 1002) * (1001 / 1002) / 1000),
    ],
)
def test_rate_difference_smooths_the_variance(
    x_c: int, n_c: int, x_s: int, n_s: int, diff: float, var: float
) -> None:
    assert rate_difference(x_c, n_c, x_s, n_s) == pytest.approx((diff, var))


def test_rate_difference_without_rows_is_nan() -> None:
    assert all(math.isnan(v) for v in rate_difference(0, 0, 1, 10))


def _labelled(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = MIDPOINTS[bucket_of(rng.beta(2, 8, n))]  # scores on the grid, so bucketing is exact
    return p, rng.random(n) < p


def _brute_delong(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    pos, neg = p[y], p[~y]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    v10, v01 = psi.mean(axis=1), psi.mean(axis=0)
    return float(psi.mean()), float(v10.var(ddof=1) / pos.size + v01.var(ddof=1) / neg.size)


@pytest.mark.parametrize(("n", "seed"), [(300, 1), (1500, 2)])
def test_auc_and_delong_variance_match_the_pairwise_definition(n: int, seed: int) -> None:
    p, y = _labelled(n, seed)
    got = auc_delong(histogram(p[y]), histogram(p[~y]))
    auc, var = _brute_delong(p, y)
    assert got.auc == pytest.approx(metrics.auc_roc(y, p), abs=1e-12)
    assert got.auc == pytest.approx(auc, abs=1e-12)
    assert got.variance == pytest.approx(var, rel=1e-9)


def test_auc_needs_both_classes() -> None:
    assert math.isnan(auc_delong(histogram([0.1, 0.2]), histogram([])).auc)


def test_arm_counts_merge_and_default_rate_among_approved() -> None:
    p, y = _labelled(2000, 3)
    whole, a, b = ArmCounts(), ArmCounts(), ArmCounts()
    for arm, rows in ((whole, slice(None)), (a, slice(0, 700)), (b, slice(700, None))):
        arm.add_requests(requests=len(p[rows]) + 1, errors=1, scores=p[rows], threshold=0.2)
        arm.add_outcomes(p[rows], y[rows], threshold=0.2)
    a.merge(b)
    assert a.requests == whole.requests + 1
    assert a.approved == whole.approved
    np.testing.assert_array_equal(a.defaulted, whole.defaulted)
    ok = p < 0.2
    assert whole.labeled_approved == ok.sum()
    assert whole.labeled_approved_defaults == (ok & y).sum()
    assert whole.approved == int(metrics.approved(p, 0.2).sum())
    d, _ = default_rate(whole, ArmCounts())
    assert math.isnan(d)  # no approved labelled rows on the other side
