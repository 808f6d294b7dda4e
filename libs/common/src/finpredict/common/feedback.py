"""Analyst feedback on scored decisions (``finpredict.common.v1.Feedback``): its verdicts and the
one check the gateway (before forwarding) and the monitor (on receipt) apply.

Every refusal names the field as the client wrote it, ``feedback[2].corrected_label: only with
the verdict overridden``; both services answer it with ``INVALID_ARGUMENT``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2

MAX_ID_LENGTH = 256
MAX_REASON = 2000
MAX_ACTOR = 256
MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of the checker's clock a ``recorded_at`` may be."""

VERDICTS: dict[types_pb2.FeedbackVerdict.ValueType, str] = {
    types_pb2.FEEDBACK_VERDICT_CONFIRMED: "confirmed",
    types_pb2.FEEDBACK_VERDICT_DISPUTED: "disputed",
    types_pb2.FEEDBACK_VERDICT_OVERRIDDEN: "overridden",
}
"""The verdicts by wire value, as the logs, metrics and command lines name them."""
VERDICT_VALUES: dict[str, types_pb2.FeedbackVerdict.ValueType] = {
    name: value for value, name in VERDICTS.items()
}


class FeedbackError(ValueError):
    """A feedback field is invalid; the message names it."""


def _text_problem(field: str, value: str, limit: int) -> str | None:
    if len(value) > limit or "\x00" in value:
        return f"{field}: at most {limit} characters, without NUL characters"
    return None


def feedback_problem(where: str, fb: types_pb2.Feedback, now: datetime) -> str | None:
    """The first problem of one feedback (``where``: its path, ``feedback[3]``), or None."""
    if not fb.request_id:
        return f"{where}.request_id: required (the request id the score was answered with)"
    for field, value, limit in (
        ("request_id", fb.request_id, MAX_ID_LENGTH),
        ("reason", fb.reason, MAX_REASON),
        ("actor", fb.actor, MAX_ACTOR),
    ):
        problem = _text_problem(f"{where}.{field}", value, limit)
        if problem is not None:
            return problem
    if fb.verdict not in VERDICTS:
        return f"{where}.verdict: required, one of {', '.join(VERDICTS.values())} (got {fb.verdict})"
    if fb.HasField("corrected_label") and fb.verdict != types_pb2.FEEDBACK_VERDICT_OVERRIDDEN:
        return (
            f"{where}.corrected_label: only with the verdict overridden "
            f"(this one is {VERDICTS[fb.verdict]}: the outcome stays the label)"
        )
    if fb.HasField("recorded_at"):
        ts = fb.recorded_at
        if ts.seconds <= 0 or not 0 <= ts.nanos < 1_000_000_000:
            return f"{where}.recorded_at: not a time after 1970"
        if ts.seconds > (now + MAX_CLOCK_SKEW).timestamp():
            return f"{where}.recorded_at: in the future (the clock reads {now.isoformat(timespec='seconds')})"
    return None


def check_feedback(
    items: Sequence[types_pb2.Feedback], now: datetime, limit: int, field: str = "feedback"
) -> None:
    """Checks a batch; :class:`FeedbackError` names the first bad field."""
    if not items:
        raise FeedbackError(f"{field}: empty batch")
    if len(items) > limit:
        raise FeedbackError(f"{field}: {len(items)} items exceed the batch limit of {limit}")
    for i, fb in enumerate(items):
        problem = feedback_problem(f"{field}[{i}]", fb, now)
        if problem is not None:
            raise FeedbackError(problem)


def recorded_time(fb: types_pb2.Feedback, default: datetime) -> datetime:
    """When ``fb`` was recorded (checked by :func:`feedback_problem`), else ``default``."""
    if not fb.HasField("recorded_at"):
        return default
    return fb.recorded_at.ToDatetime(tzinfo=UTC)


def stamped(fb: types_pb2.Feedback, actor: str, now: datetime) -> types_pb2.Feedback:
    """A copy of ``fb`` with ``actor`` (when not empty) and, when unset, ``recorded_at`` = ``now``."""
    out = types_pb2.Feedback()
    out.CopyFrom(fb)
    if actor:
        out.actor = actor
    if not out.HasField("recorded_at"):
        ts = Timestamp()
        ts.FromDatetime(now)
        out.recorded_at.CopyFrom(ts)
    return out
