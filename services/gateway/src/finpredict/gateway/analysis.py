"""Canary analysis: compare the canary with stable over the same window and decide.

Both variants are measured in the same analysis window (so traffic mix and time of day are
the same for both, which Flagger and Argo Rollouts users have asked for for years). A decision
is one of:

- ``wait``: not enough requests on either variant yet (never pass by default),
- ``rollback``: a limit is breached; the reason names the metric, both values and the limit,
- ``advance``: every limit holds.

Latency is measured here and judged by the statistics (:mod:`finpredict.gateway.stats.latency`:
always-valid tests of the canary's share of calls slower than the SLO, and than a multiple of
stable's p99, over every call since the start; a raw p99 of a small window is noise, and when both
variants are over the SLO the platform is to blame, not the candidate). The per-application SLO
is about calls that score one application (``Score``, a single-row ``infer``): only their latency
goes into :attr:`VariantWindow.latency_counts`. A batch call counts as its requests (and errors)
and its latency goes, once per call, into :attr:`VariantWindow.batch_latency_counts`, reported as
``*_batch_p99_ms`` and never judged against the per-application SLO.

Delayed labels (outcomes joined to their prediction by request id, :meth:`VariantWindow.record_outcomes`)
are counted on the same score grid, by outcome; the window reports each variant's AUC from them, and
the always-valid tests of the statistics (default rate, AUC, calibration) judge them since the start:
re-testing a fixed AUC limit at every window would roll back a good model by chance.

Score drift is the PSI and KL of the canary's scores against stable's, binned on stable's
quantiles by drift_core. It is always measured. A model retrained on a shifted population is
*meant* to score differently from stable, so for a candidate with a reference profile the
controller judges it against its own expectations first (training/serving skew and prediction
consistency, :mod:`finpredict.gateway.stats.skew`, on the inputs each variant counted on its own
profile: :attr:`VariantWindow.inputs`), and the score drift against stable decides only while
nothing moved stable's traffic away from stable's own profile
(:mod:`finpredict.gateway.canary_stats`); here it rolls back only with ``score_drift_gates``.

A :class:`VariantWindow` keeps counts, not samples: latencies in log-spaced buckets 2.5 % wide,
scores in 1,000 buckets of 0.001 (counted by drift_core). So a window is small, exact to merge
and to serialise: every gateway replica publishes its own and the leader analyses their sum.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

import drift_core
from finpredict import metrics
from finpredict.gateway.stats.comparisons import auc_delong
from finpredict.gateway.stats.counts import LATENCY_EDGES_MS, ArmCounts, latency_bucket
from finpredict.gateway.stats.latency import quantile_ms
from finpredict.gateway.stats.limits import DEFAULT_MAX_AUC_DROP

log = logging.getLogger("finpredict.gateway.analysis")
Action = Literal["wait", "advance", "rollback"]
# Score bucket edges: 1,000 buckets of 0.001 over [0, 1] (drift_core.histogram_counts).
SCORE_EDGES: npt.NDArray[np.float64] = np.linspace(0.0, 1.0, 1001)[1:-1]
# Drift is measured over this many bins on stable's score quantiles (drift_core's default).
SCORE_BINS = 10


def _zeros(edges: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    return np.zeros(len(edges) + 1, dtype=np.uint64)


def _sparse(counts: npt.NDArray[np.uint64]) -> dict[str, int]:
    return {str(i): int(counts[i]) for i in np.flatnonzero(counts)}


def _dense(sparse: Mapping[str, int], edges: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    counts = _zeros(edges)
    for i, n in sparse.items():
        counts[int(i)] = n
    return counts


@dataclass(frozen=True)
class Thresholds:
    """Limits a canary must stay within (defaults from the seed's SLOs and alert rules).

    The latency limits are judged by the statistics (:mod:`finpredict.gateway.stats.latency`) on
    single-application calls: ``max_p99_latency_ms`` is the per-application SLO (the canary rolls
    back once a test shows more than 1 % of its calls slower, unless stable's are too: then the
    step holds); ``max_p99_latency_ratio`` x stable's p99 of the same step is a limit relative to
    stable (more than 1 % of the canary's calls slower rolls back)."""

    max_error_rate_increase: float = 0.01
    max_p99_latency_ms: float = 50.0  # per application: the case study's p99 SLO
    max_p99_latency_ratio: float = 1.5
    max_score_psi: float = 0.25
    max_score_kl: float = 0.1
    # The AUC test's non-inferiority margin: the statistics' always-valid AUC test (every label since
    # the start) rolls back once canary AUC < stable AUC - max_auc_drop (canary_stats.stat_limits).
    max_auc_drop: float = DEFAULT_MAX_AUC_DROP
    min_labeled: int = 200


@dataclass
class VariantWindow:
    """What one variant did during the current analysis window (mergeable counts)."""

    requests: int = 0
    errors: int = 0
    scored: int = 0
    approved: int = 0  # of the scored requests: score < the model's threshold
    score_sum: float = 0.0
    # calls that scored one application, one count per call (the per-application SLO's)
    latency_counts: npt.NDArray[np.uint64] = field(default_factory=lambda: _zeros(LATENCY_EDGES_MS))
    # calls that scored several applications, one count per call (reported only)
    batch_latency_counts: npt.NDArray[np.uint64] = field(default_factory=lambda: _zeros(LATENCY_EDGES_MS))
    score_counts: npt.NDArray[np.uint64] = field(default_factory=lambda: _zeros(SCORE_EDGES))
    # Delayed labels of this variant's predictions, on the score grid by outcome (only the label
    # fields of the ArmCounts are used).
    outcomes: ArmCounts = field(default_factory=ArmCounts)
    # The scored requests' inputs and scores counted on this variant's reference profile
    # (finpredict.gateway.inputs; None while nothing was counted, or the version has no profile).
    inputs: drift_core.Window | None = None

    def record(
        self, *, ok: bool, latency_ms: float, score: float | None = None, threshold: float | None = None
    ) -> None:
        scores = () if score is None else (score,)
        self.record_batch(1, ok=ok, latency_ms=latency_ms, scores=scores, threshold=threshold)

    def record_batch(
        self,
        n: int,
        *,
        ok: bool,
        latency_ms: float,
        scores: Sequence[float] = (),
        threshold: float | None = None,
        call_size: int | None = None,
    ) -> None:
        """``n`` requests of one call that took ``latency_ms``; ``scores`` of the ones that succeeded,
        approved where below ``threshold`` (the decision the client got; none counted without one).
        ``call_size``: how many applications the call scored (default ``n``; more than ``n`` when
        the other ones went to another variant): a call of one application counts its latency in
        :attr:`latency_counts`, a batch call in :attr:`batch_latency_counts`, once either way."""
        self.requests += n
        if not ok:
            self.errors += n
        single = (n if call_size is None else call_size) == 1
        histogram = self.latency_counts if single else self.batch_latency_counts
        histogram[int(latency_bucket(latency_ms))] += 1
        if ok and len(scores):
            values = np.asarray(scores, dtype=np.float64)
            counts, missing = drift_core.histogram_counts(values, SCORE_EDGES)
            self.score_counts += counts
            self.scored += len(values) - missing
            self.score_sum += float(np.nansum(values))
            if threshold is not None:
                self.approved += int(metrics.approved(values, threshold).sum())

    def record_outcomes(self, scores: Sequence[float], defaulted: Sequence[bool], threshold: float) -> None:
        """Delayed labels: the scores served, whether each applicant defaulted, and the threshold
        the decisions were made with."""
        self.outcomes.add_outcomes(scores, defaulted, threshold)

    @property
    def labeled(self) -> int:
        return self.outcomes.labeled

    def add_inputs(self, counted: drift_core.Window) -> None:
        """Adds counts of inputs on this variant's reference profile (a window of an equal profile:
        one variant is one version; one of another profile is left out, and logged)."""
        if self.inputs is None:
            self.inputs = counted.snapshot()
        elif self.inputs.profile == counted.profile:
            self.inputs.merge(counted)
        else:
            log.error(
                "input counts over another reference profile left out",
                extra={"have": self.inputs.profile.fingerprint, "got": counted.profile.fingerprint},
            )

    def merge(self, other: VariantWindow) -> None:
        """Adds ``other``'s counts (another replica's, or another stretch of time)."""
        self.requests += other.requests
        self.errors += other.errors
        self.scored += other.scored
        self.approved += other.approved
        self.score_sum += other.score_sum
        self.latency_counts += other.latency_counts
        self.batch_latency_counts += other.batch_latency_counts
        self.score_counts += other.score_counts
        self.outcomes.merge(other.outcomes)
        if other.inputs is not None:
            self.add_inputs(other.inputs)

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    @property
    def mean_score(self) -> float:
        return self.score_sum / self.scored if self.scored else 0.0

    @property
    def calls(self) -> int:
        """Calls that scored one application (the ones :meth:`latency_ms` reads)."""
        return int(self.latency_counts.sum())

    def latency_ms(self, q: float) -> float:
        """The ``q`` quantile of the single-application calls' latencies (0 without any)."""
        return quantile_ms(self.latency_counts, q)

    def batch_latency_ms(self, q: float) -> float:
        """The ``q`` quantile of the batch calls' latencies, per call (0 without any)."""
        return quantile_ms(self.batch_latency_counts, q)

    def auc(self) -> float:
        """AUC-ROC of the labelled scores on the score grid; NaN without both classes."""
        return auc_delong(self.outcomes.defaulted, self.outcomes.repaid).auc

    def to_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "errors": self.errors,
            "scored": self.scored,
            "approved": self.approved,
            "score_sum": self.score_sum,
            "latency": _sparse(self.latency_counts),
            "batch_latency": _sparse(self.batch_latency_counts),
            "scores": _sparse(self.score_counts),
            "outcomes": self.outcomes.to_dict(),
            "inputs": self.inputs.to_json() if self.inputs is not None else None,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> VariantWindow:
        return cls(
            requests=int(doc["requests"]),
            errors=int(doc["errors"]),
            scored=int(doc["scored"]),
            approved=int(doc.get("approved", 0)),  # absent from windows published before it existed
            score_sum=float(doc["score_sum"]),
            latency_counts=_dense(doc["latency"], LATENCY_EDGES_MS),
            # absent from windows published before batch calls were counted apart
            batch_latency_counts=_dense(doc.get("batch_latency") or {}, LATENCY_EDGES_MS),
            score_counts=_dense(doc["scores"], SCORE_EDGES),
            # absent from windows published before labels were counted
            outcomes=ArmCounts.from_dict(doc["outcomes"]) if doc.get("outcomes") else ArmCounts(),
            inputs=drift_core.Window.from_json(doc["inputs"]) if doc.get("inputs") else None,
        )


def score_drift(stable: VariantWindow, canary: VariantWindow) -> tuple[float, float]:
    """PSI and KL(canary || stable) of the score histograms, over :data:`SCORE_BINS` bins on
    stable's quantiles (the score buckets grouped where stable's cumulative share crosses each
    quantile), computed by drift_core."""
    reference = stable.score_counts.astype(np.float64)
    cumulative = np.cumsum(reference) / reference.sum()
    quantiles = np.arange(1, SCORE_BINS) / SCORE_BINS
    starts = np.unique(np.r_[0, np.searchsorted(cumulative, quantiles, side="left") + 1])
    starts = starts[starts < len(reference)]
    expected = np.add.reduceat(reference, starts)
    actual = np.add.reduceat(canary.score_counts.astype(np.float64), starts)
    return float(drift_core.psi(expected, actual)), float(drift_core.kl(actual, expected))


def score_drift_breach(metrics: Mapping[str, float], limits: Thresholds) -> str | None:
    """The reason when the window's score drift against stable (``score_psi``, ``score_kl`` of
    :func:`analyze`'s figures) breaches ``limits``; None within them or when it was not measured."""
    if "score_psi" not in metrics:
        return None
    psi, kl = metrics["score_psi"], metrics["score_kl"]
    if psi > limits.max_score_psi:
        return f"score distribution drifted from stable: PSI {psi:.3f} > {limits.max_score_psi}"
    if kl > limits.max_score_kl:
        return f"score distribution drifted from stable: KL {kl:.3f} > {limits.max_score_kl}"
    return None


@dataclass(frozen=True)
class Verdict:
    """The decision of one analysis, with the figures it was based on."""

    action: Action
    reason: str
    metrics: dict[str, float]


def analyze(
    stable: VariantWindow,
    canary: VariantWindow,
    limits: Thresholds,
    min_requests: int,
    *,
    score_drift_gates: bool = True,
) -> Verdict:
    """Compares ``canary`` with ``stable`` (same window) against ``limits``. The score drift against
    stable is always measured; it rolls back here only with ``score_drift_gates`` (for a candidate
    without a reference profile; otherwise the controller weighs it after the model checks,
    :func:`finpredict.gateway.canary_stats.combine`). Latency is reported (``*_p99_ms`` of the
    single-application calls, ``*_calls`` of them, ``*_batch_p99_ms`` per batch call); the
    statistics judge it (:mod:`finpredict.gateway.stats.latency`)."""
    metrics: dict[str, float] = {
        "stable_requests": stable.requests,
        "canary_requests": canary.requests,
        "stable_error_rate": stable.error_rate,
        "canary_error_rate": canary.error_rate,
        "stable_calls": stable.calls,
        "canary_calls": canary.calls,
        "stable_p99_ms": stable.latency_ms(0.99),
        "canary_p99_ms": canary.latency_ms(0.99),
        "stable_batch_p99_ms": stable.batch_latency_ms(0.99),
        "canary_batch_p99_ms": canary.batch_latency_ms(0.99),
    }
    if canary.requests < min_requests or stable.requests < min_requests:
        return Verdict(
            "wait",
            f"not enough traffic yet: canary {canary.requests}/{min_requests}, "
            f"stable {stable.requests}/{min_requests} requests in this window",
            metrics,
        )
    increase = canary.error_rate - stable.error_rate
    if increase > limits.max_error_rate_increase:
        return Verdict(
            "rollback",
            f"error rate {canary.error_rate:.2%} vs stable {stable.error_rate:.2%} "
            f"(+{increase:.2%} > +{limits.max_error_rate_increase:.2%})",
            metrics,
        )
    enough_scores = max(1, min_requests // 2)
    if stable.scored >= enough_scores and canary.scored >= enough_scores:
        metrics["score_psi"], metrics["score_kl"] = score_drift(stable, canary)
        breach = score_drift_breach(metrics, limits)
        if score_drift_gates and breach:
            return Verdict("rollback", breach, metrics)
    if stable.labeled >= limits.min_labeled and canary.labeled >= limits.min_labeled:
        # The window's AUCs, for the record: the statistics' always-valid AUC test (margin max_auc_drop)
        # decides on every label since the start.
        metrics["stable_auc"], metrics["canary_auc"] = stable.auc(), canary.auc()
    if canary.calls and stable.calls:
        latency = (
            f"p99 {metrics['canary_p99_ms']:.1f} vs {metrics['stable_p99_ms']:.1f} ms per application "
            f"({canary.calls}/{stable.calls} calls)"
        )
    else:
        latency = (
            f"batch p99 {metrics['canary_batch_p99_ms']:.1f} vs {metrics['stable_batch_p99_ms']:.1f} ms "
            "per call (no single-application calls on one variant)"
        )
    return Verdict(
        "advance",
        f"within limits: errors {canary.error_rate:.2%} vs {stable.error_rate:.2%}, {latency}"
        + (f", score PSI {metrics['score_psi']:.3f} vs stable" if "score_psi" in metrics else ""),
        metrics,
    )
