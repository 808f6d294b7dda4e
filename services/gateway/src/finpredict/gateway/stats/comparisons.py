"""Canary-versus-stable effects per stratum, as ``(estimate, variance)`` for :mod:`.sequential`.

* Rates (error rate, approval rate, default rate among approved): ``d = x_c/n_c - x_s/n_s``
  with the unpooled variance ``v = q_c (1 - q_c) / n_c + q_s (1 - q_s) / n_s`` on the smoothed
  rates ``q = (x + 1) / (n + 2)``: without the smoothing a stratum with no errors yet would
  claim zero variance, and one early error would look conclusive.
* AUC: the DeLong, DeLong and Clarke-Pearson (1988) variance of the Mann-Whitney AUC from the
  placements on the score grid. A defaulted row in bucket ``b`` has placement
  ``P_b = (repaid below b + repaid in b / 2) / n_repaid``; a repaid row in bucket ``b``
  ``Q_b = (defaulted above b + defaulted in b / 2) / n_defaulted``; ``AUC = mean P`` over the
  defaulted rows (= :func:`finpredict.metrics.auc_roc` of the bucketed scores) and
  ``Var AUC = var(P) / n_defaulted + var(Q) / n_repaid``. The arms are independent samples, so
  the variance of their difference is the sum. A normal approximation (asymptotically exact:
  AUC is a U-statistic) feeds the asymptotic confidence sequence.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from finpredict.gateway.stats.counts import ArmCounts, Counts, Stratum

Estimate = tuple[float, float]  # (effect, variance)
NAN_ESTIMATE: Estimate = (math.nan, math.nan)


def rate(x: int, n: int) -> Estimate:
    """``x/n`` and its variance ``q (1 - q) / n`` on the smoothed rate ``q = (x + 1) / (n + 2)``
    (NaN without rows)."""
    if n <= 0:
        return NAN_ESTIMATE
    q = (x + 1) / (n + 2)
    return x / n, q * (1 - q) / n


def rate_difference(x_c: int, n_c: int, x_s: int, n_s: int) -> Estimate:
    """``x_c/n_c - x_s/n_s`` and its smoothed unpooled variance (NaN without rows on either side)."""
    if n_c <= 0 or n_s <= 0:
        return NAN_ESTIMATE
    (r_c, v_c), (r_s, v_s) = rate(x_c, n_c), rate(x_s, n_s)
    return r_c - r_s, v_c + v_s


@dataclass(frozen=True)
class AucEstimate:
    """AUC of one arm's labelled rows and its DeLong variance (NaN without two of each class)."""

    auc: float
    variance: float
    n_defaulted: int
    n_repaid: int


def auc_delong(defaulted: Counts, repaid: Counts) -> AucEstimate:
    """AUC and DeLong variance from per-bucket counts of defaulted and repaid rows."""
    pos, neg = defaulted.astype(np.float64), repaid.astype(np.float64)
    n_pos, n_neg = float(pos.sum()), float(neg.sum())
    if n_pos < 2 or n_neg < 2:
        return AucEstimate(math.nan, math.nan, int(n_pos), int(n_neg))
    neg_below = np.cumsum(neg) - neg
    pos_above = n_pos - np.cumsum(pos)
    placement_pos = (neg_below + neg / 2) / n_neg
    placement_neg = (pos_above + pos / 2) / n_pos
    auc = float((pos * placement_pos).sum() / n_pos)
    var_pos = float((pos * (placement_pos - auc) ** 2).sum() / (n_pos - 1))
    var_neg = float((neg * (placement_neg - auc) ** 2).sum() / (n_neg - 1))
    return AucEstimate(auc, var_pos / n_pos + var_neg / n_neg, int(n_pos), int(n_neg))


def auc_difference(canary: ArmCounts, stable: ArmCounts) -> Estimate:
    c, s = auc_delong(canary.defaulted, canary.repaid), auc_delong(stable.defaulted, stable.repaid)
    return c.auc - s.auc, c.variance + s.variance


def error_rate(canary: ArmCounts, stable: ArmCounts) -> Estimate:
    return rate_difference(canary.errors, canary.requests, stable.errors, stable.requests)


def approval_rate(canary: ArmCounts, stable: ArmCounts) -> Estimate:
    return rate_difference(canary.approved, canary.scored, stable.approved, stable.scored)


def default_rate(canary: ArmCounts, stable: ArmCounts) -> Estimate:
    return rate_difference(
        canary.labeled_approved_defaults,
        canary.labeled_approved,
        stable.labeled_approved_defaults,
        stable.labeled_approved,
    )


Comparison = Callable[[ArmCounts, ArmCounts], Estimate]
# metric -> (per-stratum effect, the sample size it is based on)
COMPARISONS: dict[str, tuple[Comparison, Callable[[ArmCounts], int]]] = {
    "error_rate": (error_rate, lambda a: a.requests),
    "approval_rate": (approval_rate, lambda a: a.scored),
    "default_rate": (default_rate, lambda a: a.labeled_approved),
    "auc": (auc_difference, lambda a: a.labeled),
}


def per_stratum(metric: str, strata: Sequence[Stratum], treatment: str, control: str) -> list[Estimate]:
    """``metric``'s effect (``treatment`` minus ``control``) in each stratum holding both arms."""
    compare = COMPARISONS[metric][0]
    return [
        compare(s.arms[treatment], s.arms[control])
        for s in strata
        if treatment in s.arms and control in s.arms
    ]


def sample_size(metric: str, strata: Sequence[Stratum], arm: str) -> int:
    size = COMPARISONS[metric][1]
    return sum(size(s.arms[arm]) for s in strata if arm in s.arms)
