"""A/B experiments: per-arm statistics, effects with always-valid intervals, a stopping rule.

The same machinery as a canary (:mod:`.comparisons`, :mod:`.sequential`), between two named arms
``a`` (control) and ``b`` (treatment) of an experiment with any split:

* per arm: error rate, approval rate, default rate among approved (labels) and AUC (labels),
  each with an always-valid ``1 - alpha`` confidence sequence (rates: smoothed binomial
  variance; AUC: DeLong), and the label-free expectations of :mod:`.estimate`;
* effects ``b - a`` of the four metrics, stratified by split, each at ``alpha / 4`` so that all
  four sequences hold at once (Bonferroni);
* the recommendation, on the ``primary`` metric: ``stop_b_better`` / ``stop_a_better`` once its
  effect's sequence excludes 0, ``stop_equivalent`` once it lies within
  ``[-equivalence, equivalence]``, ``continue`` otherwise; ``halt`` on a sample-ratio mismatch.
  Because the sequences are valid at every look, stopping at the first look that allows it keeps
  the stated error rates (that is the point of them).

The gateway judges each running experiment with it on every replica's counts since the start
(:mod:`finpredict.gateway.experiment_stats`: ``GetExperiment``, ``finpredict rollout experiment
status``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

from finpredict.gateway.stats.comparisons import auc_delong
from finpredict.gateway.stats.counts import ArmCounts, Stratum, pooled
from finpredict.gateway.stats.estimate import Expected, expected_performance
from finpredict.gateway.stats.evaluate import compare
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.sequential import (
    Boundary,
    Evidence,
    TestDecision,
    confidence_sequence,
    json_safe,
)
from finpredict.gateway.stats.srm import SrmResult, sample_ratio_mismatch

Recommendation = Literal["continue", "stop_b_better", "stop_a_better", "stop_equivalent", "halt"]
# Which direction is better for each metric.
HIGHER_IS_BETTER: Mapping[str, bool] = {
    "error_rate": False,
    "approval_rate": True,
    "default_rate": False,
    "auc": True,
}
DEFAULT_EQUIVALENCE: Mapping[str, float] = {
    "error_rate": 0.002,
    "approval_rate": 0.01,
    "default_rate": 0.005,
    "auc": 0.005,
}


@dataclass(frozen=True)
class Interval:
    estimate: float
    lower: float
    upper: float
    n: int

    def to_dict(self) -> dict[str, Any]:
        return dict(json_safe(asdict(self)))


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    requests: int
    error_rate: Interval
    approval_rate: Interval
    default_rate: Interval
    auc: Interval
    expected: Expected

    def to_dict(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"arm": self.arm, "requests": self.requests}
        for name in ("error_rate", "approval_rate", "default_rate", "auc"):
            doc[name] = getattr(self, name).to_dict()
        doc["expected"] = self.expected.to_dict()
        return doc


def _rate(x: int, n: int, alpha: float, tau: float, boundary: Boundary) -> Interval:
    if n <= 0:
        return Interval(math.nan, -math.inf, math.inf, 0)
    q = (x + 1) / (n + 2)
    lower, upper = confidence_sequence(Evidence.of([(x / n, q * (1 - q) / n)]), alpha, tau, boundary)
    return Interval(x / n, max(0.0, lower), min(1.0, upper), n)


def arm_summary(name: str, arm: ArmCounts, limits: StatLimits) -> ArmSummary:
    """One arm's figures with ``1 - alpha`` confidence sequences."""
    a, taus, b = limits.alpha, limits.taus, limits.boundary
    auc = auc_delong(arm.defaulted, arm.repaid)
    lo, hi = confidence_sequence(Evidence.of([(auc.auc, auc.variance)]), a, taus["auc"], b)
    return ArmSummary(
        name,
        arm.requests,
        _rate(arm.errors, arm.requests, a, taus["error_rate"], b),
        _rate(arm.approved, arm.scored, a, taus["approval_rate"], b),
        _rate(arm.labeled_approved_defaults, arm.labeled_approved, a, taus["default_rate"], b),
        Interval(auc.auc, max(0.0, lo), min(1.0, hi), auc.n_defaulted + auc.n_repaid),
        expected_performance(arm.score_counts),
    )


@dataclass(frozen=True)
class Experiment:
    arms: list[ArmSummary]
    effects: list[TestDecision]  # b - a, each at alpha / 4
    srm: SrmResult
    primary: str
    recommendation: Recommendation
    reason: str

    def to_dict(self) -> dict[str, Any]:
        """The record of this look (strict JSON: non-finite figures are None)."""
        doc = {
            "arms": [a.to_dict() for a in self.arms],
            "effects": [e.to_dict() for e in self.effects],
            "srm": self.srm.to_dict(),
            "primary": self.primary,
            "recommendation": self.recommendation,
            "reason": self.reason,
        }
        return dict(json_safe(doc))


def compare_arms(
    strata: Sequence[Stratum],
    a: str,
    b: str,
    *,
    primary: str = "default_rate",
    equivalence: Mapping[str, float] = DEFAULT_EQUIVALENCE,
    limits: StatLimits | None = None,
) -> Experiment:
    """Per-arm figures, the effects of ``b`` over ``a`` and a stopping recommendation."""
    limits = limits or StatLimits()
    effects = [
        compare(
            metric,
            strata,
            treatment=b,
            control=a,
            margin=0.0,
            worse="either",
            alpha=limits.alpha / 4,
            limits=limits,
        )
        for metric in HIGHER_IS_BETTER
    ]
    srm = sample_ratio_mismatch(strata, limits.srm_alpha, limits.taus["srm"])
    arms = [arm_summary(name, pooled(strata, name), limits) for name in (a, b)]
    effect = next(e for e in effects if e.metric == primary)
    eq = equivalence[primary]
    recommendation: Recommendation
    if srm.mismatch:
        recommendation, reason = "halt", srm.describe()
    elif effect.reject:
        b_higher = effect.lower > 0
        recommendation = "stop_b_better" if b_higher == HIGHER_IS_BETTER[primary] else "stop_a_better"
        reason = f"{primary} differs: " + effect.describe()
    elif effect.informative and -eq < effect.lower and effect.upper < eq:
        recommendation, reason = "stop_equivalent", f"{primary} within +-{eq}: " + effect.describe()
    else:
        recommendation, reason = "continue", f"{primary} undecided: " + effect.describe()
    return Experiment(arms, effects, srm, primary, recommendation, reason)
