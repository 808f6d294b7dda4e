"""Sample-ratio mismatch: did the router send each arm the share it was configured to?

A broken split (sticky sessions, a replica with stale weights, a filter that drops one arm's
errors) invalidates every comparison, so a mismatch halts the rollout or experiment.

Two statistics of the assignment counts, summed over strata (each stratum has fixed weights):

* Pearson's chi-square against the expected counts ``E_a = sum_k n_k w_ak``:
  ``X^2 = sum_a (O_a - E_a)^2 / E_a`` on ``arms - 1`` degrees of freedom, with its p-value (the
  survival function in closed form for integer degrees of freedom). This is the familiar
  figure, but re-testing it at every look inflates its error rate.
* The decision is always-valid: per arm, the share deviation ``n_ak / n_k - w_ak`` with variance
  ``w_ak (1 - w_ak) / n_k`` under the configured split goes through the normal-mixture test of
  :mod:`.sequential` (alpha split equally over the arms; with two arms their deviations mirror
  each other and one test covers both). ``tau`` is the share deviation it is tuned for.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from finpredict.gateway.stats.counts import Stratum
from finpredict.gateway.stats.sequential import Evidence, decide


def chi2_sf(x: float, df: int) -> float:
    """``P(chi2_df > x)``: the regularised upper incomplete gamma ``Q(df/2, x/2)`` by its
    recurrence ``Q(a + 1, y) = Q(a, y) + y^a e^-y / Gamma(a + 1)`` from ``Q(1, y) = e^-y`` or
    ``Q(1/2, y) = erfc(sqrt(y))``."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if x <= 0:
        return 1.0
    y = x / 2
    a = 1.0 if df % 2 == 0 else 0.5
    q = math.exp(-y) if df % 2 == 0 else math.erfc(math.sqrt(y))
    while a < df / 2:
        q += math.exp(a * math.log(y) - y - math.lgamma(a + 1))
        a += 1
    return min(1.0, max(0.0, q))


@dataclass(frozen=True)
class SrmResult:
    """The assignment check of one look. ``mismatch`` comes from the always-valid test;
    ``chi2``/``p_value`` are Pearson's, for the record."""

    mismatch: bool
    chi2: float
    df: int
    p_value: float
    observed: dict[str, int]
    expected: dict[str, float]
    worst_arm: str | None
    statistic: float
    bound: float
    alpha: float

    def describe(self) -> str:
        shares = ", ".join(
            f"{a} {self.observed[a]} vs {self.expected[a]:.0f} expected" for a in self.observed
        )
        return f"sample ratio mismatch: {shares} (chi2 {self.chi2:.1f}, p {self.p_value:.2g})"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def sample_ratio_mismatch(strata: Sequence[Stratum], alpha: float = 0.001, tau: float = 0.01) -> SrmResult:
    """Checks the observed requests per arm against each stratum's configured weights."""
    arms = sorted({a for s in strata for a in s.weights})
    observed = {a: sum(s.arms[a].requests for s in strata if a in s.arms) for a in arms}
    expected = {a: 0.0 for a in arms}
    for s in strata:
        n = sum(arm.requests for arm in s.arms.values())
        for a in arms:
            expected[a] += n * s.weights.get(a, 0.0)
    chi2 = 0.0
    impossible = False
    for a in arms:
        if expected[a] > 0:
            chi2 += (observed[a] - expected[a]) ** 2 / expected[a]
        elif observed[a] > 0:
            impossible = True  # traffic to an arm configured to get none
    df = max(1, len(arms) - 1)
    p_value = 0.0 if impossible else chi2_sf(chi2, df)
    tested = arms[1:] if len(arms) == 2 else arms
    per_arm_alpha = alpha / max(1, len(tested))
    worst: str | None = "impossible" if impossible else None
    worst_stat, worst_bound, mismatch = 0.0, math.inf, impossible
    for a in tested:
        estimates = []
        for s in strata:
            n = sum(arm.requests for arm in s.arms.values())
            w = s.weights.get(a, 0.0)
            if n > 0 and 0 < w < 1:
                estimates.append((s.arms[a].requests / n - w if a in s.arms else -w, w * (1 - w) / n))
        d = decide(
            "assignment",
            Evidence.of(estimates),
            margin=0.0,
            worse="either",
            alpha=per_arm_alpha,
            tau=tau,
            n_stable=0,
            n_canary=observed[a],
            method="normal mixture on the share deviation",
        )
        if d.informative and abs(d.statistic) / d.bound > abs(worst_stat) / worst_bound:
            worst, worst_stat, worst_bound = a, d.statistic, d.bound
        mismatch = mismatch or d.reject
    return SrmResult(
        mismatch,
        chi2,
        df,
        p_value,
        observed,
        expected,
        worst,
        worst_stat,
        worst_bound if math.isfinite(worst_bound) else math.nan,
        alpha,
    )
