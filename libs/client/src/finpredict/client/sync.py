"""The blocking scoring client."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
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


class ScoringClient:
    """Scores applications through the gateway's ``finpredict.scoring.v1.ScoringService``.

    ``timeout`` is the default overall deadline of one call, all retries and back-offs
    included (``None``: no deadline). Use it as a context manager, or call :meth:`close`.
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
        max_message_bytes: int = _core.DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no deadline)")
        creds = _core.channel_credentials(tls_ca_file, tls_cert_file, tls_key_file)
        options = _core.channel_options(max_message_bytes)
        self._channel = (
            grpc.insecure_channel(target, options=options)
            if creds is None
            else grpc.secure_channel(target, creds, options=options)
        )
        self._stub = scoring_pb2_grpc.ScoringServiceStub(self._channel)
        self._token = token
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self._chunk_size = chunk_size
        self._rand: Callable[[], float] = jitter_source()
        self._sleep: Callable[[float], None] = time.sleep

    def score(
        self,
        model: str,
        entity_id: str,
        features: Mapping[str, FeatureInput],
        *,
        explain: bool = False,
        top_k: int = 4,
        request_id: str | None = None,
        timeout: _core.Timeout = _core.DEFAULT,
    ) -> ScoreResult:
        """Scores one application; retried (same request id) while the gateway is unavailable."""
        rid = request_id or _core.new_request_id()
        request = _core.score_request(
            model, entity_id, features, explain=explain, top_k=top_k, request_id=rid
        )
        deadline = _core.resolve_timeout(timeout, self._timeout)
        response = self._call(self._stub.Score, request, rid, deadline)
        return result_from_proto(response.result, response.trace_id)

    def score_batch(
        self,
        model: str,
        applications: Sequence[Application],
        *,
        explain: bool = False,
        top_k: int = 4,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,
    ) -> list[ScoreResult]:
        """Scores ``applications`` in calls of at most ``chunk_size``; results in input order.

        ``timeout`` bounds the whole batch. A refused application raises
        :class:`~finpredict.client.InvalidRequestError` whose ``index`` is its position in
        ``applications``.
        """
        chunks = _core.batch_chunks(
            model, applications, explain=explain, top_k=top_k, chunk_size=chunk_size or self._chunk_size
        )
        deadline = _core.resolve_timeout(timeout, self._timeout)
        results: list[ScoreResult] = []
        for chunk in chunks:
            results.extend(self._score_chunk(chunk, deadline))
        return results

    def _score_chunk(self, chunk: _core.Chunk, deadline: Deadline) -> list[ScoreResult]:
        response = self._call(self._stub.ScoreBatch, chunk.request, chunk.request_id, deadline, chunk.offset)
        return _core.chunk_results(chunk, response)

    def record_outcomes(
        self,
        outcomes: Sequence[Outcome],
        *,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,
    ) -> OutcomeSummary:
        """Records what became of scored applications, in calls of at most ``chunk_size``; returns
        what the monitor made of them. Needs a token with the gateway's ``writer`` role.

        Every outcome is checked before anything is sent. Retried while the gateway (or its
        monitor) is unavailable, with the same outcomes: the monitor keeps the first outcome of a
        request, so a retry or a second call never counts one twice (it comes back as a
        duplicate). ``timeout`` bounds the whole list. A refused outcome raises
        :class:`~finpredict.client.InvalidRequestError` whose ``index`` is its position in
        ``outcomes``; the chunks before it were recorded.
        """
        chunks = _core.outcome_chunks(outcomes, chunk_size=chunk_size or self._chunk_size)
        deadline = _core.resolve_timeout(timeout, self._timeout)
        summary = OutcomeSummary(0, 0, 0)
        for chunk in chunks:
            response = self._call(
                self._stub.RecordOutcomes, chunk.request, chunk.request_id, deadline, chunk.offset
            )
            summary += summary_from_proto(response)
        return summary

    def record_feedback(
        self,
        feedback: Sequence[Feedback],
        *,
        chunk_size: int | None = None,
        timeout: _core.Timeout = _core.DEFAULT,
    ) -> FeedbackSummary:
        """Records analyst feedback on scored decisions (confirmed, disputed, overridden with an
        optional corrected label, which the next training snapshot uses as the label), in calls of
        at most ``chunk_size``. Needs a token with the gateway's ``writer`` role; its subject is
        recorded as the actor.

        Every item is checked before anything is sent. Retried while the gateway (or its monitor)
        is unavailable: an exact repeat of a request's latest feedback comes back as a duplicate,
        so calling again is safe. A refused item raises
        :class:`~finpredict.client.InvalidRequestError` whose ``index`` is its position in
        ``feedback``; the chunks before it were recorded.
        """
        chunks = _core.feedback_chunks(feedback, chunk_size=chunk_size or self._chunk_size)
        deadline = _core.resolve_timeout(timeout, self._timeout)
        summary = FeedbackSummary(0, 0, 0)
        for chunk in chunks:
            response = self._call(
                self._stub.RecordFeedback, chunk.request, chunk.request_id, deadline, chunk.offset
            )
            summary += feedback_summary_from_proto(response)
        return summary

    def _call(
        self, method: Callable[..., R], request: Any, request_id: str, deadline: Deadline, offset: int = 0
    ) -> R:
        """One unary call, retried (same request and request id) within ``deadline``."""
        metadata = _core.call_metadata(self._token, request_id)
        attempts = _core.Attempts(self._retry, deadline, self._rand, request_id, offset)
        while True:
            attempt_timeout = attempts.start()
            try:
                return method(request, timeout=attempt_timeout, metadata=metadata)
            except grpc.RpcError as exc:
                self._sleep(attempts.failed(exc))

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> ScoringClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
