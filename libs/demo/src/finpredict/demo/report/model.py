"""The demo report's data: what the demo measured, as it fills it in and saves it as JSON.

:class:`DemoReport` round-trips through JSON (``DemoReport.from_json(r.to_json()) == r``); the
constants are what the page compares the measured numbers against (the case study's targets).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

PSI_ALERT = 0.25
P99_GATE_MS = 50.0
P99_ALERT_MS = 100.0
DEPLOY_TARGET_S = 2 * 24 * 3600.0  # the case study: "under 2 days"
ROLLBACK_TARGET_S = 10 * 60.0  # "automated (minutes)"

# ---------------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------------


@dataclass
class Gate:
    """One quality gate of a version: ``value`` compared with ``threshold`` by ``comparator``."""

    name: str
    value: float
    threshold: float
    comparator: str  # ">=" or "<="
    passed: bool


@dataclass
class VersionRow:
    version: int
    created_at: str
    gates: list[Gate] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class RolloutDecision:
    """One decision of the rollout controller; ``time_s`` counts from the rollout's start."""

    time_s: float
    step: int
    weight: float  # canary traffic share after the decision, in percent (0-100)
    verdict: str  # start, promote, hold, rollback, abort, complete ...
    reason: str = ""
    # For an analysis: the figures and statistics that drove it, in one line
    # (finpredict.common.rollout_statistics.decision_statistics).
    statistics: str = ""


@dataclass
class Rollout:
    id: str
    model: str
    baseline_version: int
    candidate_version: int
    outcome: str  # completed, rolled_back, aborted, running
    decisions: list[RolloutDecision] = field(default_factory=list)


@dataclass
class ScoreSamples:
    """Scores (probability of default) answered by the stable and the canary variant."""

    stable: list[float] = field(default_factory=list)
    canary: list[float] = field(default_factory=list)
    stable_label: str = "stable"
    canary_label: str = "canary"
    threshold: float | None = None  # the decision threshold, drawn when set


@dataclass
class LatencyPhase:
    """Latency of one phase of the demo: raw ``samples_ms``, or ``p50_ms``/``p99_ms`` if summarised."""

    phase: str
    samples_ms: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None

    def percentiles(self) -> tuple[float, float] | None:
        if self.p50_ms is not None and self.p99_ms is not None:
            return self.p50_ms, self.p99_ms
        finite = sorted(x for x in self.samples_ms if math.isfinite(x))
        if not finite:
            return None
        return quantile(finite, 0.5), quantile(finite, 0.99)


@dataclass
class Alert:
    rule: str
    day: float  # day index of the replay (fractions for hourly rules)
    value: float
    threshold: float
    feature: str = ""


@dataclass
class Measured:
    """The headline numbers; ``None`` where the run did not measure one."""

    commit_to_production_s: float | None = None
    time_to_detect_h: float | None = None
    time_to_rollback_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class Links:
    """Where to look further."""

    wandb_dir: str = ""  # W&B offline runs (``wandb sync`` uploads them)
    prometheus_url: str = ""
    other: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoReport:
    """Everything the report shows. JSON round trip: ``DemoReport.from_json(r.to_json()) == r``."""

    model: str
    generated_at: str
    title: str = "finpredict demo report"
    versions: list[VersionRow] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    drift: dict[int, dict[str, float]] = field(default_factory=dict)  # day index -> feature -> PSI
    psi_threshold: float = PSI_ALERT
    scores: ScoreSamples = field(default_factory=ScoreSamples)
    latency: list[LatencyPhase] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    measured: Measured = field(default_factory=Measured)
    links: Links = field(default_factory=Links)

    def to_json(self) -> str:
        """Strict JSON (no NaN: non-finite PSI values and scores are left out)."""
        data = asdict(self)
        data["drift"] = {
            str(day): {f: v for f, v in feats.items() if math.isfinite(v)}
            for day, feats in self.drift.items()
        }
        for key in ("stable", "canary"):
            data["scores"][key] = [x for x in data["scores"][key] if math.isfinite(x)]
        return json.dumps(data, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DemoReport:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DemoReport:
        return cls(
            model=str(d["model"]),
            generated_at=str(d["generated_at"]),
            title=str(d.get("title", "finpredict demo report")),
            versions=[
                VersionRow(
                    version=int(v["version"]),
                    created_at=str(v["created_at"]),
                    gates=[Gate(**g) for g in v.get("gates", [])],
                    aliases=list(v.get("aliases", [])),
                    note=str(v.get("note", "")),
                )
                for v in d.get("versions", [])
            ],
            rollouts=[
                Rollout(
                    id=str(r["id"]),
                    model=str(r["model"]),
                    baseline_version=int(r["baseline_version"]),
                    candidate_version=int(r["candidate_version"]),
                    outcome=str(r["outcome"]),
                    decisions=[RolloutDecision(**x) for x in r.get("decisions", [])],
                )
                for r in d.get("rollouts", [])
            ],
            drift={
                int(day): {str(f): float(v) for f, v in feats.items()}
                for day, feats in d.get("drift", {}).items()
            },
            psi_threshold=float(d.get("psi_threshold", PSI_ALERT)),
            scores=ScoreSamples(**d.get("scores", {})),
            latency=[LatencyPhase(**p) for p in d.get("latency", [])],
            alerts=[Alert(**a) for a in d.get("alerts", [])],
            measured=Measured(**d.get("measured", {})),
            links=Links(**d.get("links", {})),
        )


def quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
