"""Evaluation metrics and the exact definitions of the quality gates (numpy only).

* ``auc_roc``: area under the ROC curve of the predicted probability of default against the
  label, computed from average ranks (ties get their mean rank), i.e. the Mann-Whitney U
  statistic / (n_pos * n_neg).
* ``ece``: expected calibration error with 10 equal-width bins on [0, 1] (bin b holds
  p in [b/10, (b+1)/10), the last bin includes 1.0), weighted by bin count:
  ECE = sum_b (n_b / N) * |mean(y in b) - mean(p in b)|; empty bins contribute 0.
* ``demographic_parity_diff``: the decision is "approve" when p < threshold; the approval rate
  of each group of the protected attribute is computed and the gate value is
  max(rate) - min(rate) (fairlearn's ``demographic_parity_difference`` with
  ``method="between_groups"``). It depends on the decision threshold.
* ``latency_p99_ms``: the 99th percentile (numpy ``linear`` interpolation) of the wall time of
  ``latency_rows`` single-row predictions, each timed from the request's feature dict through
  :func:`finpredict.features.records_to_matrix` to ``inplace_predict`` with one thread. The
  measurement is repeated ``latency_rounds`` times and the round with the lowest p99 is the
  gate value (other processes on a shared machine only ever add time; every round's p99 is
  reported in the gate detail, the worst as ``latency_p99_ms_worst_round``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[np.float64]


def _ranks(x: Arr) -> Arr:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    # average ranks over ties
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    avg = (starts + ends + 1) / 2.0  # 1-based mean rank of each tie block
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def auc_roc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    yy = np.asarray(y).astype(bool)
    pp = np.asarray(p, dtype=np.float64)
    n_pos = int(yy.sum())
    n_neg = len(yy) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    r = _ranks(pp)
    return float((r[yy].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def roc_curve(y: npt.ArrayLike, p: npt.ArrayLike, max_points: int = 200) -> tuple[Arr, Arr, Arr]:
    """(fpr, tpr, thresholds), thinned to at most ``max_points`` points."""
    yy = np.asarray(y).astype(bool)
    pp = np.asarray(p, dtype=np.float64)
    order = np.argsort(-pp, kind="mergesort")
    ps, ys = pp[order], yy[order]
    distinct = np.flatnonzero(np.diff(ps)) if len(ps) > 1 else np.array([], dtype=np.int64)
    idx = np.concatenate([distinct, [len(ps) - 1]])
    tps = np.cumsum(ys)[idx]
    fps = (idx + 1) - tps
    tpr = np.concatenate([[0.0], tps / max(ys.sum(), 1)])
    fpr = np.concatenate([[0.0], fps / max((~ys).sum(), 1)])
    thr = np.concatenate([[np.inf], ps[idx]])
    if len(fpr) > max_points:
        keep = np.unique(np.linspace(0, len(fpr) - 1, max_points).round().astype(int))
        fpr, tpr, thr = fpr[keep], tpr[keep], thr[keep]
    return fpr.astype(np.float64), tpr.astype(np.float64), thr.astype(np.float64)


@dataclass(frozen=True)
class Calibration:
    bin_lower: Arr
    bin_upper: Arr
    count: npt.NDArray[np.int64]
    mean_predicted: Arr
    observed_rate: Arr
    ece: float


def calibration(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> Calibration:
    yy = np.asarray(y, dtype=np.float64)
    pp = np.asarray(p, dtype=np.float64)
    idx = np.clip(np.floor(pp * n_bins).astype(np.int64), 0, n_bins - 1)
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)
    sum_p = np.bincount(idx, weights=pp, minlength=n_bins)
    sum_y = np.bincount(idx, weights=yy, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_p = np.where(count > 0, sum_p / np.maximum(count, 1), np.nan)
        rate = np.where(count > 0, sum_y / np.maximum(count, 1), np.nan)
    gap = np.where(count > 0, np.abs(rate - mean_p), 0.0)
    ece = float(np.sum(count / len(pp) * gap))
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return Calibration(edges[:-1], edges[1:], count, mean_p, rate, ece)


def expected_calibration_error(y: npt.ArrayLike, p: npt.ArrayLike, n_bins: int = 10) -> float:
    return calibration(y, p, n_bins).ece


def approval_rates(p: npt.ArrayLike, groups: npt.ArrayLike, threshold: float) -> dict[str, float]:
    pp = np.asarray(p, dtype=np.float64)
    gg = np.asarray(groups).astype(str)
    approve = pp < threshold
    return {str(g): float(approve[gg == g].mean()) for g in np.unique(gg)}


def demographic_parity_difference(p: npt.ArrayLike, groups: npt.ArrayLike, threshold: float) -> float:
    rates = approval_rates(p, groups, threshold)
    return float(max(rates.values()) - min(rates.values()))


def confusion(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> dict[str, int]:
    """Counts with "positive" = predicted default (p >= threshold, i.e. declined)."""
    yy = np.asarray(y).astype(bool)
    pred = np.asarray(p, dtype=np.float64) >= threshold
    return {
        "tp": int((pred & yy).sum()),
        "fp": int((pred & ~yy).sum()),
        "tn": int((~pred & ~yy).sum()),
        "fn": int((~pred & yy).sum()),
    }


def percentile(values: npt.ArrayLike, q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
