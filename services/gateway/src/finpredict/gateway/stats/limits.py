"""The statistics' settings for one rollout: alpha and how it is split, margins, mixing scales.

**The alpha budget.** A rollout's false-rollback probability (rolling back a candidate that is
no worse than stable, at any of its looks) is at most ``alpha``: each gating sequential test
gets ``alpha_i = alpha * share_i / sum(shares of the gating tests)`` and is valid over every
look by itself, so by Bonferroni the union is at most ``sum alpha_i = alpha``. Report-only
tests (``approval_rate`` unless ``approval_rate_margin`` is set: a retrained model may approve a
different share on purpose) roll nothing back and draw their confidence sequences at ``alpha``.
The sample-ratio test halts rather than rolls back and has its own ``srm_alpha``.

The PSI limits (skew, consistency) and the label-free estimate are effect-size limits with a
minimum number of rows, not significance tests: the simulation measures what they add.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from finpredict.gateway.stats.sequential import Boundary

DEFAULT_SHARES: Mapping[str, float] = {
    "error_rate": 0.2,
    "approval_rate": 0.2,  # used only while approval_rate_margin is set
    "default_rate": 0.2,
    "auc": 0.2,
    "calibration_in_the_large": 0.1,
    "ece": 0.1,
}
DEFAULT_TAUS: Mapping[str, float] = {
    "error_rate": 0.01,
    "approval_rate": 0.05,
    "default_rate": 0.02,
    "auc": 0.02,
    "calibration": 0.02,
    "srm": 0.01,
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
    auc_margin: float = 0.0
    calibration_gap_margin: float = 0.02  # |observed - expected default rate|
    max_ece: float = 0.05  # the registry's promotion gate
    min_labeled: int = 200  # per arm, before the label tests judge
    # Effect-size limits
    max_psi: float = 0.25  # the case study's PSI limit
    max_missing_gap: float = 0.05
    min_rows: int = 500
    max_expected_auc_drop: float = 0.05
    min_scored_for_estimate: int = 1000
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
