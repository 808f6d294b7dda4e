"""Ranking quality: AUC-ROC (Mann-Whitney, ties averaged) and the ROC curve."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Arr = npt.NDArray[np.float64]


def _average_ranks(x: Arr) -> Arr:
    """1-based ranks of ``x``; a block of tied values gets the mean rank of the block."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [len(x)]])
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def auc_roc(y: npt.ArrayLike, p: npt.ArrayLike) -> float:
    """Area under the ROC curve of scores ``p`` for labels ``y`` (a tie between a positive and a
    negative counts half); NaN unless both classes are present."""
    yy = np.asarray(y).astype(bool)
    pp = np.asarray(p, dtype=np.float64)
    n_pos = int(yy.sum())
    n_neg = yy.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = float(_average_ranks(pp)[yy].sum())
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def roc_curve(y: npt.ArrayLike, p: npt.ArrayLike, max_points: int = 200) -> tuple[Arr, Arr, Arr]:
    """(fpr, tpr, thresholds) at every distinct score, thinned to at most ``max_points`` points."""
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
