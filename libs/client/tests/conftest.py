"""A test double of the gateway's ScoringService on loopback, and clients of both kinds.

The double is our own protocol's server (the real gateway is tested against the SDK in the
cross-service tests): it records every call with its metadata, can fail the next calls with
any status, hang, or run a hook before answering a batch.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.scoring.v1 import scoring_pb2, scoring_pb2_grpc
from finpredict.client import AsyncScoringClient, ScoringClient

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
VERSION = 3


@dataclass
class Call:
    method: str
    request: Any
    metadata: dict[str, str]


@dataclass
class FakeScoring(scoring_pb2_grpc.ScoringServiceServicer):
    """Scores ``features["x"] / 10``; ``fail`` holds the statuses the next calls get."""

    token: str | None = None
    calls: list[Call] = field(default_factory=list)
    fail: list[tuple[grpc.StatusCode, str]] = field(default_factory=list)
    hang: asyncio.Event | None = None
    batch_hook: Callable[[scoring_pb2.ScoreBatchRequest], Awaitable[None]] | None = None
    drop_last_result: bool = False

    def methods(self, name: str) -> list[Call]:
        return [c for c in self.calls if c.method == name]

    async def _enter(self, method: str, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        md = {k: v for k, v in context.invocation_metadata() or () if isinstance(v, str)}
        self.calls.append(Call(method, request, md))
        if self.token is not None and md.get("authorization") != f"Bearer {self.token}":
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        if self.fail:
            code, message = self.fail.pop(0)
            await context.abort(code, message)
        if self.hang is not None:
            await self.hang.wait()

    @staticmethod
    def _score(app: scoring_pb2.Application, model: str, explain: bool, top_k: int) -> scoring_pb2.Score:
        x = app.features["x"].number if "x" in app.features else 0.0
        score = min(1.0, max(0.0, x / 10))
        reasons = (
            [
                types_pb2.ReasonCode(code=f"R{i:02d}", feature=f"f{i}", contribution=1.0 / (i + 1))
                for i in range(top_k)
            ]
            if explain
            else []
        )
        return scoring_pb2.Score(
            request_id=app.request_id,
            entity_id=app.entity_id,
            score=score,
            decision=scoring_pb2.DECISION_DECLINE if score >= 0.5 else scoring_pb2.DECISION_APPROVE,
            threshold=0.5,
            model=types_pb2.ModelRef(name=model, version=VERSION),
            variant=scoring_pb2.VARIANT_CANARY if app.entity_id.endswith("c") else scoring_pb2.VARIANT_STABLE,
            reason_codes=reasons,
        )

    async def Score(
        self, request: scoring_pb2.ScoreRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scoring_pb2.ScoreResponse:
        await self._enter("Score", request, context)
        if "bad" in request.application.features:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                'application.features["bad"]: 1.7 is above the maximum 1.5',
            )
        result = self._score(request.application, request.model, request.explain, request.top_k)
        return scoring_pb2.ScoreResponse(result=result, trace_id=TRACE_ID)

    async def ScoreBatch(
        self, request: scoring_pb2.ScoreBatchRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scoring_pb2.ScoreBatchResponse:
        await self._enter("ScoreBatch", request, context)
        if self.batch_hook is not None:
            await self.batch_hook(request)
        for i, app in enumerate(request.applications):
            if "bad" in app.features:
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f'applications[{i}].features["bad"]: 1.7 is above the maximum 1.5',
                )
        results = [
            self._score(app, request.model, request.explain, request.top_k) for app in request.applications
        ]
        if self.drop_last_result:
            results = results[:-1]
        return scoring_pb2.ScoreBatchResponse(results=results, trace_id=TRACE_ID)

    async def RecordOutcomes(
        self, request: scoring_pb2.RecordOutcomesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> scoring_pb2.RecordOutcomesResponse:
        """Request ids starting with "dup" are duplicates, "new" unmatched, the rest matched."""
        await self._enter("RecordOutcomes", request, context)
        for i, o in enumerate(request.outcomes):
            if o.request_id == "bad":
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"outcomes[{i}].observed_at: in the future"
                )
        ids = [o.request_id for o in request.outcomes]
        dup = sum(1 for r in ids if r.startswith("dup"))
        new = sum(1 for r in ids if r.startswith("new"))
        return scoring_pb2.RecordOutcomesResponse(matched=len(ids) - dup - new, unmatched=new, duplicates=dup)


@dataclass
class Gateway:
    fake: FakeScoring
    target: str
    port: int


async def start_gateway(
    fake: FakeScoring, credentials: grpc.ServerCredentials | None = None
) -> tuple[grpc.aio.Server, Gateway]:
    server = grpc.aio.server()
    scoring_pb2_grpc.add_ScoringServiceServicer_to_server(fake, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    await server.start()
    return server, Gateway(fake, f"127.0.0.1:{port}", port)


@pytest.fixture
async def gateway() -> AsyncIterator[Gateway]:
    fake = FakeScoring(token="s3cr3t")
    server, gw = await start_gateway(fake)
    try:
        yield gw
    finally:
        if fake.hang is not None:
            fake.hang.set()
        await server.stop(None)


@pytest.fixture
async def gateway_factory() -> AsyncIterator[Callable[..., Awaitable[Gateway]]]:
    """Starts more gateways (``factory(fake, credentials)``), each stopped after the test."""
    servers: list[grpc.aio.Server] = []

    async def factory(fake: FakeScoring, credentials: grpc.ServerCredentials | None = None) -> Gateway:
        server, gw = await start_gateway(fake, credentials)
        servers.append(server)
        return gw

    yield factory
    for server in servers:
        await server.stop(None)


class EitherClient:
    """The blocking client (run in a worker thread) or the asyncio client, behind one async API."""

    def __init__(self, kind: str, target: str, **kwargs: Any) -> None:
        self.kind = kind
        self.sync = ScoringClient(target, **kwargs) if kind == "sync" else None
        self.aio = AsyncScoringClient(target, **kwargs) if kind == "aio" else None

    async def score(self, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.score, *args, **kwargs)
        assert self.aio is not None
        return await self.aio.score(*args, **kwargs)

    async def score_batch(self, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.score_batch, *args, **kwargs)
        assert self.aio is not None
        return await self.aio.score_batch(*args, **kwargs)

    async def record_outcomes(self, *args: Any, **kwargs: Any) -> Any:
        if self.sync is not None:
            return await asyncio.to_thread(self.sync.record_outcomes, *args, **kwargs)
        assert self.aio is not None
        return await self.aio.record_outcomes(*args, **kwargs)

    async def close(self) -> None:
        if self.sync is not None:
            self.sync.close()
        if self.aio is not None:
            await self.aio.close()


@pytest.fixture(params=["sync", "aio"])
async def make_client(request: pytest.FixtureRequest) -> AsyncIterator[Callable[..., EitherClient]]:
    made: list[EitherClient] = []

    def make(target: str, **kwargs: Any) -> EitherClient:
        client = EitherClient(request.param, target, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()
