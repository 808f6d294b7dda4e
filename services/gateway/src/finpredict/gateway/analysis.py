"""Canary analysis: compare the canary with stable over the same window and decide.

Both variants are measured in the same analysis window (so traffic mix and time of day are
the same for both, which Flagger and Argo Rollouts users have asked for for years). A decision
is one of:

- ``wait``: not enough requests on either variant yet (never pass by default),
- ``rollback``: a limit is breached; the reason names the metric, both values and the limit,
- ``advance``: every limit holds.

Score drift is the PSI and KL of the canary's scores against stable's, binned on stable's
quantiles by drift_core: a candidate whose score distribution moved is caught before any
label arrives.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

import drift_core
from finpredict import metrics

Action = Literal["wait", "advance", "rollback"]
# Latency and score samples kept per variant and window (uniform reservoir beyond this).
MAX_SAMPLES = 50_000


def _reservoir(samples: list[float], value: float, seen: int, rng: random.Random) -> None:
    if len(samples) < MAX_SAMPLES:
        samples.append(value)
    else:
        j = rng.randrange(seen)
        if j < MAX_SAMPLES:
            samples[j] = value


@dataclass(frozen=True)
class Thresholds:
    """Limits a canary must stay within (defaults from the seed's SLOs and alert rules)."""

    max_error_rate_increase: float = 0.01
    max_p99_latency_ms: float = 50.0
    max_p99_latency_ratio: float = 1.5
    max_score_psi: float = 0.25
    max_score_kl: float = 0.1
    max_auc_drop: float = 0.02
    min_labeled: int = 200


@dataclass
class VariantWindow:
    """What one variant did during the current analysis window."""

    requests: int = 0
    errors: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    labeled: list[tuple[float, bool]] = field(default_factory=list)
    scored: int = 0
    _rng: random.Random = field(default_factory=lambda: random.Random(0), repr=False)

    def record(self, *, ok: bool, latency_ms: float, score: float | None = None) -> None:
        self.requests += 1
        if not ok:
            self.errors += 1
        _reservoir(self.latencies_ms, latency_ms, self.requests, self._rng)
        if ok and score is not None:
            self.scored += 1
            _reservoir(self.scores, score, self.scored, self._rng)

    def record_outcome(self, score: float, defaulted: bool) -> None:
        self.labeled.append((score, defaulted))

    @property
    def error_rate(self) -> float:
        return self.errors / self.requests if self.requests else 0.0

    def latency_ms(self, q: float) -> float:
        return float(np.quantile(self.latencies_ms, q)) if self.latencies_ms else 0.0

    def auc(self) -> float:
        """AUC-ROC of the labeled scores (:func:`finpredict.metrics.auc_roc`); NaN without both classes."""
        return metrics.auc_roc([d for _, d in self.labeled], [s for s, _ in self.labeled])


@dataclass(frozen=True)
class Verdict:
    """The decision of one analysis, with the figures it was based on."""

    action: Action
    reason: str
    metrics: dict[str, float]


def analyze(stable: VariantWindow, canary: VariantWindow, limits: Thresholds, min_requests: int) -> Verdict:
    """Compares ``canary`` with ``stable`` (same window) against ``limits``."""
    metrics: dict[str, float] = {
        "stable_requests": stable.requests,
        "canary_requests": canary.requests,
        "stable_error_rate": stable.error_rate,
        "canary_error_rate": canary.error_rate,
        "stable_p99_ms": stable.latency_ms(0.99),
        "canary_p99_ms": canary.latency_ms(0.99),
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
    c99, s99 = metrics["canary_p99_ms"], metrics["stable_p99_ms"]
    if c99 > limits.max_p99_latency_ms:
        return Verdict(
            "rollback", f"p99 latency {c99:.1f} ms > SLO {limits.max_p99_latency_ms:.1f} ms", metrics
        )
    if s99 > 0 and c99 > limits.max_p99_latency_ratio * s99:
        return Verdict(
            "rollback",
            f"p99 latency {c99:.1f} ms is {c99 / s99:.2f}x stable's {s99:.1f} ms "
            f"(> {limits.max_p99_latency_ratio:.2f}x)",
            metrics,
        )
    if len(stable.scores) >= min_requests // 2 and len(canary.scores) >= min_requests // 2:
        profile = drift_core.Profile.fit(np.asarray(stable.scores, dtype=np.float64), feature_names=["score"])
        report = profile.score(np.asarray(canary.scores, dtype=np.float64))
        metrics["score_psi"] = float(report.psi[0])
        metrics["score_kl"] = float(report.kl[0])
        if metrics["score_psi"] > limits.max_score_psi:
            return Verdict(
                "rollback",
                f"score distribution drifted from stable: "
                f"PSI {metrics['score_psi']:.3f} > {limits.max_score_psi}",
                metrics,
            )
        if metrics["score_kl"] > limits.max_score_kl:
            return Verdict(
                "rollback",
                f"score distribution drifted from stable: "
                f"KL {metrics['score_kl']:.3f} > {limits.max_score_kl}",
                metrics,
            )
    if len(stable.labeled) >= limits.min_labeled and len(canary.labeled) >= limits.min_labeled:
        metrics["stable_auc"], metrics["canary_auc"] = stable.auc(), canary.auc()
        drop = metrics["stable_auc"] - metrics["canary_auc"]
        if drop > limits.max_auc_drop:
            return Verdict(
                "rollback",
                f"AUC {metrics['canary_auc']:.3f} vs stable {metrics['stable_auc']:.3f} "
                f"(-{drop:.3f} > -{limits.max_auc_drop})",
                metrics,
            )
    return Verdict(
        "advance",
        f"within limits: errors {canary.error_rate:.2%} vs {stable.error_rate:.2%}, "
        f"p99 {c99:.1f} vs {s99:.1f} ms"
        + (f", score PSI {metrics['score_psi']:.3f}" if "score_psi" in metrics else ""),
        metrics,
    )
