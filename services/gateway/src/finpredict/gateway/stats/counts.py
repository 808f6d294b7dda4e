"""What the statistics read: mergeable per-arm counts, one set per stratum (rollout step).

Scores are counted on the gateway's grid (1,000 buckets of 0.001 over [0, 1], the same edges
as :data:`finpredict.gateway.analysis.SCORE_EDGES`; bucket ``i`` holds ``[i/1000, (i+1)/1000)``,
the last one includes 1.0); a score is read back as its bucket's midpoint, within 0.0005 of the
exact value. Labelled rows (delayed outcomes joined by request id) are counted on the same grid,
split by outcome, which is all that AUC, its DeLong variance and the calibration checks need.

"Approved" means ``score < threshold`` (:func:`finpredict.metrics.approved`); the default rate
of an arm is its share of defaults among its *approved* labelled rows, the rate the model's
decisions are answerable for (a random split gives both arms the same applicants, so the
default rate of all applicants cannot differ between arms).

Latencies of the calls that scored one application are counted per call in log-spaced buckets
2.5 % wide (:data:`LATENCY_EDGES_MS`, the gateway's window grid too): all that the latency tests
(:mod:`.latency`) need.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from finpredict import metrics

SCORE_BUCKETS = 1000
# Inner bucket edges (the same as finpredict.gateway.analysis.SCORE_EDGES).
SCORE_GRID: npt.NDArray[np.float64] = np.linspace(0.0, 1.0, SCORE_BUCKETS + 1)[1:-1]
MIDPOINTS: npt.NDArray[np.float64] = (np.arange(SCORE_BUCKETS) + 0.5) / SCORE_BUCKETS
# Latency bucket edges in ms, each 2.5 % above the last (10 us to 10 min): a quantile read from
# the buckets is within about 1.3 % of the exact one. Bucket i holds [edges[i-1], edges[i]).
LATENCY_EDGES_MS: npt.NDArray[np.float64] = np.geomspace(0.01, 600_000.0, 730)
LATENCY_BUCKETS = len(LATENCY_EDGES_MS) + 1
Counts = npt.NDArray[np.int64]


def _zeros(size: int = SCORE_BUCKETS) -> Counts:
    return np.zeros(size, dtype=np.int64)


def _latency_zeros() -> Counts:
    return _zeros(LATENCY_BUCKETS)


def latency_bucket(latency_ms: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """The latency bucket of each value in ms (left-closed buckets)."""
    return np.searchsorted(LATENCY_EDGES_MS, np.asarray(latency_ms, dtype=np.float64), side="right")


def bucket_of(scores: npt.ArrayLike) -> npt.NDArray[np.intp]:
    """The grid bucket of each score (left-closed buckets, as drift_core.histogram_counts)."""
    return np.searchsorted(SCORE_GRID, np.asarray(scores, dtype=np.float64), side="right")


def _sparse(counts: Counts) -> dict[str, int]:
    return {str(i): int(counts[i]) for i in np.flatnonzero(counts)}


def _dense(sparse: Mapping[str, int], size: int = SCORE_BUCKETS) -> Counts:
    counts = _zeros(size)
    for i, n in sparse.items():
        counts[int(i)] = int(n)
    return counts


def histogram(scores: npt.ArrayLike) -> Counts:
    """Counts of ``scores`` per grid bucket."""
    return np.bincount(bucket_of(scores), minlength=SCORE_BUCKETS).astype(np.int64)


@dataclass
class ArmCounts:
    """One arm (variant) over one stratum: request outcomes, scores, decisions and labels."""

    requests: int = 0
    errors: int = 0
    approved: int = 0  # of the scored requests
    score_counts: Counts = field(default_factory=_zeros)
    defaulted: Counts = field(default_factory=_zeros)  # labelled rows that defaulted, per bucket
    repaid: Counts = field(default_factory=_zeros)  # labelled rows that did not, per bucket
    labeled_approved: int = 0
    labeled_approved_defaults: int = 0
    # calls that scored one application, per latency bucket (batch calls are not counted here)
    latency_counts: Counts = field(default_factory=_latency_zeros)

    @property
    def scored(self) -> int:
        return int(self.score_counts.sum())

    @property
    def calls(self) -> int:
        """Single-application calls with a latency counted."""
        return int(self.latency_counts.sum())

    @property
    def labeled(self) -> int:
        return int(self.defaulted.sum() + self.repaid.sum())

    def add_requests(self, *, requests: int, errors: int, scores: npt.ArrayLike, threshold: float) -> None:
        """``requests`` served (``errors`` of them failed) and the scores of the others."""
        s = np.asarray(scores, dtype=np.float64)
        self.requests += requests
        self.errors += errors
        self.approved += int(metrics.approved(s, threshold).sum())
        self.score_counts += histogram(s)

    def add_outcomes(self, scores: npt.ArrayLike, defaulted: npt.ArrayLike, threshold: float) -> None:
        """Delayed labels: each row's served score and whether the applicant defaulted."""
        s = np.asarray(scores, dtype=np.float64)
        y = np.asarray(defaulted).astype(bool)
        self.defaulted += histogram(s[y])
        self.repaid += histogram(s[~y])
        ok = metrics.approved(s, threshold)
        self.labeled_approved += int(ok.sum())
        self.labeled_approved_defaults += int((ok & y).sum())

    def merge(self, other: ArmCounts) -> None:
        """Adds ``other``'s counts (another replica's, or a later window of the same stratum)."""
        self.requests += other.requests
        self.errors += other.errors
        self.approved += other.approved
        self.score_counts += other.score_counts
        self.defaulted += other.defaulted
        self.repaid += other.repaid
        self.labeled_approved += other.labeled_approved
        self.labeled_approved_defaults += other.labeled_approved_defaults
        self.latency_counts += other.latency_counts

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON (bucket counts sparse: ``{bucket: count}`` of the non-empty buckets)."""
        return {
            "requests": self.requests,
            "errors": self.errors,
            "approved": self.approved,
            "scores": _sparse(self.score_counts),
            "defaulted": _sparse(self.defaulted),
            "repaid": _sparse(self.repaid),
            "labeled_approved": self.labeled_approved,
            "labeled_approved_defaults": self.labeled_approved_defaults,
            "latency": _sparse(self.latency_counts),
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> ArmCounts:
        return cls(
            requests=int(doc["requests"]),
            errors=int(doc["errors"]),
            approved=int(doc["approved"]),
            score_counts=_dense(doc["scores"]),
            defaulted=_dense(doc["defaulted"]),
            repaid=_dense(doc["repaid"]),
            labeled_approved=int(doc["labeled_approved"]),
            labeled_approved_defaults=int(doc["labeled_approved_defaults"]),
            # absent from counts stored before latencies were counted
            latency_counts=_dense(doc.get("latency") or {}, LATENCY_BUCKETS),
        )


@dataclass
class Stratum:
    """The arms over a stretch with one configured split (a rollout step): ``weights[arm]`` is
    the share of traffic the router was told to send to ``arm``."""

    weights: dict[str, float]
    arms: dict[str, ArmCounts]

    @staticmethod
    def canary(weight: float, stable: ArmCounts | None = None, canary: ArmCounts | None = None) -> Stratum:
        """A stable/canary stratum with ``weight`` to the canary."""
        return Stratum(
            {"stable": 1.0 - weight, "canary": weight},
            {"stable": stable or ArmCounts(), "canary": canary or ArmCounts()},
        )

    def to_dict(self) -> dict[str, Any]:
        return {"weights": dict(self.weights), "arms": {a: c.to_dict() for a, c in self.arms.items()}}

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Stratum:
        return cls(
            {a: float(w) for a, w in doc["weights"].items()},
            {a: ArmCounts.from_dict(c) for a, c in doc["arms"].items()},
        )


def pooled(strata: Sequence[Stratum], arm: str) -> ArmCounts:
    """One arm's counts summed over ``strata`` (for what needs no stratification)."""
    total = ArmCounts()
    for stratum in strata:
        if arm in stratum.arms:
            total.merge(stratum.arms[arm])
    return total
