"""AUC-ROC and the ROC curve: hand-computed cases, ties, degenerate input, scikit-learn agreement."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from finpredict.metrics import auc_roc, roc_curve


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        ([0, 0, 1, 1], [0.1, 0.2, 0.8, 0.9], 1.0),  # perfect ranking
        ([0, 0, 1, 1], [0.9, 0.8, 0.2, 0.1], 0.0),  # reversed
        ([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8], 0.75),  # 3 of 4 (pos, neg) pairs ordered
        ([0, 1], [0.5, 0.5], 0.5),  # a tie counts half
        ([0, 0, 1, 1], [0.1, 0.5, 0.5, 0.9], 0.875),  # (1 + 0.5 + 1 + 1) / 4
        ([1, 0, 0], [0.2, 0.2, 0.1], 0.75),  # (0.5 + 1) / 2
        ([True, False, True], [0.7, 0.3, 0.3], 0.75),  # boolean labels; (1 + 0.5) / 2
        ([0, 1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3, 0.3], 0.5),  # all scores tied
    ],
)
def test_auc_hand_computed(y: list[int], p: list[float], expected: float) -> None:
    assert auc_roc(y, p) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(
    ("y", "p"),
    [
        ([], []),  # no rows
        ([1, 1], [0.1, 0.2]),  # positives only
        ([0, 0, 0], [0.1, 0.2, 0.3]),  # negatives only
    ],
)
def test_auc_without_both_classes_is_nan(y: list[int], p: list[float]) -> None:
    assert math.isnan(auc_roc(y, p))


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("decimals", [1, 2, 6])  # 1 decimal: ties everywhere
def test_auc_matches_sklearn(seed: int, decimals: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.random(2000) < 0.15
    p = np.round(np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, y.size), 0, 1), decimals)
    assert auc_roc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_does_not_depend_on_row_order() -> None:
    rng = np.random.default_rng(5)
    y = rng.random(500) < 0.3
    p = np.round(rng.random(500), 1)
    perm = rng.permutation(500)
    assert auc_roc(y[perm], p[perm]) == pytest.approx(auc_roc(y, p), abs=1e-12)


def test_roc_curve_matches_sklearn() -> None:
    rng = np.random.default_rng(11)
    y = rng.random(3000) < 0.15
    p = np.round(np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, 3000), 0, 1), 2)
    fpr, tpr, thr = roc_curve(y, p, max_points=10_000)
    sk_fpr, sk_tpr, sk_thr = sk_roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr[1:], sk_thr[1:])


def test_roc_curve_is_thinned_keeping_both_ends() -> None:
    rng = np.random.default_rng(3)
    y = rng.random(5000) < 0.5
    p = rng.random(5000)
    fpr, tpr, _ = roc_curve(y, p, max_points=50)
    assert len(fpr) <= 50
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)
