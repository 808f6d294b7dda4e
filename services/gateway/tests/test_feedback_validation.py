"""Analyst feedback is checked before it travels: the one check of the gateway and the monitor
(:mod:`finpredict.common.feedback`) names the field of every refusal, the SDK refuses what the
gateway would before sending anything, and the command line refuses bad usage (exit 2)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2 as t
from finpredict.client import Feedback, Verdict
from finpredict.client.types import feedback_to_proto
from finpredict.common.feedback import FeedbackError, check_feedback, stamped
from finpredict.gateway.cli import feedback_app
from finpredict.testkit.cli import WRITER_TOKEN, invoke

NOW = datetime(2026, 3, 1, 12, tzinfo=UTC)


def _at(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


OK = t.Feedback(request_id="r-1", verdict=t.FEEDBACK_VERDICT_OVERRIDDEN, corrected_label=True)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (t.Feedback(verdict=t.FEEDBACK_VERDICT_CONFIRMED), "feedback[1].request_id: required"),
        (
            t.Feedback(request_id="r" * 257, verdict=t.FEEDBACK_VERDICT_CONFIRMED),
            "feedback[1].request_id: at most 256",
        ),
        (
            t.Feedback(request_id="r-2"),
            "feedback[1].verdict: required, one of confirmed, disputed, overridden",
        ),
        (t.Feedback(request_id="r-2", verdict=7), "feedback[1].verdict: required"),  # type: ignore[arg-type]
        (
            t.Feedback(request_id="r-2", verdict=t.FEEDBACK_VERDICT_DISPUTED, corrected_label=False),
            "feedback[1].corrected_label: only with the verdict overridden (this one is disputed",
        ),
        (
            t.Feedback(request_id="r-2", verdict=t.FEEDBACK_VERDICT_CONFIRMED, reason="x" * 2001),
            "feedback[1].reason: at most 2000 characters",
        ),
        (
            t.Feedback(request_id="r-2", verdict=t.FEEDBACK_VERDICT_CONFIRMED, actor="a\x00b"),
            "feedback[1].actor",
        ),
        (
            t.Feedback(
                request_id="r-2",
                verdict=t.FEEDBACK_VERDICT_CONFIRMED,
                recorded_at=_at(NOW + timedelta(hours=1)),
            ),
            "feedback[1].recorded_at: in the future",
        ),
    ],
)
def test_bad_feedback_is_refused_naming_the_field(item: t.Feedback, message: str) -> None:
    with pytest.raises(FeedbackError) as refused:
        check_feedback([OK, item], NOW, limit=10)
    assert str(refused.value).startswith(message)


def test_batches_are_bounded_and_stamping_keeps_what_was_given() -> None:
    with pytest.raises(FeedbackError, match=r"^feedback: empty batch"):
        check_feedback([], NOW, limit=10)
    with pytest.raises(FeedbackError, match=r"^feedback: 3 items exceed the batch limit of 2"):
        check_feedback([OK, OK, OK], NOW, limit=2)
    check_feedback([OK], NOW, limit=1)
    got = stamped(OK, "alice", NOW)
    assert (got.actor, got.recorded_at.ToDatetime(tzinfo=UTC), got.corrected_label) == ("alice", NOW, True)
    earlier = t.Feedback(
        request_id="r", verdict=t.FEEDBACK_VERDICT_CONFIRMED, actor="bob", recorded_at=_at(NOW)
    )
    assert stamped(earlier, "", NOW + timedelta(days=1)) == earlier  # no subject: the given actor stays


def test_the_sdk_refuses_bad_feedback_before_sending() -> None:
    wire = feedback_to_proto(0, Feedback("r-1", Verdict.OVERRIDDEN, corrected_label=False, reason="why"))
    assert (wire.verdict, wire.HasField("corrected_label"), wire.corrected_label) == (
        t.FEEDBACK_VERDICT_OVERRIDDEN,
        True,
        False,
    )
    assert not feedback_to_proto(0, Feedback("r-1", "confirmed")).HasField("corrected_label")
    with pytest.raises(ValueError, match=r"^feedback\[2\]\.verdict: one of confirmed, disputed, overridden"):
        feedback_to_proto(2, Feedback("r-1", "wrong"))
    with pytest.raises(
        ValueError, match=r"^feedback\[0\]\.corrected_label: only with the verdict overridden"
    ):
        feedback_to_proto(0, Feedback("r-1", Verdict.DISPUTED, corrected_label=True))
    with pytest.raises(TypeError, match=r"^feedback\[0\]\.corrected_label: expected a bool"):
        feedback_to_proto(0, Feedback("r-1", Verdict.OVERRIDDEN, corrected_label="yes"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"^feedback\[0\]\.request_id: required"):
        feedback_to_proto(0, Feedback("", Verdict.CONFIRMED))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--verdict", "maybe"], "--verdict: one of confirmed, disputed, overridden"),
        (["--verdict", "overridden", "--label", "late"], "--label: defaulted or repaid"),
        (["--verdict", "confirmed", "--label", "repaid"], "--label: only with the verdict overridden"),
        (["--verdict", "disputed", "--reason", "x" * 2001], "--reason: at most 2000 characters"),
    ],
)
def test_the_cli_refuses_bad_usage(args: list[str], message: str) -> None:
    # the target is a closed port: a refusal here means nothing was sent
    got = invoke(feedback_app, ["record", "--request-id", "r-1", *args], "127.0.0.1:1", WRITER_TOKEN)
    assert got.exit_code == 2, got.output
    assert message in " ".join(got.output.split())
