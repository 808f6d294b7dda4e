"""The asyncio scoring client (``grpc.aio``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import grpc

from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.client import _core
from finpredict.client.retry import Deadline, RetryPolicy, jitter_source
from finpredict.client.types import (
    Application,
    FeatureInput,
    Feedback,
    FeedbackSummary,
    Outcome,
    OutcomeSummary,
    ScoreResult,
    feedback_summary_from_proto,
    result_from_proto,
    summary_from_proto,
)

R = TypeVar("R")
T = TypeVar("T")


class AsyncScoringClient:
    """The asyncio twin of :class:`~finpredict.client.ScoringClient`.

    Batches are sent as up to ``max_concurrency`` concurrent chunk calls; results still come
    back in input order. The channel is opened on first use (inside the running event loop).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca_file: Path | str | None = None,
        tls_cert_file: Path | str | None = None,
        tls_key_file: Path | str | None = None,
        timeout: float | None = _core.DEFAULT_TIMEOUT_S,
        retry: RetryPolicy | None = None,
        chunk_size: int = _core.DEFAULT_CHUNK_SIZE,
        max_concurrency: int = 4,
        max_message_bytes: int = _core.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if max_concurrency < 1:
            raise ValueError("max_concurrency must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no deadline)")
        self._target = target
        self._creds = _core.channel_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        self._options = _core.channel_options(max_message_bytes)
        self._channel: grpc.aio.Channel | None = None
        self._stub: scoring_pb2_grpc.ScoringServiceAsyncStub | None = None
        self._token = token
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._chunk_size = chunk_size
        self._max_concurrency = max_concurrency
        self._rand: Callable[[], float] = jitter_source()
        self._sleep: Callable[[float], Awaitable[None]] = asyncio.sleep

    def _get_stub(self) -> scoring_pb2_grpc.ScoringServiceAsyncStub:
        if self._stub is None:
            self._channel = (
                grpc.aio.insecure_channel(self._target, options=self._options)
                if self._creds is None
                else grpc.aio.secure_channel(self._target, self._creds, options=self._options)
            )
            self._stub = scoring_pb2_grpc.ScoringServiceStub(self._channel)
        return self._stub

    async def score(
        self,
        model: str,
        entity_id: str,
        features: Mapping[str, FeatureInput],
        *,
        explain: bool = False,
        top_k: int = 4,
        request_id: str | None = None,
        timeout: _core.Timeout = _core.DEFAULT,  # noqa: ASYNC109 - a gRPC deadline spanning retries
    ) -> ScoreResult:
        """Scores one application; retried (same request id) while the gateway is unavailable."""
        stub = self._get_stub()
        rid = request_id or _core.new_request_id()
        request = _core.score_request(
            model, entity_id, features, explain=explain, top_k=top_k, request_id=rid
        )
        response = await self._call(stub.Score, request, rid, _core.resolve_timeout(timeout, self._timeout))
        return result_from_proto(response.result, response.trace_id)

    async def score_batch(
        self,
        model: str,
        applications: Sequence[Application],
        *,
        explain: bool = False,
        top_k: int = 4,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,  # noqa: ASYNC109 - a gRPC deadline spanning retries
    ) -> list[ScoreResult]:
        """Scores ``applications`` in calls of at most ``chunk_size``; results in input order.

        ``timeout`` bounds the whole batch. The first failing chunk (in input order among
        those that failed) cancels the others and raises its error; an
        :class:`~finpredict.client.InvalidRequestError` carries the application's ``index`` in
        ``applications``.
        """
        chunks = _core.batch_chunks(
            model, applications, explain=explain, top_k=top_k, chunk_size=chunk_size or self._chunk_size
        )
        stub = self._get_stub()
        deadline = _core.resolve_timeout(timeout, self._timeout)

        async def run(chunk: _core.Chunk) -> list[ScoreResult]:
            response = await self._call(
                stub.ScoreBatch, chunk.request, chunk.request_id, deadline, chunk.offset
            )
            return _core.chunk_results(chunk, response)

        results: list[ScoreResult] = []
        for part in await self._concurrently(run, chunks):
            results.extend(part)
        return results

    async def record_outcomes(
        self,
        outcomes: Sequence[Outcome],
        *,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,  # noqa: ASYNC109 - a gRPC deadline spanning retries
    ) -> OutcomeSummary:
        """Records what became of scored applications, in up to ``max_concurrency`` concurrent
        calls of at most ``chunk_size``; returns what the monitor made of them. Needs a token with
        the gateway's ``writer`` role.

        Every outcome is checked before anything is sent. Retried while the gateway (or its
        monitor) is unavailable, with the same outcomes: the monitor keeps the first outcome of a
        request, so a retry or a second call never counts one twice (it comes back as a
        duplicate). ``timeout`` bounds the whole list. The first failing chunk cancels the others
        and raises (an :class:`~finpredict.client.InvalidRequestError` carries the outcome's
        ``index`` in ``outcomes``); calling again with the same outcomes is safe.
        """
        chunks = _core.outcome_chunks(outcomes, chunk_size=chunk_size or self._chunk_size)
        stub = self._get_stub()
        deadline = _core.resolve_timeout(timeout, self._timeout)

        async def run(chunk: _core.OutcomeChunk) -> OutcomeSummary:
            response = await self._call(
                stub.RecordOutcomes, chunk.request, chunk.request_id, deadline, chunk.offset
            )
            return summary_from_proto(response)

        summary = OutcomeSummary(0, 0, 0)
        for part in await self._concurrently(run, chunks):
            summary += part
        return summary

    async def record_feedback(
        self,
        feedback: Sequence[Feedback],
        *,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,  # noqa: ASYNC109 - a gRPC deadline spanning retries
    ) -> FeedbackSummary:
        """Records analyst feedback on scored decisions, in up to ``max_concurrency`` concurrent
        calls of at most ``chunk_size`` (see :meth:`finpredict.client.ScoringClient.record_feedback`).
        The first failing chunk cancels the others and raises (an
        :class:`~finpredict.client.InvalidRequestError` carries the item's ``index`` in
        ``feedback``); calling again with the same feedback is safe.
        """
        chunks = _core.feedback_chunks(feedback, chunk_size=chunk_size or self._chunk_size)
        stub = self._get_stub()
        deadline = _core.resolve_timeout(timeout, self._timeout)

        async def run(chunk: _core.FeedbackChunk) -> FeedbackSummary:
            response = await self._call(
                stub.RecordFeedback, chunk.request, chunk.request_id, deadline, chunk.offset
            )
            return feedback_summary_from_proto(response)

        summary = FeedbackSummary(0, 0, 0)
        for part in await self._concurrently(run, chunks):
            summary += part
        return summary

    async def _concurrently(self, run: Callable[[T], Awaitable[R]], chunks: Sequence[T]) -> list[R]:
        """``run`` over ``chunks``, at most ``max_concurrency`` at a time; results in chunk order.
        The first failure (in chunk order among those that failed) cancels the rest and is raised."""
        gate = asyncio.Semaphore(self._max_concurrency)

        async def gated(chunk: T) -> R:
            async with gate:
                return await run(chunk)

        tasks = [asyncio.ensure_future(gated(chunk)) for chunk in chunks]
        if not tasks:
            return []
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error
        return [task.result() for task in tasks]

    async def _call(
        self,
        method: Callable[..., Awaitable[R]],
        request: Any,
        request_id: str,
        deadline: Deadline,
        offset: int = 0,
    ) -> R:
        """One unary call, retried (same request and request id) within ``deadline``."""
        metadata = _core.call_metadata(self._token, request_id)
        attempts = _core.Attempts(self._retry, deadline, self._rand, request_id, offset)
        while True:
            attempt_timeout = attempts.start()
            try:
                return await method(request, timeout=attempt_timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                await self._sleep(attempts.failed(exc))

    async def close(self, grace: float | None = None) -> None:
        if self._channel is not None:
            await self._channel.close(grace)
            self._channel = None
            self._stub = None

    async def __aenter__(self) -> AsyncScoringClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()
