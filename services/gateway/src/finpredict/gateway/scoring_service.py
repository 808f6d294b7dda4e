# ruff: noqa: N802  (gRPC method names are CamelCase)
"""``finpredict.scoring.v1.ScoringService``: Score and ScoreBatch on the shared request path, and
RecordOutcomes and RecordFeedback forwarded to the monitor (:mod:`~finpredict.gateway.outcomes`,
:mod:`~finpredict.gateway.feedback`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from finpredict.api.common.v1 import types_pb2
from finpredict.api.scoring.v1 import scoring_pb2 as pb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as pb_grpc
from finpredict.common.telemetry import current_trace_id
from finpredict.gateway.backend import BackendError, bound_by_client
from finpredict.gateway.catalog import CatalogError
from finpredict.gateway.feedback import FeedbackForwarder
from finpredict.gateway.outcomes import MonitorError, OutcomeForwarder
from finpredict.gateway.scoring import Application, Result, ScoringCore
from finpredict.gateway.validation import RequestError, validate_batch_size

T = TypeVar("T")
Context = grpc.aio.ServicerContext[Any, Any]

_VARIANTS = {
    "stable": pb.VARIANT_STABLE,
    "canary": pb.VARIANT_CANARY,
    "experiment": pb.VARIANT_EXPERIMENT,
}
MAX_TOP_K = 45


async def guarded(context: Context, call: Callable[[], Awaitable[T]]) -> T:
    """Runs ``call``, turning the request path's errors into gRPC statuses with their messages;
    its model-server calls never outlive the client's deadline."""
    bound_by_client(context.time_remaining())
    try:
        return await call()
    except RequestError as exc:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
    except (CatalogError, BackendError, MonitorError) as exc:
        await context.abort(exc.code, str(exc))
    raise AssertionError("unreachable")


def check_top_k(explain: bool, top_k: int) -> int:
    if top_k < 0 or top_k > MAX_TOP_K:
        raise RequestError(f"top_k: {top_k} is outside [0, {MAX_TOP_K}]")
    return (top_k or 4) if explain else 0


def to_score(model: str, result: Result, explain: bool) -> pb.Score:
    p = result.prediction
    return pb.Score(
        request_id=result.request_id,
        entity_id=result.entity_id,
        score=p.score,
        decision=pb.DECISION_DECLINE if p.score >= result.threshold else pb.DECISION_APPROVE,
        threshold=result.threshold,
        model=types_pb2.ModelRef(name=model, version=result.version),
        variant=_VARIANTS.get(result.route.variant, pb.VARIANT_UNSPECIFIED),
        arm=result.route.arm,
        reason_codes=p.reason_codes if explain else (),
    )


class ScoringServicer(pb_grpc.ScoringServiceServicer):
    def __init__(
        self,
        core: ScoringCore,
        max_request_rows: int = 1000,
        outcomes: OutcomeForwarder | None = None,
        feedback: FeedbackForwarder | None = None,
    ) -> None:
        self._core = core
        self._max_rows = max_request_rows
        self._outcomes = outcomes
        self._feedback = feedback

    async def Score(self, request: pb.ScoreRequest, context: Context) -> pb.ScoreResponse:
        async def call() -> pb.ScoreResponse:
            if not request.HasField("application"):
                raise RequestError("application: required")
            top_k = check_top_k(request.explain, request.top_k)
            a = request.application
            results = await self._core.score(
                request.model,
                [Application(a.entity_id, a.features, a.request_id, a.attributes)],
                explain=request.explain,
                top_k=top_k,
                paths=["application"],
            )
            score = to_score(request.model, results[0], request.explain)
            return pb.ScoreResponse(result=score, trace_id=current_trace_id())

        return await guarded(context, call)

    async def ScoreBatch(self, request: pb.ScoreBatchRequest, context: Context) -> pb.ScoreBatchResponse:
        async def call() -> pb.ScoreBatchResponse:
            validate_batch_size(len(request.applications), limit=self._max_rows)
            top_k = check_top_k(request.explain, request.top_k)
            results = await self._core.score(
                request.model,
                [
                    Application(a.entity_id, a.features, a.request_id, a.attributes)
                    for a in request.applications
                ],
                explain=request.explain,
                top_k=top_k,
            )
            scores = [to_score(request.model, r, request.explain) for r in results]
            return pb.ScoreBatchResponse(results=scores, trace_id=current_trace_id())

        return await guarded(context, call)

    async def RecordOutcomes(
        self, request: pb.RecordOutcomesRequest, context: Context
    ) -> pb.RecordOutcomesResponse:
        outcomes = self._outcomes
        if outcomes is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this gateway has no monitor (its monitor target is empty): outcomes cannot be recorded",
            )
            raise AssertionError("unreachable")
        return await guarded(context, lambda: outcomes.record(request, context.time_remaining()))

    async def RecordFeedback(
        self, request: pb.RecordFeedbackRequest, context: Context
    ) -> pb.RecordFeedbackResponse:
        feedback = self._feedback
        if feedback is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "this gateway has no monitor (its monitor target is empty): feedback cannot be recorded",
            )
            raise AssertionError("unreachable")
        return await guarded(context, lambda: feedback.record(request, context.time_remaining()))
