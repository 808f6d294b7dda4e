"""Expected calibration error and the reliability table: hand-computed cases, bin edges, degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from finpredict.metrics import calibration, expected_calibration_error


@pytest.mark.parametrize(
    ("y", "p", "expected"),
    [
        ([0] * 19 + [1] + [1] * 19 + [0], [0.05] * 20 + [0.95] * 20, 0.0),  # calibrated bins
        ([1] * 19 + [0] + [0] * 19 + [1], [0.05] * 20 + [0.95] * 20, 0.9),  # overconfident
        ([0, 1], [0.2, 0.6], 0.3),  # (|0 - 0.2| + |1 - 0.6|) / 2
        ([1, 0], [1.0, 0.95], 0.475),  # 1.0 falls in the last bin: |0.5 - 0.975|
        ([0, 1], [0.1, 0.19], 0.355),  # 0.1 opens bin 1: |0.5 - 0.145|
        ([0, 1], [0.0999, 0.1], 0.49995),  # ... and 0.0999 is still bin 0: (0.0999 + 0.9) / 2
        ([1, 1, 0], [0.0, 0.0, 0.0], 2 / 3),  # one bin, never predicted a default
    ],
)
def test_ece_hand_computed(y: list[int], p: list[float], expected: float) -> None:
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)


def test_ece_without_rows_is_nan() -> None:
    assert math.isnan(expected_calibration_error([], []))


def test_ece_matches_an_explicit_loop() -> None:
    rng = np.random.default_rng(11)
    y = (rng.random(3000) < 0.15).astype(int)
    p = np.round(np.clip(0.15 + 0.3 * y + rng.normal(0, 0.2, 3000), 0, 1), 2)
    expected = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        in_bin = [(yy, pp) for yy, pp in zip(y, p, strict=True) if lo <= pp < hi or (b == 9 and pp == 1.0)]
        if in_bin:
            ys, ps = zip(*in_bin, strict=True)
            expected += len(in_bin) / len(p) * abs(sum(ys) / len(ys) - sum(ps) / len(ps))
    assert expected_calibration_error(y, p) == pytest.approx(expected, abs=1e-12)
    assert expected_calibration_error(y.astype(bool), p) == pytest.approx(expected, abs=1e-12)


def test_reliability_table() -> None:
    cal = calibration([0, 1, 1, 0], [0.05, 0.15, 0.95, 1.0], n_bins=10)
    np.testing.assert_allclose(cal.bin_lower, np.arange(10) / 10)
    np.testing.assert_allclose(cal.bin_upper, np.arange(1, 11) / 10)
    assert cal.count.tolist() == [1, 1, 0, 0, 0, 0, 0, 0, 0, 2]
    assert cal.mean_predicted[9] == pytest.approx(0.975)
    assert cal.observed_rate[9] == pytest.approx(0.5)
    assert np.isnan(cal.mean_predicted[2])  # an empty bin
    assert np.isnan(cal.observed_rate[2])
    assert cal.ece == pytest.approx((0.05 + 0.85 + 2 * 0.475) / 4)
