"""Label-free performance estimates (CBPE) and the calibration checks that labels make possible.

**Confidence-based performance estimation** (the idea of NannyML's CBPE): if a model's scores are
calibrated, row ``i`` defaults with probability ``p_i``, so without a single label

    E[default rate]  = mean p_i,
    E[AUC]          ~= E[concordant pairs] / E[positive-negative pairs]
                     = sum_{i != j} p_i (1 - p_j) [s_i > s_j] (+ 1/2 for ties) / sum_{i != j} p_i (1 - p_j),

computed in one pass over the score grid (bucket midpoints as ``p``). A model that lost its
calibration toward 0.5 announces a much lower expected AUC than stable; the estimate is only as
good as the calibration, which labels then check.

**Calibration checks** on the canary's labelled rows (both anytime-valid):

* *Calibration in the large*: ``g = mean(y - p)``, observed minus expected default rate, with
  the asymptotic confidence sequence of :mod:`.sequential` (per-row variance: the sample variance
  of ``y - p``); the candidate fails when the sequence excludes ``[-margin, margin]``.
* *ECE* (:func:`finpredict.metrics.calibration`, 10 bins): a lower confidence bound
  ``sum_b (n_b / N) max(0, |gap_b| - r_b)``, ``r_b`` the radius of an exact time-uniform
  sequence for bin ``b``'s mean of ``y - p`` (``y - p`` lies in an interval of length 1, so it is
  sub-Gaussian with variance 1/4: Hoeffding; normal mixture at ``alpha / bins``, Bonferroni over
  bins). While every bin's sequence covers, the bound is below the true ECE; the candidate fails
  when the bound exceeds ``max_ece`` (the registry's promotion gate, 0.05).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from finpredict import metrics
from finpredict.gateway.stats.counts import MIDPOINTS, ArmCounts, Counts
from finpredict.gateway.stats.sequential import Boundary, Evidence, TestDecision, decide, radius


@dataclass(frozen=True)
class Expected:
    """One variant's label-free estimates over ``n`` scored rows."""

    auc: float
    default_rate: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def expected_performance(score_counts: Counts) -> Expected:
    """Expected AUC and default rate if the scores are calibrated (NaN without two rows)."""
    c = score_counts.astype(np.float64)
    n = float(c.sum())
    if n < 2:
        return Expected(math.nan, math.nan, int(n))
    pos, neg = c * MIDPOINTS, c * (1 - MIDPOINTS)
    neg_below = np.cumsum(neg) - neg
    # pairs (i defaulted, j repaid), i != j: across buckets, plus half of those within a bucket
    within = 0.5 * c * (c - 1) * MIDPOINTS * (1 - MIDPOINTS)
    concordant = float((pos * neg_below).sum() + within.sum())
    pairs = float(pos.sum() * neg.sum() - (c * MIDPOINTS * (1 - MIDPOINTS)).sum())
    return Expected(concordant / pairs if pairs > 0 else math.nan, float(pos.sum() / n), int(n))


@dataclass(frozen=True)
class CalibrationCheck:
    """The canary's calibration on its labelled rows: ECE, its lower bound, and calibration in the large."""

    ece_breach: bool  # the ECE lower bound exceeds max_ece
    labeled: int
    ece: float
    ece_lower: float
    max_ece: float
    ece_alpha: float
    in_the_large: TestDecision
    reason: str

    @property
    def miscalibrated(self) -> bool:
        return self.ece_breach or self.in_the_large.reject

    def to_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["miscalibrated"] = self.miscalibrated
        doc["in_the_large"] = self.in_the_large.to_dict()
        return doc


def _labelled_rows(arm: ArmCounts) -> tuple[np.ndarray, np.ndarray]:
    """(y, p) of the labelled rows, each score at its bucket's midpoint."""
    p = np.concatenate([np.repeat(MIDPOINTS, arm.defaulted), np.repeat(MIDPOINTS, arm.repaid)])
    y = np.concatenate([np.ones(int(arm.defaulted.sum())), np.zeros(int(arm.repaid.sum()))])
    return y, p


def calibration_check(
    arm: ArmCounts,
    *,
    max_ece: float = 0.05,
    ece_alpha: float = 0.0075,
    gap_margin: float = 0.02,
    gap_alpha: float = 0.0075,
    tau: float = 0.02,
    boundary: Boundary = "mixture",
    n_bins: int = 10,
) -> CalibrationCheck:
    """Both calibration checks on ``arm``'s labelled rows (see the module docstring)."""
    y, p = _labelled_rows(arm)
    n = y.size
    gap = y - p
    var_row = max(float(gap.var(ddof=1)), 1e-4) if n > 1 else math.nan
    evidence = Evidence.of([(float(gap.mean()), var_row / n)] if n > 1 else [])
    large = decide(
        "calibration_in_the_large",
        evidence,
        margin=gap_margin,
        worse="either",
        alpha=gap_alpha,
        tau=tau,
        n_stable=0,
        n_canary=n,
        method="asymptotic normal-mixture CS of mean(defaulted - score)",
        boundary=boundary,
    )
    if n == 0:
        return CalibrationCheck(False, 0, math.nan, 0.0, max_ece, ece_alpha, large, "no labels yet")
    table = metrics.calibration(y, p, n_bins)
    lower = 0.0
    rho = 1.0 / tau**2
    for count, mean_p, rate in zip(table.count, table.mean_predicted, table.observed_rate, strict=True):
        if count == 0:
            continue
        v = 4.0 * count  # information of the bin mean with per-row variance 1/4
        r = radius(v, ece_alpha / n_bins, rho, boundary) / v
        lower += float(count / n) * max(0.0, float(abs(rate - mean_p)) - r)
    bad_ece = bool(lower > max_ece)
    if bad_ece:
        reason = f"miscalibrated: ECE {table.ece:.3f}, at least {lower:.3f} > {max_ece} (labels {n})"
    elif large.reject:
        reason = (
            f"miscalibrated: observed minus expected default rate {large.estimate:+.3f} "
            f"[{large.lower:+.3f}, {large.upper:+.3f}] outside +-{gap_margin} (labels {n})"
        )
    else:
        reason = f"calibrated so far: ECE {table.ece:.3f} (lower bound {lower:.3f}), labels {n}"
    return CalibrationCheck(bad_ece, n, table.ece, lower, max_ece, ece_alpha, large, reason)
