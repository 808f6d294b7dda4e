"""The client's own types: applications in, results out (no protobuf in the caller's code)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

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
    # attributes the decision must not use (e.g. the protected attribute for fairness monitoring):
    # logged with the prediction, never sent to the model
    attributes: Mapping[str, str] | None = None


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


@dataclass(frozen=True)
class Outcome:
    """What became of one scored application, for :meth:`ScoringClient.record_outcomes`.

    ``request_id`` is the one the score was answered with (:attr:`ScoreResult.request_id`);
    ``observed_at`` (timezone-aware) defaults to the gateway's clock.
    """

    request_id: str
    defaulted: bool
    observed_at: datetime | None = None
    entity_id: str = ""


@dataclass(frozen=True)
class OutcomeSummary:
    """What the monitor made of recorded outcomes."""

    matched: int
    """Matched to their logged prediction: they count in the monitor's accuracy."""
    unmatched: int
    """Their prediction is not logged yet: kept, and matched when it arrives (or, after the
    monitor's bounded wait, counted as orphaned)."""
    duplicates: int
    """Ignored: their request already had an outcome (a replay is never counted twice)."""

    def __add__(self, other: OutcomeSummary) -> OutcomeSummary:
        return OutcomeSummary(
            self.matched + other.matched, self.unmatched + other.unmatched, self.duplicates + other.duplicates
        )

    @property
    def total(self) -> int:
        return self.matched + self.unmatched + self.duplicates


def outcome_to_proto(i: int, outcome: Outcome) -> scoring_pb2.Outcome:
    """The wire outcome; ``TypeError``/``ValueError`` name ``outcomes[i]`` before anything is sent."""
    if not isinstance(outcome, Outcome):
        raise TypeError(f"outcomes[{i}]: expected an Outcome, got {type(outcome).__name__}")
    if not outcome.request_id:
        raise ValueError(f"outcomes[{i}].request_id: required (the request id the score was answered with)")
    if outcome.defaulted not in (0, 1):
        raise TypeError(f"outcomes[{i}].defaulted: expected a bool, got {outcome.defaulted!r}")
    msg = scoring_pb2.Outcome(
        request_id=outcome.request_id, entity_id=outcome.entity_id, defaulted=bool(outcome.defaulted)
    )
    if outcome.observed_at is not None:
        if outcome.observed_at.tzinfo is None:
            raise ValueError(f"outcomes[{i}].observed_at: needs a timezone (e.g. datetime.now(UTC))")
        msg.observed_at.FromDatetime(outcome.observed_at)
    return msg


def summary_from_proto(response: scoring_pb2.RecordOutcomesResponse) -> OutcomeSummary:
    return OutcomeSummary(response.matched, response.unmatched, response.duplicates)


class Verdict(enum.StrEnum):
    """An analyst's verdict on a scored decision."""

    CONFIRMED = "confirmed"
    """The decision was right."""
    DISPUTED = "disputed"
    """It looks wrong and is being looked into (the outcome stays the label)."""
    OVERRIDDEN = "overridden"
    """An analyst overrode it; a corrected label becomes the next training snapshot's label."""


_VERDICTS_TO_PROTO = {
    Verdict.CONFIRMED: types_pb2.FEEDBACK_VERDICT_CONFIRMED,
    Verdict.DISPUTED: types_pb2.FEEDBACK_VERDICT_DISPUTED,
    Verdict.OVERRIDDEN: types_pb2.FEEDBACK_VERDICT_OVERRIDDEN,
}


@dataclass(frozen=True)
class Feedback:
    """Analyst feedback on one scored decision, for :meth:`ScoringClient.record_feedback`.

    ``request_id`` is the one the score was answered with (:attr:`ScoreResult.request_id`);
    ``corrected_label`` (``True``: the customer defaulted) goes only with
    :attr:`Verdict.OVERRIDDEN`. The gateway records the token's subject as the actor; ``actor``
    counts only where the call carries none.
    """

    request_id: str
    verdict: Verdict | str
    corrected_label: bool | None = None
    reason: str = ""
    actor: str = ""


@dataclass(frozen=True)
class FeedbackSummary:
    """What the monitor made of recorded feedback."""

    recorded: int
    duplicates: int
    """Ignored: an exact repeat of the request's latest feedback (a retried call)."""
    unknown: int
    """Of the recorded ones, those whose request the monitor has not logged (yet): check the ids."""

    def __add__(self, other: FeedbackSummary) -> FeedbackSummary:
        return FeedbackSummary(
            self.recorded + other.recorded, self.duplicates + other.duplicates, self.unknown + other.unknown
        )


def feedback_to_proto(i: int, feedback: Feedback) -> types_pb2.Feedback:
    """The wire feedback; ``TypeError``/``ValueError`` name ``feedback[i]`` before anything is sent."""
    where = f"feedback[{i}]"
    if not isinstance(feedback, Feedback):
        raise TypeError(f"{where}: expected a Feedback, got {type(feedback).__name__}")
    if not feedback.request_id:
        raise ValueError(f"{where}.request_id: required (the request id the score was answered with)")
    try:
        verdict = Verdict(feedback.verdict)
    except ValueError:
        choices = ", ".join(v.value for v in Verdict)
        raise ValueError(f"{where}.verdict: one of {choices}, got {feedback.verdict!r}") from None
    msg = types_pb2.Feedback(
        request_id=feedback.request_id,
        verdict=_VERDICTS_TO_PROTO[verdict],
        reason=feedback.reason,
        actor=feedback.actor,
    )
    if feedback.corrected_label is not None:
        if feedback.corrected_label not in (0, 1):
            raise TypeError(f"{where}.corrected_label: expected a bool, got {feedback.corrected_label!r}")
        if verdict is not Verdict.OVERRIDDEN:
            raise ValueError(
                f"{where}.corrected_label: only with the verdict overridden (this one is {verdict})"
            )
        msg.corrected_label = bool(feedback.corrected_label)
    return msg


def feedback_summary_from_proto(response: scoring_pb2.RecordFeedbackResponse) -> FeedbackSummary:
    return FeedbackSummary(response.recorded, response.duplicates, response.unknown)


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
