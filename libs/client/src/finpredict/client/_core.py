"""What the blocking and the asyncio client share: channels, requests, results, the retry loop's state."""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from finpredict.api.scoring.v1 import scoring_pb2
from finpredict.client.errors import DeadlineExceededError, ScoringError, error_for
from finpredict.client.retry import Deadline, RetryPolicy
from finpredict.client.types import (
    Application,
    FeatureInput,
    Feedback,
    Outcome,
    ScoreResult,
    feature_values,
    feedback_to_proto,
    outcome_to_proto,
    result_from_proto,
)

REQUEST_ID_KEY = "x-request-id"
DEFAULT_CHUNK_SIZE = 500
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024


class _Default(enum.Enum):
    TOKEN = 0


DEFAULT = _Default.TOKEN
"""The "client's default" marker of per-call ``timeout`` arguments (``None`` means no deadline)."""
Timeout = float | None | _Default


def resolve_timeout(timeout: Timeout, default: float | None) -> Deadline:
    return Deadline(default if isinstance(timeout, _Default) else timeout)


def new_request_id() -> str:
    return uuid.uuid4().hex


def channel_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        # Retries are ours (with the caller's deadline and request id); no hidden second layer.
        ("grpc.enable_retries", 0),
    ]


def channel_credentials(
    tls_ca_file: Path | str | None, tls_cert_file: Path | str | None, tls_key_file: Path | str | None
) -> grpc.ChannelCredentials | None:
    """TLS credentials (mutual TLS when a client key pair is given), or ``None`` for plaintext."""
    if (tls_cert_file is None) != (tls_key_file is None):
        raise ValueError("tls_cert_file and tls_key_file must be given together")
    if tls_ca_file is None:
        if tls_cert_file is not None:
            raise ValueError("a client certificate needs tls_ca_file (mutual TLS requires TLS)")
        return None
    return grpc.ssl_channel_credentials(
        root_certificates=Path(tls_ca_file).read_bytes(),
        private_key=Path(tls_key_file).read_bytes() if tls_key_file is not None else None,
        certificate_chain=Path(tls_cert_file).read_bytes() if tls_cert_file is not None else None,
    )


def call_metadata(token: str | None, request_id: str) -> tuple[tuple[str, str], ...]:
    md: list[tuple[str, str]] = [(REQUEST_ID_KEY, request_id)]
    if token:
        md.append(("authorization", f"Bearer {token}"))
    return tuple(md)


def score_request(
    model: str,
    entity_id: str,
    features: Mapping[str, FeatureInput],
    *,
    explain: bool,
    top_k: int,
    request_id: str,
) -> scoring_pb2.ScoreRequest:
    return scoring_pb2.ScoreRequest(
        model=model,
        application=scoring_pb2.Application(
            entity_id=entity_id, features=feature_values(features), request_id=request_id
        ),
        explain=explain,
        top_k=top_k,
    )


@dataclass(frozen=True)
class Chunk:
    """One ScoreBatch call of a larger batch: where it starts in the caller's list, and its request."""

    offset: int
    request: scoring_pb2.ScoreBatchRequest
    request_id: str

    @property
    def size(self) -> int:
        return len(self.request.applications)


def batch_chunks(
    model: str, applications: Sequence[Application], *, explain: bool, top_k: int, chunk_size: int
) -> list[Chunk]:
    """Splits ``applications`` into requests of at most ``chunk_size``, request ids fixed up front
    (so that a retried chunk carries the same ids)."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    chunks = []
    for offset in range(0, len(applications), chunk_size):
        part = applications[offset : offset + chunk_size]
        request = scoring_pb2.ScoreBatchRequest(
            model=model,
            applications=[
                scoring_pb2.Application(
                    entity_id=app.entity_id,
                    features=feature_values(app.features),
                    request_id=app.request_id or new_request_id(),
                    attributes=app.attributes or {},
                )
                for app in part
            ],
            explain=explain,
            top_k=top_k,
        )
        chunks.append(Chunk(offset=offset, request=request, request_id=new_request_id()))
    return chunks


@dataclass(frozen=True)
class OutcomeChunk:
    """One RecordOutcomes call of a larger list: where it starts in the caller's list, and its request."""

    offset: int
    request: scoring_pb2.RecordOutcomesRequest
    request_id: str


