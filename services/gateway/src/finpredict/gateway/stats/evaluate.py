"""One analysis of a canary: every statistic of this package, and what they decide together.

The controller calls :func:`evaluate` at each analysis with the cumulative counts of the
rollout so far, one :class:`~.counts.Stratum` per step, and the drift reports of each
variant's live inputs against its own profile. The verdict is

* ``halt``: the split does not match the weights (every comparison is void; alert),
* ``rollback``: a gating test rejected or a limit is breached; ``reasons`` say which, with figures,
* ``hold``: nothing rolls back, but both variants are over the latency SLO (the platform is slow,
  not the candidate: :mod:`.latency`); ``holds`` says so, with figures, and the step waits,
* ``pass``: nothing objects (whether to advance is the controller's schedule).

Order of the checks: sample ratio, training/serving skew, prediction consistency, label-free
estimate, the sequential tests (error rate, approval rate, and with labels default rate and
AUC), the latency tests (the SLO and the ratio to stable's p99), calibration. All are computed
every time so the record is complete.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import drift_core
from finpredict.gateway.stats import comparisons
from finpredict.gateway.stats.counts import Stratum, pooled
from finpredict.gateway.stats.estimate import (
    CalibrationCheck,
    Expected,
    calibration_check,
    expected_performance,
)
from finpredict.gateway.stats.latency import LatencyVerdict, latency_tests
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.sequential import Evidence, TestDecision, Worse, decide, json_safe
from finpredict.gateway.stats.skew import (
    SCORE_COLUMN,
    Consistency,
    SkewVerdict,
    prediction_consistency,
    training_serving_skew,
)
from finpredict.gateway.stats.srm import SrmResult, sample_ratio_mismatch

StatsAction = Literal["pass", "rollback", "halt", "hold"]
LABEL_METRICS = ("default_rate", "auc")
METHOD = {
    "error_rate": "normal-mixture CS of the rate difference, stratified by step",
    "approval_rate": "normal-mixture CS of the rate difference, stratified by step",
    "default_rate": "normal-mixture CS of the default-rate-among-approved difference, stratified by step",
    "auc": "normal-mixture CS of the AUC difference, DeLong variance, stratified by step",
}


@dataclass(frozen=True)
class CanaryEvidence:
    """The inputs of one analysis (cumulative since the rollout started)."""

    strata: Sequence[Stratum]
    canary_inputs: drift_core.DriftReport | None = None  # canary live vs the candidate's profile
    stable_inputs: drift_core.DriftReport | None = None  # stable live vs stable's profile


@dataclass(frozen=True)
class StatsVerdict:
    action: StatsAction
    reasons: list[str]
    tests: list[TestDecision]
    srm: SrmResult
    skew: SkewVerdict | None
    consistency: Consistency | None
    expected: dict[str, Expected]
    calibration: CalibrationCheck | None
    alpha: float
    checks: list[str] = field(default_factory=list)  # which checks drove a rollback
    latency: LatencyVerdict | None = None  # its tests are in ``tests`` too

    @property
    def holds(self) -> list[str]:
        """Why the step holds (action ``hold``): both variants over the latency SLO."""
        return [self.latency.hold] if self.latency is not None and self.latency.hold else []

    def to_dict(self) -> dict[str, Any]:
        """The record of this analysis (strict JSON: non-finite figures are None)."""
        doc = {
            "action": self.action,
            "reasons": self.reasons,
            "checks": self.checks,
            "alpha": self.alpha,
            "tests": [t.to_dict() for t in self.tests],
            "srm": self.srm.to_dict(),
            "skew": self.skew.to_dict() if self.skew else None,
            "consistency": self.consistency.to_dict() if self.consistency else None,
            "expected": {k: v.to_dict() for k, v in self.expected.items()},
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "latency": self.latency.to_dict() if self.latency else None,
            "holds": self.holds,
        }
        return dict(json_safe(doc))


def _margin(metric: str, limits: StatLimits) -> tuple[float, Worse]:
    if metric == "error_rate":
        return limits.error_rate_margin, "higher"
    if metric == "approval_rate":
        margin = limits.approval_rate_margin
        return (margin if margin is not None else 0.0), "either"
    if metric == "default_rate":
        return limits.default_rate_margin, "higher"
    return limits.auc_margin, "lower"


def compare(
    metric: str,
    strata: Sequence[Stratum],
    *,
    treatment: str,
    control: str,
    margin: float,
    worse: Worse,
    alpha: float,
    limits: StatLimits,
) -> TestDecision:
    """``metric`` of ``treatment`` against ``control`` over ``strata`` (a label metric has no
    evidence before ``limits.min_labeled`` labels per arm, so it cannot reject before)."""
    n_t = comparisons.sample_size(metric, strata, treatment)
    n_c = comparisons.sample_size(metric, strata, control)
    evidence = Evidence.of(comparisons.per_stratum(metric, strata, treatment, control))
    if metric in LABEL_METRICS and min(n_t, n_c) < limits.min_labeled:
        evidence = Evidence()
    return decide(
        metric,
        evidence,
        margin=margin,
        worse=worse,
        alpha=alpha,
        tau=limits.taus[metric],
        n_stable=n_c,
        n_canary=n_t,
        method=METHOD[metric],
        boundary=limits.boundary,
    )


def sequential_tests(strata: Sequence[Stratum], limits: StatLimits) -> list[TestDecision]:
    """The four comparisons of the canary with stable; a report-only test never rejects."""
    out = []
    for metric in ("error_rate", "approval_rate", "default_rate", "auc"):
        margin, worse = _margin(metric, limits)
        d = compare(
            metric,
            strata,
            treatment="canary",
            control="stable",
            margin=margin,
            worse=worse,
            alpha=limits.alpha_for(metric),
            limits=limits,
        )
        out.append(limits.judged(d))
    return out


def evaluate(evidence: CanaryEvidence, limits: StatLimits | None = None) -> StatsVerdict:
    """Every check of the canary against stable and against its own expectations."""
    limits = limits or StatLimits()
    strata = evidence.strata
    reasons: list[str] = []
    checks: list[str] = []

    def fail(check: str, reason: str) -> None:
        checks.append(check)
        reasons.append(reason)

    srm = sample_ratio_mismatch(strata, limits.srm_alpha, limits.taus["srm"])
    if srm.mismatch:
        fail("sample_ratio", srm.describe())
    skew = consistency = None
    if evidence.canary_inputs is not None:
        skew = training_serving_skew(
            evidence.canary_inputs,
            evidence.stable_inputs,
            max_psi=limits.max_psi,
            max_missing_gap=limits.max_missing_gap,
            min_rows=limits.min_rows,
        )
        if skew.skewed:
            fail("skew", skew.reason)
        if SCORE_COLUMN in evidence.canary_inputs.feature_names:  # a profile without scores: no check
            consistency = prediction_consistency(
                evidence.canary_inputs,
                evidence.stable_inputs,
                max_psi=limits.max_psi,
                min_rows=limits.min_rows,
            )
            if not consistency.consistent:
                fail("consistency", consistency.reason)
    stable, canary = pooled(strata, "stable"), pooled(strata, "canary")
    expected = {
        "stable": expected_performance(stable.score_counts),
        "canary": expected_performance(canary.score_counts),
    }
    drop = expected["stable"].auc - expected["canary"].auc
    enough = min(stable.scored, canary.scored) >= limits.min_scored_for_estimate
    if enough and drop > limits.max_expected_auc_drop:
        fail(
            "estimate",
            f"label-free estimate: expected AUC {expected['canary'].auc:.3f} vs stable "
            f"{expected['stable'].auc:.3f} (-{drop:.3f} > -{limits.max_expected_auc_drop})",
        )
    tests = sequential_tests(strata, limits)
    for t in tests:
        if t.reject:
            fail(t.metric, "worse than stable: " + t.describe())
    latency = latency_tests(strata, limits)
    for metric, reason in latency.reasons(limits).items():
        fail(metric, reason)
    tests += latency.tests
    calibration = None
    if canary.labeled:
        calibration = calibration_check(
            canary,
            max_ece=limits.max_ece,
            ece_alpha=limits.alpha_for("ece"),
            gap_margin=limits.calibration_gap_margin,
            gap_alpha=limits.alpha_for("calibration_in_the_large"),
            tau=limits.taus["calibration"],
            boundary=limits.boundary,
        )
        gating = limits.gating()
        breach = ("ece" in gating and calibration.ece_breach) or (
            "calibration_in_the_large" in gating and calibration.in_the_large.reject
        )
        if canary.labeled >= limits.min_labeled and breach:
            fail("calibration", calibration.reason)
    action: StatsAction = (
        "halt" if srm.mismatch else "rollback" if reasons else "hold" if latency.hold else "pass"
    )
    return StatsVerdict(
        action,
        reasons,
        tests,
        srm,
        skew,
        consistency,
        expected,
        calibration,
        limits.alpha,
        checks,
        latency,
    )
