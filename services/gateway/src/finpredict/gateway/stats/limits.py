"""The statistics' settings for one rollout: alpha and how it is split, margins, mixing scales.

**The alpha budget.** A rollout's false-rollback probability (rolling back a candidate that is
no worse than stable, at any of its looks) is at most ``alpha``: each gating sequential test
gets ``alpha_i = alpha * share_i / sum(shares of the gating tests)`` and is valid over every
look by itself, so by Bonferroni the union is at most ``sum alpha_i = alpha``. Report-only
tests (``approval_rate`` unless ``approval_rate_margin`` is set: a retrained model may approve a
different share on purpose) roll nothing back and draw their confidence sequences at ``alpha``.
The sample-ratio test halts rather than rolls back and has its own ``srm_alpha``. The latency
tests (:mod:`.latency`: the canary's share of single-application calls slower than the SLO, and
slower than a multiple of stable's p99) are gating tests with shares of their own.

The PSI limits (skew, consistency) and the label-free estimate are effect-size limits with a
minimum number of rows, not significance tests: the simulation measures what they add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from finpredict.gateway.stats.sequential import Boundary, TestDecision

DEFAULT_MAX_AUC_DROP = 0.0
"""The AUC test's default non-inferiority margin: any AUC loss the always-valid test establishes
rolls the candidate back. Measured in the simulation (``benchmarks/rollouts``): on the canary
schedule a 2-point loss is caught in 41.5 % of rollouts with no margin and in 3 % with a 1-point
one, and an identical candidate is rolled back in 0 of 200 either way. A rollout's
``max_auc_drop`` sets a tolerance."""

DEFAULT_SHARES: Mapping[str, float] = {
    "error_rate": 0.2,
    "approval_rate": 0.2,  # used only while approval_rate_margin is set
    "default_rate": 0.2,
    "auc": 0.2,
    "calibration_in_the_large": 0.1,
    "ece": 0.1,
    "latency_slo": 0.1,
    "latency_ratio": 0.1,
}
DEFAULT_TAUS: Mapping[str, float] = {
    "error_rate": 0.01,
    "approval_rate": 0.05,
    "default_rate": 0.02,
    "auc": 0.02,
    "calibration": 0.02,
    "srm": 0.01,
    "latency": 0.05,
}


@dataclass(frozen=True)
class StatLimits:
    """Per-rollout settings (the defaults keep the case study's limits where it has one)."""

    alpha: float = 0.05
    boundary: Boundary = "mixture"  # "fixed": the naive re-test, for comparison only
    shares: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SHARES))
    taus: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_TAUS))
    # Sequential tests: roll back when the canary is worse than stable by more than the margin.
    error_rate_margin: float = 0.01  # the case study's max error-rate increase
    approval_rate_margin: float | None = None  # None: reported, never rolls back
    default_rate_margin: float = 0.0
    auc_margin: float = DEFAULT_MAX_AUC_DROP  # a rollout's is its Thresholds.max_auc_drop (stat_limits)
    calibration_gap_margin: float = 0.02  # |observed - expected default rate|
    max_ece: float = 0.05  # the registry's promotion gate
    min_labeled: int = 200  # per arm, before the label tests judge
    # Effect-size limits
    max_psi: float = 0.25  # the case study's PSI limit
    max_missing_gap: float = 0.05
    min_rows: int = 500
    max_expected_auc_drop: float = 0.05
    min_scored_for_estimate: int = 1000
    # Latency (the rollout's max_p99_latency_ms and max_p99_latency_ratio): at most latency_share
    # of the single-application calls may be slower than the SLO, and than the ratio x stable's p99
    max_latency_ms: float = 50.0  # the case study's p99 SLO
    max_latency_ratio: float = 1.5
    latency_share: float = 0.01  # a p99
    min_latency_calls: int = 100  # canary calls before the latency tests judge
    srm_alpha: float = 0.001

    def gating(self) -> list[str]:
        """The sequential tests that can roll back."""
        return [m for m in self.shares if m != "approval_rate" or self.approval_rate_margin is not None]

    def alpha_for(self, metric: str) -> float:
        """``metric``'s share of alpha (the full alpha for a report-only test)."""
        gating = self.gating()
        if metric not in gating:
            return self.alpha
        return self.alpha * self.shares[metric] / sum(self.shares[m] for m in gating)

    def judged(self, decision: TestDecision) -> TestDecision:
        """``decision`` as it counts here: a report-only test's rejection rolls nothing back."""
        if decision.metric in self.gating() or not decision.reject:
            return decision
        return replace(decision, reject=False)
