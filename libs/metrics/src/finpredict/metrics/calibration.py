"""Calibration: the reliability table over equal-width score bins and its expected calibration error."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Calibration:
    """Per bin: its bounds, row count, mean predicted probability and observed default rate
    (NaN for an empty bin); and the expected calibration error over all bins."""

    bin_lower: Arr
    bin_upper: Arr
    count: npt.NDArray[np.int64]
    mean_predicted: Arr
    observed_rate: Arr
    ece: float


def calibration(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> Calibration:
    """The reliability table of ``p`` against ``y`` over ``n_bins`` equal-width bins on [0, 1]
    (the last bin includes 1.0); the ECE is NaN without rows."""
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    idx = np.clip(np.floor(pp * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=pp, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yy, minlength=n_bins)
    filled = count > 0
    mean_p = np.where(filled, sum_p / np.maximum(count, 1), np.nan)
    rate = np.where(filled, sum_y / np.maximum(count, 1), np.nan)
    gap = np.where(filled, np.abs(rate - mean_p), 0.0)
    ece = float(np.sum(count * gap) / pp.size) if pp.size else float("nan")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return Calibration(edges[:-1], edges[1:], count, mean_p, rate, ece)


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    """sum_b (n_b / N) * |mean(y in b) - mean(p in b)| over ``n_bins`` equal-width bins; NaN without rows."""
    return calibration(y, p, n_bins).ece
