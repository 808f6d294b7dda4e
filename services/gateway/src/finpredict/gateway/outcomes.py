"""Outcomes from clients to the monitor: ``ScoringService.RecordOutcomes`` checked and forwarded.

A client reports what became of the applications it had scored (did the customer default?) by
the request id the gateway answered with. The gateway checks every outcome (each refusal names
its field, ``outcomes[3].request_id: required``), stamps an unset ``observed_at`` with its own
clock, and forwards the batch to the monitor's ``RecordOutcomes`` with its own monitor token,
in the request path: the client's answer is the monitor's (matched, waiting for their
prediction, or duplicates of an outcome already recorded). The monitor keeps the first outcome
of a request, so a retried call never counts twice. When the monitor cannot be reached the
client gets ``UNAVAILABLE`` (retry with the same outcomes); nothing is buffered or dropped.

The monitor's answer lists the outcomes it matched, with the version, score and threshold their
prediction was served with and the arm that served it (variant, rollout or experiment id); they
go to ``on_labelled`` (the rollout and experiment analysis:
:meth:`finpredict.gateway.live.LiveRollouts.record_outcomes`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.scoring.v1 import scoring_pb2 as pb
from finpredict.common.config import env_var_name
from finpredict.gateway import metrics
from finpredict.gateway.config import GatewaySettings
from finpredict.gateway.validation import MAX_ID_LENGTH, RequestError, validate_batch_size

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far in the future an ``observed_at`` may be (clock skew between client and gateway)."""
FORWARD_TIMEOUT_S = 10.0
"""Longest wait for the monitor (less when the client's deadline is nearer)."""
_TRANSIENT = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class MonitorError(Exception):
    """The monitor did not record the outcomes; ``code`` is the status to give the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


def _now() -> datetime:
    return datetime.now(UTC)


def monitor_outcomes(
    request: pb.RecordOutcomesRequest, limit: int, now: datetime
) -> list[monitor_pb2.Outcome]:
    """The outcomes as the monitor takes them; :class:`RequestError` names the first bad field."""
    validate_batch_size(len(request.outcomes), "outcomes", limit)
    stamp = Timestamp()
    stamp.FromDatetime(now)
    latest = now + MAX_CLOCK_SKEW
    out = []
    for i, o in enumerate(request.outcomes):
        where = f"outcomes[{i}]"
        if not o.request_id:
            raise RequestError(f"{where}.request_id: required (the request id the score was answered with)")
        if len(o.request_id) > MAX_ID_LENGTH:
            raise RequestError(f"{where}.request_id: longer than {MAX_ID_LENGTH} characters")
        if len(o.entity_id) > MAX_ID_LENGTH:
            raise RequestError(f"{where}.entity_id: longer than {MAX_ID_LENGTH} characters")
        observed = stamp
        if o.HasField("observed_at"):
            observed = o.observed_at
            if observed.seconds <= 0 or not 0 <= observed.nanos < 1_000_000_000:
                raise RequestError(f"{where}.observed_at: not a time after 1970")
            if observed.seconds > latest.timestamp():
                raise RequestError(
                    f"{where}.observed_at: {_iso(observed)} is in the future "
                    f"(the gateway's clock reads {now.isoformat(timespec='seconds')})"
                )
        out.append(
            monitor_pb2.Outcome(
                request_id=o.request_id, entity_id=o.entity_id, defaulted=o.defaulted, observed_at=observed
            )
        )
    return out


def _iso(ts: Timestamp) -> str:
    try:
        return ts.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds")
    except (OverflowError, ValueError):
        return f"{ts.seconds} s after 1970"


class OutcomeForwarder:
    """Checks outcomes and records them with the monitor (``stub``: its ``MonitorService``)."""

    def __init__(
        self,
        stub: Any,
        metadata: tuple[tuple[str, str], ...] = (),
        *,
        max_outcomes: int = 1000,
        clock: Callable[[], datetime] = _now,
        on_labelled: Callable[[Sequence[monitor_pb2.LabelledPrediction]], None] | None = None,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._limit = max_outcomes
        self._clock = clock
        self._on_labelled = on_labelled

    async def record(
        self, request: pb.RecordOutcomesRequest, time_left_s: float | None
    ) -> pb.RecordOutcomesResponse:
        """Forwards ``request``; raises :class:`RequestError` or :class:`MonitorError`."""
        outcomes = monitor_outcomes(request, self._limit, self._clock())
        timeout = FORWARD_TIMEOUT_S if time_left_s is None else min(FORWARD_TIMEOUT_S, time_left_s)
        try:
            got = await self._stub.RecordOutcomes(
                monitor_pb2.RecordOutcomesRequest(outcomes=outcomes),
                timeout=timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as exc:
            metrics.OUTCOMES_TOTAL.labels("failed").inc(len(outcomes))
            raise client_error(exc) from exc
        metrics.OUTCOMES_TOTAL.labels("matched").inc(got.matched)
        metrics.OUTCOMES_TOTAL.labels("unmatched").inc(got.unmatched)
        metrics.OUTCOMES_TOTAL.labels("duplicate").inc(got.duplicates)
        if self._on_labelled is not None and got.labelled:
            self._on_labelled(got.labelled)
        return pb.RecordOutcomesResponse(
            matched=got.matched, unmatched=got.unmatched, duplicates=got.duplicates
        )


def client_error(exc: grpc.aio.AioRpcError, what: str = "outcomes") -> MonitorError:
    """The status a client gets when the monitor did not record its ``what``."""
    code, details = exc.code(), exc.details() or ""
    if code in _TRANSIENT:
        # A timed-out call may have been recorded: retrying is safe (duplicates are not counted twice).
        return MonitorError(
            grpc.StatusCode.UNAVAILABLE,
            f"monitor unavailable ({code.name}: {details}); nothing was lost: retry with the same {what}",
        )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        return MonitorError(code, details)  # the monitor names the field, outcomes[i]...
    if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
        return MonitorError(
            grpc.StatusCode.INTERNAL,
            f"the monitor refused the gateway's own token ({code.name}): "
            f"check {env_var_name(GatewaySettings, 'monitor_token')} (it needs the monitor's writer role)",
        )
    return MonitorError(code, f"monitor: {details}")
