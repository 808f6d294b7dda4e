"""Latency against the per-application SLO, judged with always-valid tests, not raw p99s.

The SLO (the rollout's ``max_p99_latency_ms``, the case study's p99 <= 50 ms) is about calls that
score one application (``Score``, a single-row ``infer``). Their p99 is within the SLO exactly when
at most 1 % of them (``latency_share``) are slower, so the canary is judged on that share, over
its single-application calls since the rollout started (each stratum's latency counts, pooled):

* ``latency_slo``: "the canary's share of calls slower than the SLO is at most 1 %";
* ``latency_ratio``: "its share of calls slower than ``max_p99_latency_ratio`` x stable's p99 of
  the same step is at most 1 %" (each call against its own step's stable p99; a step where stable
  made fewer than ``min_latency_calls`` calls gives no threshold, and its canary calls are left out).

Each is the normal-mixture confidence sequence of :mod:`.sequential` on the smoothed share
(:func:`.comparisons.rate`), one-sided against the margin ``latency_share``, with its own share of
the rollout's alpha (:mod:`.limits`): looking at every analysis does not raise the false-rollback
rate. Neither judges before the canary made ``min_latency_calls`` calls (a p99 of a few dozen calls
is their maximum). Batch calls are not counted here: a 200-application batch is not 200
applications that each took its time (the gateway reports their per-call latency apart).

When the platform is slow both variants exceed the SLO and the candidate is not to blame: when the
SLO test rejects while stable's share of calls slower than the SLO, on the canary's timeline (each
step's stable share weighted by the canary's calls in that step), exceeds ``latency_share`` too,
the verdict is a hold (the step neither advances nor rolls back) instead of a rollback. The ratio
test still rolls back a canary much slower than stable on the same platform.

A call counts as slower than a limit when its whole latency bucket (2.5 % wide,
:data:`~.counts.LATENCY_EDGES_MS`) lies above it: the limit is applied within 2.5 %.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from finpredict.gateway.stats import comparisons
from finpredict.gateway.stats.counts import LATENCY_EDGES_MS, Stratum
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.sequential import Evidence, TestDecision, decide, json_safe

METHOD = {
    "latency_slo": "normal-mixture CS of the canary's share of single-application calls slower than "
    "the SLO, pooled over steps",
    "latency_ratio": "normal-mixture CS of the canary's share of single-application calls slower than "
    "the ratio x stable's p99 of their step, pooled over steps",
}


def quantile_ms(counts: npt.NDArray[np.integer[Any]], q: float) -> float:
    """The ``q`` quantile of latencies counted on the bucket grid, interpolated inside its bucket
    (0 without calls)."""
    total = int(counts.sum())
    if not total:
        return 0.0
    cumulative = np.cumsum(counts)
    rank = q * (total - 1)
    i = int(np.searchsorted(cumulative, rank, side="right"))
    if i >= len(LATENCY_EDGES_MS):
        return float(LATENCY_EDGES_MS[-1])
    low = float(LATENCY_EDGES_MS[i - 1]) if i else 0.0
    high = float(LATENCY_EDGES_MS[i])
    before = int(cumulative[i - 1]) if i else 0
    share = (rank - before + 0.5) / int(counts[i])
    return low + (high - low) * min(max(share, 0.0), 1.0)


def slower_than(counts: npt.NDArray[np.integer[Any]], limit_ms: float) -> int:
    """Calls counted in buckets whose lower edge is at or above ``limit_ms``."""
    first = int(np.searchsorted(LATENCY_EDGES_MS, limit_ms, side="left")) + 1
    return int(counts[first:].sum())


@dataclass(frozen=True)
class LatencyVerdict:
    """The latency tests of one analysis (``tests``: ``latency_slo``, ``latency_ratio``), stable's
    share of calls slower than the SLO on the canary's timeline (NaN without calls to weigh), and
    why the rollout holds (empty unless both variants are over the SLO)."""

    tests: list[TestDecision]
    stable_share: float
    hold: str = ""

    def reasons(self, limits: StatLimits) -> dict[str, str]:
        """The rollback reason of each rejecting test (a held SLO test rolls nothing back)."""
        out: dict[str, str] = {}
        for t in self.tests:
            if not t.reject or (t.metric == "latency_slo" and self.hold):
                continue
            if t.metric == "latency_slo":
                what = f"slower than the {limits.max_latency_ms:g} ms SLO"
                stable = f" (stable {self.stable_share:.1%} on the same steps)"
            else:
                what = f"slower than {limits.max_latency_ratio:g}x stable's p99"
                stable = ""
            out[t.metric] = (
                f"latency: {t.estimate:.1%} of the canary's single-application calls {what}{stable}, "
                f"over {limits.latency_share:.0%}: " + t.describe()
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        return dict(json_safe({"stable_share_over_slo": self.stable_share, "hold": self.hold}))


def _share_test(metric: str, slow: int, calls: int, stable_calls: int, limits: StatLimits) -> TestDecision:
    judged = calls >= limits.min_latency_calls
    return limits.judged(
        decide(
            metric,
            Evidence.of([comparisons.rate(slow, calls)]) if judged else Evidence(),
            margin=limits.latency_share,
            worse="higher",
            alpha=limits.alpha_for(metric),
            tau=limits.taus["latency"],
            n_stable=stable_calls,
            n_canary=calls,
            method=METHOD[metric],
            boundary=limits.boundary,
        )
    )


def latency_tests(strata: Sequence[Stratum], limits: StatLimits) -> LatencyVerdict:
    """The canary's single-application latency against the SLO and against stable's p99."""
    slo = limits.max_latency_ms
    slow = calls = stable_calls = ratio_slow = ratio_calls = weighed = 0
    matched = 0.0  # stable's calls over the SLO, each step's share weighted by the canary's calls
    for stratum in strata:
        if "canary" not in stratum.arms or "stable" not in stratum.arms:
            continue
        canary, stable = stratum.arms["canary"].latency_counts, stratum.arms["stable"].latency_counts
        n_c, n_s = int(canary.sum()), int(stable.sum())
        calls += n_c
        stable_calls += n_s
        slow += slower_than(canary, slo)
        if n_s:
            matched += n_c * slower_than(stable, slo) / n_s
            weighed += n_c
        if n_s >= limits.min_latency_calls:
            ratio_slow += slower_than(canary, limits.max_latency_ratio * quantile_ms(stable, 0.99))
            ratio_calls += n_c
    stable_share = matched / weighed if weighed else math.nan
    slo_test = _share_test("latency_slo", slow, calls, stable_calls, limits)
    ratio_test = _share_test("latency_ratio", ratio_slow, ratio_calls, stable_calls, limits)
    hold = ""
    if slo_test.reject and stable_share > limits.latency_share:
        hold = (
            f"both variants are over the {slo:g} ms SLO: {slo_test.estimate:.1%} of the canary's and "
            f"{stable_share:.1%} of stable's single-application calls on the same steps are slower "
            f"(over {limits.latency_share:.0%}): the platform is slow, not the candidate; holding the step"
        )
    return LatencyVerdict([slo_test, ratio_test], stable_share, hold)
