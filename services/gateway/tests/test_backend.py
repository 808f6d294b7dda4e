"""The gateway's model-server calls (:mod:`finpredict.gateway.backend`) against an in-process,
scripted stand-in model server (no Ray): per-attempt deadlines, retries on fresh attempts within
the client's deadline, and the circuit breaker counting every attempt that ran out of time."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from prometheus_client import REGISTRY

from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.gateway.backend import BackendError, ModelServerBackend, bound_by_client
from finpredict.testkit.names import unique

TIMEOUT_S = 0.4  # the backend's per-attempt deadline in these tests
ROWS = [pb.FeatureRow(), pb.FeatureRow()]


@dataclass(frozen=True)
class Answer:
    """What the stand-in does with one attempt: wait ``delay_s`` (forever when None), then fail
    with ``code`` (and ``details``) or answer."""

    delay_s: float | None = 0.0
    code: grpc.StatusCode | None = None
    details: str = ""


HANG = Answer(delay_s=None)


@dataclass
class ScriptedModelServer(pb_grpc.ModelServerServiceServicer):
    """Answers each Predict attempt as the next :class:`Answer` of ``script`` (then at once);
    records when every attempt arrived."""

    script: list[Answer] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)

    async def Predict(self, request: pb.PredictRequest, context: Any) -> pb.PredictResponse:
        self.arrived.append(time.monotonic())
        answer = self.script.pop(0) if self.script else Answer()
        await asyncio.sleep(3600 if answer.delay_s is None else answer.delay_s)
        if answer.code is not None:
            await context.abort(answer.code, answer.details)
        return pb.PredictResponse(
            predictions=[pb.Prediction(score=0.25) for _ in request.rows], threshold=0.5
        )

    async def LoadModel(self, request: pb.LoadModelRequest, context: Any) -> pb.LoadModelResponse:
        return pb.LoadModelResponse(model=request.model)

    async def ListLoadedModels(
        self, request: pb.ListLoadedModelsRequest, context: Any
    ) -> pb.ListLoadedModelsResponse:
        return pb.ListLoadedModelsResponse()


@dataclass
class Harness:
    server: ScriptedModelServer
    channel: grpc.aio.Channel
    model: str = field(default_factory=lambda: unique("backend"))

    def backend(self, **kwargs: Any) -> ModelServerBackend:
        options: dict[str, Any] = {"timeout_s": TIMEOUT_S, "batch_window_s": 0.0, **kwargs}
        return ModelServerBackend(self.channel, "model-server", **options)

    def retries(self) -> float:
        value = REGISTRY.get_sample_value("finpredict_gateway_backend_retries_total", {"model": self.model})
        return value or 0.0


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    servicer = ScriptedModelServer()
    server = grpc.aio.server()
    pb_grpc.add_ModelServerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    try:
        yield Harness(servicer, channel)
    finally:
        await channel.close(grace=None)
        await server.stop(grace=None)


async def test_an_attempt_past_its_deadline_is_retried_on_a_fresh_attempt(harness: Harness) -> None:
    harness.server.script = [HANG]
    backend = harness.backend()
    started = time.monotonic()
    scored = await backend.predict(harness.model, 1, ROWS)
    assert [p.score for p in scored.predictions] == [0.25, 0.25]
    assert len(harness.server.arrived) == 2
    # the second attempt left once the first ran out of its own deadline
    assert harness.server.arrived[1] - started >= TIMEOUT_S
    assert harness.retries() == 1
    breaker = backend.breaker(harness.model, 1)
    assert breaker.consecutive == 0
    assert not breaker.is_open


async def test_each_attempt_gets_its_own_deadline(harness: Harness) -> None:
    """Two attempts of 0.6 deadlines each succeed together although they take longer than one."""
    harness.server.script = [Answer(0.6 * TIMEOUT_S, grpc.StatusCode.UNAVAILABLE), Answer(0.6 * TIMEOUT_S)]
    started = time.monotonic()
    scored = await harness.backend().predict(harness.model, 1, ROWS)
    assert len(scored.predictions) == 2
    assert time.monotonic() - started >= 1.2 * TIMEOUT_S
    assert len(harness.server.arrived) == 2


async def test_a_timed_out_attempt_is_retried_only_timeout_retries_times(harness: Harness) -> None:
    harness.server.script = [HANG] * 5
    backend = harness.backend(retries=3, timeout_retries=1, breaker_failures=10)
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        await backend.predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(harness.server.arrived) == 2
    assert time.monotonic() - started >= 2 * TIMEOUT_S
    assert backend.breaker(harness.model, 1).consecutive == 2  # each attempt counted


async def test_no_retry_after_a_timeout_when_the_client_deadline_leaves_no_room(harness: Harness) -> None:
    harness.server.script = [HANG] * 3
    backend = harness.backend()
    bound_by_client(1.5 * TIMEOUT_S)  # after the first attempt, half an attempt is left
    with pytest.raises(BackendError) as err:
        await backend.predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert len(harness.server.arrived) == 1
    assert harness.retries() == 0
    assert backend.breaker(harness.model, 1).consecutive == 1


async def test_the_client_deadline_bounds_the_call_and_does_not_count_against_the_backend(
    harness: Harness,
) -> None:
    harness.server.script = [HANG]
    backend = harness.backend(timeout_s=30.0)
    bound_by_client(TIMEOUT_S)
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        await backend.predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert time.monotonic() - started < 10.0  # the client's deadline, not the backend's 30 s
    assert len(harness.server.arrived) == 1
    assert backend.breaker(harness.model, 1).consecutive == 0  # the client was impatient


async def test_unavailable_is_retried_within_the_client_deadline(harness: Harness) -> None:
    harness.server.script = [Answer(0.0, grpc.StatusCode.UNAVAILABLE)] * 5
    backend = harness.backend(retries=2)
    with pytest.raises(BackendError) as err:
        await backend.predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert len(harness.server.arrived) == 3
    assert backend.breaker(harness.model, 1).consecutive == 1  # one failed call


async def test_a_replica_lost_mid_call_is_retried(harness: Harness) -> None:
    died = "ActorUnavailableError: The actor abc is unavailable: The actor died unexpectedly"
    harness.server.script = [Answer(0.0, grpc.StatusCode.INTERNAL, died)]
    scored = await harness.backend().predict(harness.model, 1, ROWS)
    assert len(scored.predictions) == 2
    assert harness.retries() == 1


async def test_refused_requests_are_not_retried(harness: Harness) -> None:
    harness.server.script = [Answer(0.0, grpc.StatusCode.INVALID_ARGUMENT, "bad rows")]
    with pytest.raises(BackendError) as err:
        await harness.backend().predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert len(harness.server.arrived) == 1


async def test_slow_attempts_open_the_circuit_which_then_fails_fast(harness: Harness) -> None:
    harness.server.script = [HANG] * 10
    backend = harness.backend(breaker_failures=3, breaker_cooldown_s=60.0)
    codes = []
    for _ in range(2):  # 2 timed-out attempts, then 1 that opens the circuit and is not retried
        with pytest.raises(BackendError) as err:
            await backend.predict(harness.model, 1, ROWS)
        codes.append(err.value.code)
    assert codes == [grpc.StatusCode.DEADLINE_EXCEEDED] * 2
    assert len(harness.server.arrived) == 3
    assert backend.breaker(harness.model, 1).is_open
    started = time.monotonic()
    with pytest.raises(BackendError) as err:
        await backend.predict(harness.model, 1, ROWS)
    assert err.value.code == grpc.StatusCode.UNAVAILABLE
    assert "circuit" in str(err.value)
    assert time.monotonic() - started < TIMEOUT_S
    assert len(harness.server.arrived) == 3


async def test_a_coalesced_call_lasts_as_long_as_its_most_patient_client(harness: Harness) -> None:
    """Requests joining a call in flight leave together; the call that serves them is bound by
    the latest of their deadlines (a client without one leaves it to the backend's)."""
    harness.server.script = [Answer(0.5 * TIMEOUT_S), Answer(1.5 * TIMEOUT_S)]
    backend = harness.backend(timeout_s=30.0, batch_window_s=10.0)

    async def client(time_remaining: float | None, delay_s: float) -> int:
        await asyncio.sleep(delay_s)
        bound_by_client(time_remaining)
        return len((await backend.predict(harness.model, 1, ROWS[:1])).predictions)

    # the first goes at once; the next two join while it is in flight and leave together after it
    results = await asyncio.gather(
        client(None, 0.0),
        client(0.5 * TIMEOUT_S, 0.05),
        client(30.0, 0.05),
        return_exceptions=True,
    )
    assert list(results) == [1, 1, 1]
    assert len(harness.server.arrived) == 2
