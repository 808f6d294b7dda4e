"""The monitor's analyst-facing RPCs: ``RecordFeedback`` (:mod:`~finpredict.monitor.feedback`) and
``ListReviewCases`` (:mod:`~finpredict.monitor.review`), and the review queue's hook into
``IngestPredictions`` (:meth:`Analyst.take`). :class:`~finpredict.monitor.service.MonitorService`
delegates to one :class:`Analyst`."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import grpc

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.common.auth import current_subject
from finpredict.common.feedback import FeedbackError, check_feedback, stamped
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.feedback import FeedbackStore
from finpredict.monitor.records import InvalidInputError, StorageError
from finpredict.monitor.review import KIND_VALUES, ReviewQueue, check_query, list_cases
from finpredict.monitor.store import StoreReadError

if TYPE_CHECKING:
    from finpredict.monitor.engine import Engine

MAX_FEEDBACK = 1000
"""Most feedback in one RecordFeedback call (the gateway's request limit by default)."""
Context = grpc.aio.ServicerContext[object, object]


def _status(exc: StorageError) -> grpc.StatusCode:
    return grpc.StatusCode.RESOURCE_EXHAUSTED if exc.full else grpc.StatusCode.UNAVAILABLE


class Analyst:
    """Feedback and the review queue of one monitor; ``lock`` and ``files_lock`` are the service's
    (the engine's state; the log files held still while read)."""

    def __init__(
        self, settings: MonitorSettings, engine: Engine, lock: asyncio.Lock, files_lock: asyncio.Lock
    ) -> None:
        self.engine = engine
        self.lock = lock
        self.files_lock = files_lock
        self.feedback = FeedbackStore(settings.data_dir)
        self.review = ReviewQueue(settings.data_dir, settings.review_band)

    async def take(
        self, records: Sequence[pb.PredictionRecord], context: Context
    ) -> Sequence[pb.PredictionRecord]:
        """Stores a batch's edge cases durably (before it is acknowledged) and returns its records
        that are predictions (refused requests are not)."""
        kept, cases = self.review.split(records)
        if cases:
            try:
                await asyncio.to_thread(self.review.store, cases, datetime.now(UTC))
            except StorageError as exc:
                await context.abort(_status(exc), str(exc))
        return kept

    def prune(self) -> None:
        """Retention (in the service's upkeep, with the files lock held)."""
        horizon = self.engine.horizon
        self.feedback.prune(horizon)
        self.review.prune(horizon)

    async def record_feedback(
        self, request: pb.RecordFeedbackRequest, context: Context
    ) -> pb.RecordFeedbackResponse:
        now = datetime.now(UTC)
        try:
            check_feedback(request.feedback, now, MAX_FEEDBACK)
        except FeedbackError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        caller = current_subject("")
        items: list[types_pb2.Feedback] = [stamped(fb, fb.actor or caller, now) for fb in request.feedback]
        async with self.lock:
            known = self.engine.labels.known([fb.request_id for fb in items])
        try:
            counts = await asyncio.to_thread(self.feedback.record, items, known, now)
        except StorageError as exc:
            await context.abort(_status(exc), str(exc))
            raise AssertionError from None  # unreachable; abort raises
        return pb.RecordFeedbackResponse(
            recorded=counts.recorded, duplicates=counts.duplicates, unknown=counts.unknown
        )

    async def list_review_cases(
        self, request: pb.ListReviewCasesRequest, context: Context
    ) -> pb.ListReviewCasesResponse:
        from finpredict.monitor.service import checked_dt  # the service imports this module

        try:
            now = datetime.now(UTC)
            clock = max(now, self.engine.event_clock() or now)
            end = checked_dt("end", request.end) if request.HasField("end") else clock + timedelta(seconds=1)
            start = (
                checked_dt("start", request.start) if request.HasField("start") else end - timedelta(days=1)
            )
            query = check_query(request.model, start, end, list(request.kinds), request.limit)
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError from None  # unreachable; abort raises
        band = self.review.band
        async with self.files_lock:  # no compaction or retention pass removes a file while it is read
            try:
                frame, truncated = await asyncio.to_thread(
                    list_cases, self.engine.store, self.review.log, query, band
                )
            except StoreReadError as exc:
                await context.abort(grpc.StatusCode.INTERNAL, str(exc))
                raise AssertionError from None  # unreachable; abort raises
        cases = []
        for row in frame.iter_rows(named=True):
            case = pb.ReviewCase(
                kind=KIND_VALUES[row["kind"]],
                request_id=row["request_id"] or "",
                entity_id=row["entity_id"] or "",
                model=types_pb2.ModelRef(name=row["model"] or "", version=row["version"] or 0),
                variant=row["variant"] or "",
                score=row["score"] if row["score"] is not None else 0.0,
                threshold=row["threshold"] if row["threshold"] is not None else 0.0,
                detail=row["detail"] or "",
            )
            case.time.FromDatetime(row["time"])
            cases.append(case)
        return pb.ListReviewCasesResponse(cases=cases, truncated=truncated, review_band=band)
