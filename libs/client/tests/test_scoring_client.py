"""The scoring SDK against a ScoringService double on loopback: round trip, auth, retries,
deadlines, typed errors, chunked batches, TLS. Every test runs the blocking and the asyncio client."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import grpc
import pytest

from finpredict.api.scoring.v1 import scoring_pb2
from finpredict.client import (
    Application,
    AuthenticationError,
    DeadlineExceededError,
    Decision,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    RetryPolicy,
    ScoringError,
    UnavailableError,
    Variant,
)

TOKEN = "s3cr3t"
FAST = RetryPolicy(max_attempts=4, initial_backoff_s=0.001, max_backoff_s=0.005)
U = grpc.StatusCode.UNAVAILABLE


async def test_score_round_trip(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN)
    result = await client.score(
        "credit-default",
        "biz-42c",
        {"x": 7, "industry": "retail", "income": None},
        explain=True,
        top_k=2,
        request_id="req-1",
    )
    assert result.score == pytest.approx(0.7)
    assert result.decision is Decision.DECLINE
    assert not result.approved
    assert (result.model, result.version, result.threshold) == ("credit-default", 3, 0.5)
    assert result.variant is Variant.CANARY
    assert [r.code for r in result.reason_codes] == ["R00", "R01"]
    assert (result.request_id, result.entity_id) == ("req-1", "biz-42c")
    assert result.trace_id == "0af7651916cd43dd8448eb211c80319c"

    (call,) = gateway.fake.calls
    assert call.metadata["authorization"] == f"Bearer {TOKEN}"
    assert call.metadata["x-request-id"] == "req-1"
    features = call.request.application.features
    assert features["x"].number == 7.0
    assert features["industry"].category == "retail"
    assert features["income"].WhichOneof("kind") is None  # None is sent as "missing"
    assert call.request.explain
    assert call.request.top_k == 2


async def test_wrong_type_of_feature_is_refused_before_sending(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN)
    with pytest.raises(TypeError, match=r'features\["x"\]: expected a number, a string or None, got list'):
        await client.score("m", "e", {"x": [1, 2]})
    assert gateway.fake.calls == []


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED])
async def test_retries_transient_errors_with_the_same_request_id(
    gateway: Any, make_client: Any, code: grpc.StatusCode
) -> None:
    gateway.fake.fail = [(code, "overloaded"), (code, "overloaded")]
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    result = await client.score("m", "e1", {"x": 1})
    calls = gateway.fake.methods("Score")
    assert len(calls) == 3
    rids = {c.request.application.request_id for c in calls}
    assert len(rids) == 1
    assert "" not in rids
    assert {c.metadata["x-request-id"] for c in calls} == rids
    assert result.request_id in rids


async def test_gives_up_after_max_attempts(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(U, "no backend")] * 10
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    with pytest.raises(UnavailableError) as err:
        await client.score("m", "e1", {"x": 1}, request_id="r-9")
    assert len(gateway.fake.calls) == FAST.max_attempts
    assert err.value.attempts == FAST.max_attempts
    assert err.value.code is U
    assert err.value.message == "no backend"
    assert err.value.request_id == "r-9"


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (grpc.StatusCode.PERMISSION_DENIED, PermissionDeniedError),
        (grpc.StatusCode.NOT_FOUND, ModelNotFoundError),
        (grpc.StatusCode.FAILED_PRECONDITION, ScoringError),
        (grpc.StatusCode.INTERNAL, ScoringError),
        (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceededError),
    ],
)
async def test_other_errors_are_final(
    gateway: Any, make_client: Any, code: grpc.StatusCode, error: type[ScoringError]
) -> None:
    gateway.fake.fail = [(code, "nope"), (code, "nope")]
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    with pytest.raises(error) as err:
        await client.score("m", "e1", {"x": 1})
    assert type(err.value) is error
    assert len(gateway.fake.calls) == 1
    assert (err.value.code, err.value.message, err.value.attempts) == (code, "nope", 1)


async def test_invalid_request_names_the_field_and_is_not_retried(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    with pytest.raises(InvalidRequestError) as err:
        await client.score("m", "e1", {"x": 1, "bad": 1.7})
    assert len(gateway.fake.calls) == 1
    assert err.value.code is grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.field == 'application.features["bad"]'
    assert err.value.feature == "bad"
    assert err.value.index is None
    assert "above the maximum 1.5" in str(err.value)


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_bad_token_is_an_authentication_error(
    gateway: Any, make_client: Any, token: str | None
) -> None:
    client = make_client(gateway.target, token=token, retry=FAST)
    with pytest.raises(AuthenticationError):
        await client.score("m", "e1", {"x": 1})
    assert len(gateway.fake.calls) == 1
    assert ("authorization" in gateway.fake.calls[0].metadata) is (token is not None)


async def test_deadline_bounds_all_retries(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(U, "down")] * 1000
    patient = RetryPolicy(max_attempts=1000, initial_backoff_s=0.02, max_backoff_s=0.1, jitter=0.0)
    client = make_client(gateway.target, token=TOKEN, retry=patient)
    timeout = 0.6
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError) as err:
        await client.score("m", "e1", {"x": 1}, timeout=timeout)
    elapsed = time.monotonic() - t0
    # Back-offs 0.02, 0.04, 0.08, 0.1, 0.1 ...: about 7 attempts fit; it stops before the deadline
    # rather than sleep past it, and far before 1000 attempts.
    assert elapsed < timeout + 0.3
    n = len(gateway.fake.calls)
    assert 3 <= n <= 10
    assert err.value.attempts == n
    assert "UNAVAILABLE: down" in err.value.message


async def test_a_hanging_gateway_gets_one_attempt_until_the_deadline(gateway: Any, make_client: Any) -> None:
    gateway.fake.hang = asyncio.Event()
    client = make_client(gateway.target, token=TOKEN, retry=FAST)
    t0 = time.monotonic()
    with pytest.raises(DeadlineExceededError):
        await client.score("m", "e1", {"x": 1}, timeout=0.5)
    assert 0.45 <= time.monotonic() - t0 < 3.0
    assert len(gateway.fake.calls) == 1  # DEADLINE_EXCEEDED is never retried


async def test_unreachable_gateway_is_unavailable_after_retries(make_client: Any) -> None:
    # A port that is bound but not listening: connections are refused, and nobody else gets it.
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        client = make_client(f"127.0.0.1:{sock.getsockname()[1]}", retry=FAST)
        with pytest.raises(UnavailableError) as err:
            await client.score("m", "e1", {"x": 1}, timeout=5.0)
    assert err.value.attempts == FAST.max_attempts
    assert "Connection refused" in err.value.message


def _apps(n: int, bad: int | None = None) -> list[Application]:
    return [
        Application(
            f"e{i}",
            {"x": i % 10, **({"bad": 1.7} if i == bad else {})},
            request_id=f"r{i}" if i % 2 else None,
        )
        for i in range(n)
    ]


async def test_batch_is_chunked_and_returned_in_input_order(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN, chunk_size=500)
    apps = _apps(1234)
    results = await client.score_batch("m", apps, explain=True, top_k=1)
    batches = gateway.fake.methods("ScoreBatch")  # in arrival order: the asyncio client is concurrent
    assert sorted(len(c.request.applications) for c in batches) == [234, 500, 500]
    assert [r.entity_id for r in results] == [a.entity_id for a in apps]
    assert [r.score for r in results] == [pytest.approx((i % 10) / 10) for i in range(1234)]
    sent = {a.entity_id: a.request_id for c in batches for a in c.request.applications}
    assert all(sent[f"e{i}"] == f"r{i}" for i in range(1, 1234, 2))
    generated = [sent[f"e{i}"] for i in range(0, 1234, 2)]
    assert all(generated)
    assert len(set(generated)) == len(generated)
    assert [r.request_id for r in results] == [sent[a.entity_id] for a in apps]
    assert all(c.request.explain and c.request.top_k == 1 for c in gateway.fake.methods("ScoreBatch"))
    assert all(len(r.reason_codes) == 1 for r in results)


async def test_empty_batch_makes_no_call(gateway: Any, make_client: Any) -> None:
    client = make_client(gateway.target, token=TOKEN)
    assert await client.score_batch("m", []) == []
    assert gateway.fake.calls == []


async def test_batch_chunk_retry_reuses_its_request_ids(gateway: Any, make_client: Any) -> None:
    gateway.fake.fail = [(U, "down")]
    client = make_client(gateway.target, token=TOKEN, chunk_size=3, retry=FAST)
    results = await client.score_batch("m", _apps(7))
    calls = gateway.fake.methods("ScoreBatch")
    by_chunk: dict[str, list[Any]] = {}
    for c in calls:  # the asyncio client sends chunks concurrently: any of them may be the one refused
        by_chunk.setdefault(c.request.applications[0].entity_id, []).append(c)
    assert sorted(len(v) for v in by_chunk.values()) == [1, 1, 2]
    (retried,) = (v for v in by_chunk.values() if len(v) == 2)
    assert [a.request_id for a in retried[0].request.applications] == [
        a.request_id for a in retried[1].request.applications
    ]
    assert retried[0].metadata["x-request-id"] == retried[1].metadata["x-request-id"]
    assert [r.entity_id for r in results] == [f"e{i}" for i in range(7)]


async def test_invalid_application_is_named_by_its_index_in_the_whole_batch(
    gateway: Any, make_client: Any
) -> None:
    client = make_client(gateway.target, token=TOKEN, chunk_size=500, retry=FAST)
    with pytest.raises(InvalidRequestError) as err:
        await client.score_batch("m", _apps(1234, bad=1003))
    assert err.value.index == 1003
    assert err.value.field == 'applications[1003].features["bad"]'
    assert err.value.feature == "bad"
    assert err.value.message.startswith('applications[1003].features["bad"]: 1.7 is above')


async def test_batch_answer_with_missing_results_is_refused(gateway: Any, make_client: Any) -> None:
    gateway.fake.drop_last_result = True
    client = make_client(gateway.target, token=TOKEN)
    with pytest.raises(ScoringError, match="answered 3 results for 4 applications") as err:
        await client.score_batch("m", _apps(4))
    assert err.value.code is grpc.StatusCode.INTERNAL


async def test_async_batch_runs_chunks_concurrently_and_keeps_input_order(gateway: Any) -> None:
    """Chunks 0-2 meet at a barrier (so three are in flight at once), and chunk 0 answers only
    after chunks 1 and 2 have: the results still come back in input order."""
    from finpredict.client import AsyncScoringClient

    barrier = asyncio.Barrier(3)
    finished: list[int] = []
    first_two_done = asyncio.Event()
    in_flight = peak = 0

    async def hook(request: scoring_pb2.ScoreBatchRequest) -> None:
        nonlocal in_flight, peak
        chunk = int(request.applications[0].entity_id[1:]) // 10
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            if chunk < 3:
                await barrier.wait()
            if chunk == 0:
                await first_two_done.wait()
        finally:
            in_flight -= 1
        finished.append(chunk)
        if {1, 2} <= set(finished):
            first_two_done.set()

    gateway.fake.batch_hook = hook
    async with AsyncScoringClient(
        gateway.target, token=TOKEN, chunk_size=10, max_concurrency=3, timeout=20
    ) as client:
        results = await client.score_batch("m", _apps(50))
    assert [r.entity_id for r in results] == [f"e{i}" for i in range(50)]
    assert peak == 3
    assert finished.index(0) > max(finished.index(1), finished.index(2))
    assert sorted(finished) == [0, 1, 2, 3, 4]


async def test_async_batch_failure_cancels_the_other_chunks(gateway: Any) -> None:
    """Chunk 1 is refused once chunks 0 and 2 are in the server; the client then cancels those."""
    from finpredict.client import AsyncScoringClient

    started: list[int] = []
    cancelled: list[int] = []
    never = asyncio.Event()
    others_started = asyncio.Event()
    both_cancelled = asyncio.Event()

    async def hook(request: scoring_pb2.ScoreBatchRequest) -> None:
        chunk = int(request.applications[0].entity_id[1:]) // 10
        started.append(chunk)
        if {0, 2} <= set(started):
            others_started.set()
        if chunk == 1:
            await others_started.wait()
            return  # then validation refuses it
        try:
            await never.wait()
        except asyncio.CancelledError:
            cancelled.append(chunk)
            if len(cancelled) == 2:
                both_cancelled.set()
            raise

    gateway.fake.batch_hook = hook
    apps = _apps(30, bad=15)
    async with AsyncScoringClient(gateway.target, token=TOKEN, chunk_size=10, max_concurrency=3) as client:
        with pytest.raises(InvalidRequestError) as err:
            await client.score_batch("m", apps, timeout=20)
    assert err.value.index == 15
    # The client cancelled the two chunks it was still waiting for; the server sees that.
    await asyncio.wait_for(both_cancelled.wait(), 5)
    assert sorted(cancelled) == [0, 2]
    assert sorted(started) == [0, 1, 2]
