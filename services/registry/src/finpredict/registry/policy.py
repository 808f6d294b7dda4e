"""Promotion policies: what a version needs before ``production`` may point at it.

A policy names the required gates, each with the registry's own comparator and threshold (the
threshold a registering client compared with does not count), the required lineage, and the
hand-off (:class:`HandOff`): whether a newly registered version that satisfies the policy enters
a canary rollout by itself (the gateway's elected rollout controller starts it). A model
without a policy of its own gets :data:`DEFAULT_POLICY`: the case study's four quality gates (the
names the pipeline's ``evaluate`` stage reports) and every lineage requirement. Policies are
stored as JSON (:meth:`Policy.to_json`); the repository evaluates them on every move of
``production`` (:func:`problems`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

# Gate comparators (the values of finpredict.common.v1.Comparator).
COMPARATOR_GE = 1
COMPARATOR_LE = 2
GIT_COMMIT = "git_commit"
DATA_MD5 = "data_md5"
DVC_LOCK_SHA256 = "dvc_lock_sha256"
REFERENCE_PROFILE = "reference_profile"
# Every lineage requirement, in display order, with what it means.
LINEAGE_REQUIREMENTS: dict[str, str] = {
    GIT_COMMIT: "git commit of the training code",
    DATA_MD5: "DVC md5 of the training data",
    DVC_LOCK_SHA256: "sha256 of dvc.lock",
    REFERENCE_PROFILE: "reference profile",
}
_OPS = {COMPARATOR_GE: ">=", COMPARATOR_LE: "<="}
# Hand-off modes (the values of finpredict.registry.v1.HandOffMode by name).
HAND_OFF_OFF = "off"
HAND_OFF_CANARY = "canary"


class GateResult(Protocol):
    """A recorded gate result (the repository's ``GateRow``)."""

    name: str
    value: float
    passed: bool


@dataclass(frozen=True)
class PolicyGate:
    """A required gate: its newest result must satisfy ``value <comparator> threshold``."""

    name: str
    comparator: int
    threshold: float

    def passes(self, value: float) -> bool:
        return value >= self.threshold if self.comparator == COMPARATOR_GE else value <= self.threshold

    def rule(self) -> str:
        return f"{_OPS[self.comparator]} {self.threshold:g}"


@dataclass(frozen=True)
class HandOff:
    """What happens by itself to a new version that satisfies the policy: ``off``, or ``canary``
    (the gateway starts a canary rollout with these settings; 0 and empty mean the gateway's
    defaults). ``after_version``: only later versions are handed off (set by the registry to the
    model's newest version when the hand-off is turned on)."""

    mode: str = HAND_OFF_OFF
    steps: tuple[float, ...] = ()
    analysis_interval_s: float = 0.0
    min_requests_per_step: int = 0
    thresholds: tuple[tuple[str, float], ...] = ()  # (AnalysisThresholds field, value), non-zero ones
    after_version: int = 0

    @property
    def on(self) -> bool:
        return self.mode != HAND_OFF_OFF

    def to_doc(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "steps": list(self.steps),
            "analysis_interval_s": self.analysis_interval_s,
            "min_requests_per_step": self.min_requests_per_step,
            "thresholds": dict(self.thresholds),
            "after_version": self.after_version,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> HandOff:
        return cls(
            mode=str(doc["mode"]),
            steps=tuple(float(x) for x in doc["steps"]),
            analysis_interval_s=float(doc["analysis_interval_s"]),
            min_requests_per_step=int(doc["min_requests_per_step"]),
            thresholds=tuple((str(k), float(v)) for k, v in sorted(doc["thresholds"].items())),
            after_version=int(doc["after_version"]),
        )

    def describe(self) -> str:
        """One line for the audit log and the CLI."""
        if not self.on:
            return "off"
        steps = ", ".join(f"{s:g}" for s in self.steps) or "the gateway's default"
        limits = ", ".join(f"{k} {v:g}" for k, v in self.thresholds) or "the gateway's defaults"
        every = f"{self.analysis_interval_s:g} s" if self.analysis_interval_s else "default"
        return (
            f"{self.mode} for versions after v{self.after_version} (steps {steps}; analysis every "
            f"{every}; min requests {self.min_requests_per_step or 'default'}; limits {limits})"
        )


@dataclass(frozen=True)
class Policy:
    """A model's promotion policy."""

    gates: tuple[PolicyGate, ...]
    required_lineage: tuple[str, ...]
    hand_off: HandOff = HandOff()

    def to_json(self) -> str:
        return json.dumps(
            {
                "gates": [
                    {"name": g.name, "comparator": g.comparator, "threshold": g.threshold} for g in self.gates
                ],
                "required_lineage": list(self.required_lineage),
                "hand_off": self.hand_off.to_doc(),
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> Policy:
        doc = json.loads(text)
        return cls(
            gates=tuple(
                PolicyGate(str(g["name"]), int(g["comparator"]), float(g["threshold"])) for g in doc["gates"]
            ),
            required_lineage=tuple(str(r) for r in doc["required_lineage"]),
            # absent from policies stored before the hand-off existed: off
            hand_off=HandOff.from_doc(doc["hand_off"]) if "hand_off" in doc else HandOff(),
        )


DEFAULT_POLICY = Policy(
    gates=(
        PolicyGate("auc_roc", COMPARATOR_GE, 0.82),
        PolicyGate("ece", COMPARATOR_LE, 0.05),
        PolicyGate("compute_p99_ms", COMPARATOR_LE, 50.0),
        PolicyGate("demographic_parity_diff", COMPARATOR_LE, 0.05),
    ),
    required_lineage=tuple(LINEAGE_REQUIREMENTS),
)


def missing_lineage(lineage_json: str, reference_profile: bytes, required: Sequence[str]) -> list[str]:
    """The required lineage a version lacks, in ``required`` order."""
    doc = json.loads(lineage_json) if lineage_json else {}
    present = {
        GIT_COMMIT: bool(doc.get(GIT_COMMIT)),
        DATA_MD5: bool(doc.get(DATA_MD5)),
        DVC_LOCK_SHA256: bool(doc.get(DVC_LOCK_SHA256)),
        REFERENCE_PROFILE: bool(reference_profile),
    }
    return [r for r in required if not present.get(r, False)]


def problems(
    policy: Policy, gates: Sequence[GateResult], lineage_json: str, reference_profile: bytes
) -> list[str]:
    """Why a version (its newest gate result per name, lineage and profile) may not become
    ``production`` under ``policy``: one line per kind of problem, empty when it may."""
    newest = {g.name: g for g in gates}
    required = {g.name for g in policy.gates}
    out: list[str] = []
    missing = [g.name for g in policy.gates if g.name not in newest]
    if missing:
        out.append(f"missing required gate(s): {', '.join(missing)}")
    failing = [
        f"{g.name}={newest[g.name].value:g} (the registry requires {g.rule()})"
        for g in policy.gates
        if g.name in newest and not g.passes(newest[g.name].value)
    ]
    if failing:
        out.append(f"gate(s) failing the registry's thresholds: {', '.join(failing)}")
    other = [g.name for g in gates if g.name not in required and not g.passed]
    if other:
        out.append(f"failing gates: {', '.join(other)}")
    if not gates and not policy.gates:
        out.append("no gate results")
    lacking = missing_lineage(lineage_json, reference_profile, policy.required_lineage)
    if lacking:
        out.append("missing lineage: " + ", ".join(f"{r} ({LINEAGE_REQUIREMENTS[r]})" for r in lacking))
    return out
