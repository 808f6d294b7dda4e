"""``record_outcomes`` against a ScoringService double: what goes on the wire, chunks and their
summed summary, retries with the same outcomes, checks before sending, refusals by index. Every
test runs the blocking and the asyncio client (the real gateway and monitor: the gateway's
test_monitor_path.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import grpc
import pytest

from finpredict.client import (
    InvalidRequestError,
    Outcome,
    OutcomeSummary,
    PermissionDeniedError,
    RetryPolicy,
    UnavailableError,
)

TOKEN = "s3cr3t"
FAST = RetryPolicy(max_attempts=3, initial_backoff_s=0.001, max_backoff_s=0.005)
U = grpc.StatusCode.UNAVAILABLE


async def test_outcomes_go_on_the_wire_in_chunks_and_their_summaries_add_up(
    gateway: Any, make_client: Any
) -> None:
    client = make_client(gateway.target, token=TOKEN, chunk_size=2)
    seen = datetime(2026, 3, 1, 9, 30, tzinfo=timezone(timedelta(hours=1)))
    outcomes = [
        Outcome("r1", defaulted=True, observed_at=seen, entity_id="biz-1"),
        Outcome("dup-2", defaulted=False),
        Outcome("new-3", defaulted=1),  # type: ignore[arg-type]  # 0/1 are taken as well
        Outcome("r4", defaulted=False),
        Outcome("dup-5", defaulted=True),
    ]
    got = await client.record_outcomes(outcomes)
    assert got == OutcomeSummary(matched=2, unmatched=1, duplicates=2)
    assert got.total == 5

    calls = gateway.fake.methods("RecordOutcomes")  # the asyncio client's calls run concurrently
    sent = {c.request.outcomes[0].request_id: list(c.request.outcomes) for c in calls}
    assert {k: [o.request_id for o in v] for k, v in sent.items()} == {
        "r1": ["r1", "dup-2"],
        "new-3": ["new-3", "r4"],
        "dup-5": ["dup-5"],
    }
    assert len({c.metadata["x-request-id"] for c in calls}) == 3
    assert all(c.metadata["authorization"] == f"Bearer {TOKEN}" for c in calls)
    first, second = sent["r1"]
    assert (first.entity_id, first.defaulted) == ("biz-1", True)
    assert first.observed_at.ToDatetime(tzinfo=UTC) == datetime(2026, 3, 1, 8, 30, tzinfo=UTC)
    assert not second.HasField("observed_at")  # the gateway's clock
    assert sent["new-3"][0].defaulted is True


async def test_unavailable_is_retried_with_the_same_outcomes(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(U, "monitor unavailable"), (U, "monitor unavailable")]
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    got = await client.record_outcomes([Outcome("r1", True), Outcome("r2", False)])
    assert got == OutcomeSummary(2, 0, 0)
    calls = gateway.fake.methods("RecordOutcomes")
    assert len(calls) == 3
    assert len({c.metadata["x-request-id"] for c in calls}) == 1
    assert len({c.request.SerializeToString() for c in calls}) == 1


async def test_still_unavailable_after_every_attempt_raises(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(U, "monitor unavailable")] * 3
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    with pytest.raises(UnavailableError) as failed:
        await client.record_outcomes([Outcome("r1", True)])
    assert failed.value.attempts == 3


@pytest.mark.parametrize(
    ("outcome", "error", "message"),
    [
        (Outcome("", True), ValueError, r"outcomes\[1\]\.request_id: required"),
        (Outcome("r", "yes"), TypeError, r"outcomes\[1\]\.defaulted: expected a bool"),  # type: ignore[arg-type]
        (
            Outcome("r", True, observed_at=datetime(2026, 1, 1)),
            ValueError,
            r"outcomes\[1\]\.observed_at: needs",
        ),
        ("r", TypeError, r"outcomes\[1\]: expected an Outcome, got str"),
    ],
)
async def test_bad_outcomes_are_refused_before_anything_is_sent(
    gateway: Any, make_client: Any, outcome: Any, error: type[Exception], message: str
) -> None:
    client = make_client(gateway.target, token=TOKEN, chunk_size=1)
    with pytest.raises(error, match=message):
        await client.record_outcomes([Outcome("ok", False), outcome])
    assert gateway.fake.methods("RecordOutcomes") == []


async def test_a_refused_outcome_is_named_by_its_index_in_the_callers_list(
    gateway: Any, make_client: Any
) -> None:
    client = make_client(gateway.target, token=TOKEN, chunk_size=2)
    outcomes = [Outcome(f"r{i}", False) for i in range(3)] + [Outcome("bad", True)]
    with pytest.raises(InvalidRequestError) as refused:
        await client.record_outcomes(outcomes)
    assert (refused.value.index, refused.value.field) == (3, "outcomes[3].observed_at")
    assert refused.value.message == "outcomes[3].observed_at: in the future"


async def test_a_reader_token_is_refused(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(grpc.StatusCode.PERMISSION_DENIED, "needs the writer role")]
    client = make_client(gateway.target, token=TOKEN)
    with pytest.raises(PermissionDeniedError):
        await client.record_outcomes([Outcome("r1", True)])
    assert len(gateway.fake.methods("RecordOutcomes")) == 1  # never retried


async def test_no_outcomes_make_no_call(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN)
    assert await client.record_outcomes([]) == OutcomeSummary(0, 0, 0)
    assert gateway.fake.calls == []