def outcome_chunks(outcomes: Sequence[Outcome], *, chunk_size: int) -> list[OutcomeChunk]:
    """Checks every outcome (before anything is sent) and splits them into calls of at most
    ``chunk_size``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    wire = [outcome_to_proto(i, o) for i, o in enumerate(outcomes)]
    return [
        OutcomeChunk(
            offset=offset,
            request=scoring_pb2.RecordOutcomesRequest(outcomes=wire[offset : offset + chunk_size]),
            request_id=new_request_id(),
        )
        for offset in range(0, len(wire), chunk_size)
    ]


@dataclass(frozen=True)
class FeedbackChunk:
    """One RecordFeedback call of a larger list: where it starts in the caller's list, and its request."""

    offset: int
    request: scoring_pb2.RecordFeedbackRequest
    request_id: str


def feedback_chunks(feedback: Sequence[Feedback], *, chunk_size: int) -> list[FeedbackChunk]:
    """Checks every feedback (before anything is sent) and splits them into calls of at most
    ``chunk_size``."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    wire = [feedback_to_proto(i, f) for i, f in enumerate(feedback)]
    return [
        FeedbackChunk(
            offset=offset,
            request=scoring_pb2.RecordFeedbackRequest(feedback=wire[offset : offset + chunk_size]),
            request_id=new_request_id(),
        )
        for offset in range(0, len(wire), chunk_size)
    ]


def chunk_results(chunk: Chunk, response: scoring_pb2.ScoreBatchResponse) -> list[ScoreResult]:
    """The chunk's results in request order; refuses a response that does not match the request."""
    sent = chunk.request.applications
    if len(response.results) != len(sent):
        raise ScoringError(
            grpc.StatusCode.INTERNAL,
            f"the gateway answered {len(response.results)} results for {len(sent)} applications",
            request_id=chunk.request_id,
        )
    for i, (app, got) in enumerate(zip(sent, response.results, strict=True)):
        if got.entity_id and got.entity_id != app.entity_id:
            raise ScoringError(
                grpc.StatusCode.INTERNAL,
                f"result {chunk.offset + i} is for entity {got.entity_id!r}, not {app.entity_id!r}",
                request_id=chunk.request_id,
            )
    return [result_from_proto(r, response.trace_id) for r in response.results]


class Attempts:
    """The state of one call's retry loop; the clients drive it with their own sleep.

    ``start()`` gives the timeout of the next attempt; ``failed()`` either raises the typed
    error (not retryable, attempts used up, or no time left for the back-off) or returns the
    seconds to wait before the next attempt.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        deadline: Deadline,
        rand: Callable[[], float],
        request_id: str,
        index_offset: int = 0,
    ) -> None:
        self.policy = policy
        self.deadline = deadline
        self.rand = rand
        self.request_id = request_id
        self.index_offset = index_offset
        self.made = 0

    def start(self) -> float | None:
        remaining = self.deadline.remaining()
        if remaining is not None and remaining <= 0:
            raise DeadlineExceededError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline passed after {self.made} attempt(s)",
                request_id=self.request_id,
                attempts=self.made,
            )
        self.made += 1
        return remaining

    def failed(self, exc: grpc.RpcError) -> float:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        message: str = exc.details() or ""  # type: ignore[attr-defined]
        if not self.policy.retryable(code) or self.made >= self.policy.max_attempts:
            raise error_for(
                code,
                message,
                request_id=self.request_id,
                attempts=self.made,
                index_offset=self.index_offset,
            ) from exc
        delay = self.policy.backoff(self.made, self.rand())
        remaining = self.deadline.remaining()
        if remaining is not None and delay >= remaining:
            raise DeadlineExceededError(
                grpc.StatusCode.DEADLINE_EXCEEDED,
                f"deadline would pass before attempt {self.made + 1} "
                f"(last error after {self.made} attempt(s): {code.name}: {message})",
                request_id=self.request_id,
                attempts=self.made,
            ) from exc
        return delay
