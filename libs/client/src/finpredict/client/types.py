"""The client's own types: applications in, results out (no protobuf in the caller's code)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass

from finpredict.api.common.v1 import types_pb2
from finpredict.api.scoring.v1 import scoring_pb2

FeatureInput = float | int | str | None
"""A feature value: a number, a category, or ``None`` for "missing"."""


class Decision(enum.StrEnum):
    """The credit decision at the answering version's threshold."""

    UNSPECIFIED = "unspecified"
    APPROVE = "approve"
    DECLINE = "decline"


class Variant(enum.StrEnum):
    """Which routing variant answered."""

    UNSPECIFIED = "unspecified"
    STABLE = "stable"
    CANARY = "canary"
    EXPERIMENT = "experiment"


_DECISIONS = {
    scoring_pb2.DECISION_APPROVE: Decision.APPROVE,
    scoring_pb2.DECISION_DECLINE: Decision.DECLINE,
}
_VARIANTS = {
    scoring_pb2.VARIANT_STABLE: Variant.STABLE,
    scoring_pb2.VARIANT_CANARY: Variant.CANARY,
    scoring_pb2.VARIANT_EXPERIMENT: Variant.EXPERIMENT,
}


@dataclass(frozen=True)
class Application:
    """One credit application for :meth:`ScoringClient.score_batch`."""

    entity_id: str
    features: Mapping[str, FeatureInput]
    request_id: str | None = None


@dataclass(frozen=True)
class ReasonCode:
    """One adverse-action reason, most adverse first in :attr:`ScoreResult.reason_codes`."""

    code: str
    feature: str
    contribution: float
    description: str


@dataclass(frozen=True)
class ScoreResult:
    """The score of one application and who answered it."""

    score: float
    """Probability of default in [0, 1]."""
    decision: Decision
    threshold: float
    model: str
    version: int
    variant: Variant
    arm: str
    reason_codes: tuple[ReasonCode, ...]
    request_id: str
    trace_id: str
    entity_id: str = ""

    @property
    def approved(self) -> bool:
        return self.decision is Decision.APPROVE


def feature_values(features: Mapping[str, FeatureInput]) -> dict[str, types_pb2.FeatureValue]:
    """Converts plain feature values to the wire type (``None`` means "missing")."""
    out: dict[str, types_pb2.FeatureValue] = {}
    for name, value in features.items():
        if value is None:
            out[name] = types_pb2.FeatureValue()
        elif isinstance(value, str):
            out[name] = types_pb2.FeatureValue(category=value)
        elif isinstance(value, int | float):
            out[name] = types_pb2.FeatureValue(number=float(value))
        else:
            raise TypeError(
                f'features["{name}"]: expected a number, a string or None, got {type(value).__name__}'
            )
    return out


def result_from_proto(score: scoring_pb2.Score, trace_id: str) -> ScoreResult:
    return ScoreResult(
        score=score.score,
        decision=_DECISIONS.get(score.decision, Decision.UNSPECIFIED),
        threshold=score.threshold,
        model=score.model.name,
        version=score.model.version,
        variant=_VARIANTS.get(score.variant, Variant.UNSPECIFIED),
        arm=score.arm,
        reason_codes=tuple(
            ReasonCode(code=r.code, feature=r.feature, contribution=r.contribution, description=r.description)
            for r in score.reason_codes
        ),
        request_id=score.request_id,
        trace_id=trace_id,
        entity_id=score.entity_id,
    )
