"""Analyst feedback from clients to the monitor: ``ScoringService.RecordFeedback`` checked, stamped
and forwarded.

An analyst (or the case tool acting with their token) gives a verdict on a scored decision by the
request id the gateway answered with: ``confirmed``, ``disputed``, or ``overridden`` with an
optional corrected label, which the next production snapshot uses as the training label. The
gateway checks every item (:mod:`finpredict.common.feedback`: each refusal names its field,
``feedback[2].verdict: required ...``), records the caller's token subject as the actor and its
own clock as ``recorded_at`` where unset, and forwards the batch to the monitor's
``RecordFeedback`` with its own monitor token, in the request path, like outcomes
(:mod:`~finpredict.gateway.outcomes`): the client's answer is the monitor's, an exact repeat is a
duplicate, and when the monitor cannot be reached the client gets ``UNAVAILABLE`` (nothing is
buffered or dropped).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.scoring.v1 import scoring_pb2 as pb
from finpredict.common.auth import current_subject
from finpredict.common.feedback import FeedbackError, check_feedback, stamped
from finpredict.gateway import metrics
from finpredict.gateway.outcomes import FORWARD_TIMEOUT_S, client_error
from finpredict.gateway.validation import RequestError


def _now() -> datetime:
    return datetime.now(UTC)


class FeedbackForwarder:
    """Checks feedback and records it with the monitor (``stub``: its ``MonitorService``)."""

    def __init__(
        self,
        stub: Any,
        metadata: tuple[tuple[str, str], ...] = (),
        *,
        max_feedback: int = 1000,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._limit = max_feedback
        self._clock = clock

    async def record(
        self, request: pb.RecordFeedbackRequest, time_left_s: float | None
    ) -> pb.RecordFeedbackResponse:
        """Forwards ``request``; raises :class:`RequestError` or
        :class:`~finpredict.gateway.outcomes.MonitorError`."""
        now = self._clock()
        try:
            check_feedback(request.feedback, now, self._limit)
        except FeedbackError as exc:
            raise RequestError(str(exc)) from None
        actor = current_subject("")
        items = [stamped(fb, actor, now) for fb in request.feedback]
        timeout = FORWARD_TIMEOUT_S if time_left_s is None else min(FORWARD_TIMEOUT_S, time_left_s)
        try:
            got = await self._stub.RecordFeedback(
                monitor_pb2.RecordFeedbackRequest(feedback=items), timeout=timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as exc:
            metrics.FEEDBACK_TOTAL.labels("failed").inc(len(items))
            raise client_error(exc, "feedback") from exc
        metrics.FEEDBACK_TOTAL.labels("recorded").inc(got.recorded)
        metrics.FEEDBACK_TOTAL.labels("duplicate").inc(got.duplicates)
        return pb.RecordFeedbackResponse(
            recorded=got.recorded, duplicates=got.duplicates, unknown=got.unknown
        )
