"""The asyncio scoring client (``grpc.aio``)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

import grpc

from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.client import _core
from finpredict.client.retry import Deadline, RetryPolicy, jitter_source
from finpredict.client.types import Application, FeatureInput, ScoreResult, result_from_proto


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
        metadata = _core.call_metadata(self._token, rid)
        attempts = _core.Attempts(self._retry, _core.resolve_timeout(timeout, self._timeout), self._rand, rid)
        while True:
            attempt_timeout = attempts.start()
            try:
                response = await stub.Score(request, timeout=attempt_timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                await self._sleep(attempts.failed(exc))
                continue
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
        if not chunks:
            return []
        stub = self._get_stub()
        deadline = _core.resolve_timeout(timeout, self._timeout)
        gate = asyncio.Semaphore(self._max_concurrency)

        async def run(chunk: _core.Chunk) -> list[ScoreResult]:
            async with gate:
                return await self._score_chunk(stub, chunk, deadline)

        tasks = [asyncio.ensure_future(run(chunk)) for chunk in chunks]
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
        results: list[ScoreResult] = []
        for task in tasks:
            results.extend(task.result())
        return results

    async def _score_chunk(
        self, stub: scoring_pb2_grpc.ScoringServiceAsyncStub, chunk: _core.Chunk, deadline: Deadline
    ) -> list[ScoreResult]:
        metadata = _core.call_metadata(self._token, chunk.request_id)
        attempts = _core.Attempts(self._retry, deadline, self._rand, chunk.request_id, chunk.offset)
        while True:
            attempt_timeout = attempts.start()
            try:
                response = await stub.ScoreBatch(chunk.request, timeout=attempt_timeout, metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                await self._sleep(attempts.failed(exc))
                continue
            return _core.chunk_results(chunk, response)

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
