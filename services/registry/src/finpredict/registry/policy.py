"""Promotion policies: what a version needs before ``production`` may point at it.

A policy names the required gates, each with the registry's own comparator and threshold (the
threshold a registering client compared with does not count), and the required lineage. A model
without a policy of its own gets :data:`DEFAULT_POLICY`: the case study's four quality gates (the
names the pipeline's ``evaluate`` stage reports) and every lineage requirement. Policies are
stored as JSON (:meth:`Policy.to_json`); the repository evaluates them on every move of
``production`` (:func:`problems`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

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
class Policy:
    """A model's promotion policy."""

    gates: tuple[PolicyGate, ...]
    required_lineage: tuple[str, ...]

    def to_json(self) -> str:
        return json.dumps(
            {
                "gates": [
                    {"name": g.name, "comparator": g.comparator, "threshold": g.threshold} for g in self.gates
                ],
                "required_lineage": list(self.required_lineage),
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
        )


DEFAULT_POLICY = Policy(
    gates=(
        PolicyGate("auc_roc", COMPARATOR_GE, 0.82),
        PolicyGate("ece", COMPARATOR_LE, 0.05),
        PolicyGate("latency_p99_ms", COMPARATOR_LE, 50.0),
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
