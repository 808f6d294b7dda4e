"""Gate metrics against independent computations (scikit-learn, explicit loops)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from finpredict.pipelines import metrics as m


@pytest.fixture
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    y = rng.random(3000) < 0.15
    p = np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, 3000), 0, 1)
    p = np.round(p, 2)  # many ties
    return y.astype(int), p


def test_auc_matches_sklearn_with_ties(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    assert m.auc_roc(y, p) == pytest.approx(roc_auc_score(y, p), abs=1e-12)


def test_auc_of_perfect_and_reversed_scores() -> None:
    y = np.array([0, 0, 1, 1])
    assert m.auc_roc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert m.auc_roc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    with pytest.raises(ValueError, match="both classes"):
        m.auc_roc(np.array([1, 1]), np.array([0.1, 0.2]))


def test_roc_curve_matches_sklearn(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    fpr, tpr, _ = m.roc_curve(y, p, max_points=10_000)
    sk_fpr, sk_tpr, _ = sk_roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_ece_matches_an_explicit_loop(scores: tuple[np.ndarray, np.ndarray]) -> None:
    y, p = scores
    expected = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        in_bin = [(yy, pp) for yy, pp in zip(y, p, strict=True) if lo <= pp < hi or (b == 9 and pp == 1.0)]
        if in_bin:
            ys, ps = zip(*in_bin, strict=True)
            expected += len(in_bin) / len(p) * abs(sum(ys) / len(ys) - sum(ps) / len(ps))
    cal = m.calibration(y, p)
    assert cal.ece == pytest.approx(expected, abs=1e-12)
    assert int(cal.count.sum()) == len(p)


def test_ece_is_zero_for_calibrated_bins_and_large_for_overconfidence() -> None:
    p = np.array([0.05] * 20 + [0.95] * 20)
    y = np.array([1] + [0] * 19 + [1] * 19 + [0])
    assert m.expected_calibration_error(y, p) == pytest.approx(0.0)
    assert m.expected_calibration_error(1 - y, p) == pytest.approx(0.9)


def test_demographic_parity_is_max_minus_min_approval_rate() -> None:
    p = np.array([0.1, 0.1, 0.3, 0.1, 0.3, 0.3, 0.1, 0.1, 0.1])
    g = np.array(["a", "a", "a", "b", "b", "b", "c", "c", "c"])
    rates = m.approval_rates(p, g, threshold=0.2)
    assert rates == {"a": pytest.approx(2 / 3), "b": pytest.approx(1 / 3), "c": 1.0}
    assert m.demographic_parity_difference(p, g, 0.2) == pytest.approx(2 / 3)
    # the gate depends on the threshold: at 0.5 everyone is approved
    assert m.demographic_parity_difference(p, g, 0.5) == 0.0


def test_confusion_counts_predicted_defaults_as_positives() -> None:
    y = np.array([1, 1, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.8, 0.1, 0.05])
    assert m.confusion(y, p, 0.5) == {"tp": 1, "fn": 1, "fp": 1, "tn": 2}
