"""Label-free expected performance (CBPE) and the calibration checks."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finpredict import metrics
from finpredict.gateway.stats.counts import MIDPOINTS, ArmCounts, bucket_of, histogram
from finpredict.gateway.stats.estimate import calibration_check, expected_performance


def _scores(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = MIDPOINTS[bucket_of(rng.beta(1.5, 10, n))]
    return p, rng.random(n) < p


def test_expected_auc_and_default_rate_of_calibrated_scores_match_the_labels() -> None:
    p, y = _scores(200_000, 1)
    e = expected_performance(histogram(p))
    assert e.n == p.size
    assert e.default_rate == pytest.approx(float(y.mean()), abs=0.003)
    assert e.auc == pytest.approx(metrics.auc_roc(y, p), abs=0.005)


def test_scores_pushed_toward_one_half_announce_a_low_auc() -> None:
    p, _ = _scores(50_000, 2)
    good = expected_performance(histogram(p)).auc
    squeezed = expected_performance(histogram(0.5 + (p - 0.5) * 0.3)).auc
    assert good - squeezed > 0.15


def test_no_rows_no_estimate() -> None:
    assert math.isnan(expected_performance(histogram([0.3])).auc)


def _arm(p: np.ndarray, y: np.ndarray) -> ArmCounts:
    arm = ArmCounts()
    arm.add_outcomes(p, y, threshold=0.2)
    return arm


@pytest.mark.parametrize(
    ("transform", "miscalibrated", "ece_breach"),
    [
        (lambda p: p, False, False),
        (lambda p: p / (2 - p), True, False),  # halved odds: ECE ~0.04 but mean(y - p) ~ +0.04
        (lambda p: 0.5 + (p - 0.5) * 0.3, True, True),  # pushed toward 0.5
    ],
)
def test_calibration_check(transform: object, miscalibrated: bool, ece_breach: bool) -> None:
    p, y = _scores(20_000, 3)
    served = transform(p)  # type: ignore[operator]
    check = calibration_check(_arm(served, y))
    assert check.miscalibrated is miscalibrated
    assert check.ece_breach is ece_breach
    assert check.ece_lower <= check.ece
    assert check.ece == pytest.approx(metrics.expected_calibration_error(y, MIDPOINTS[bucket_of(served)]))


def test_calibration_without_labels() -> None:
    check = calibration_check(ArmCounts())
    assert not check.miscalibrated
    assert check.labeled == 0
