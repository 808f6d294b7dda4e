"""Window statistics that are not drift_core's: AUC, accuracy, calibration, label delay.

Plain numpy, so an independent computation on the raw stored records can check them.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArr = npt.NDArray[np.float64]
NAN = float("nan")


def auc(scores: FloatArr, labels: npt.NDArray[np.bool_]) -> float:
    """AUC-ROC (Mann-Whitney, ties count half); NaN without both classes."""
    pos = int(labels.sum())
    neg = int(labels.size - pos)
    if pos == 0 or neg == 0:
        return NAN
    order = np.argsort(scores, kind="mergesort")
    sorted_scores = scores[order]
    ranks = np.empty(scores.size, dtype=np.float64)
    i = 0
    n = scores.size
    while i < n:  # average ranks over ties
        j = i
        while j + 1 < n and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    rank_sum = float(ranks[labels].sum())
    return (rank_sum - pos * (pos + 1) / 2.0) / (pos * neg)


def accuracy(scores: FloatArr, thresholds: FloatArr, labels: npt.NDArray[np.bool_]) -> float:
    """Share of decisions that were right: predicted default (score >= threshold) == defaulted."""
    if labels.size == 0:
        return NAN
    return float(np.mean((scores >= thresholds) == labels))


def ece(scores: FloatArr, labels: npt.NDArray[np.bool_], n_bins: int = 10) -> float:
    """Expected calibration error over ``n_bins`` equal-width score bins."""
    if labels.size == 0:
        return NAN
    idx = np.clip((scores * n_bins).astype(np.int64), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        mask = idx == b
        m = int(mask.sum())
        if m:
            total += abs(float(labels[mask].mean()) - float(scores[mask].mean())) * m
    return total / labels.size


def median(values: FloatArr) -> float:
    return float(np.median(values)) if values.size else NAN


def finite_or_nan(x: float) -> float:
    return x if math.isfinite(x) else NAN
