# ruff: noqa: N802  (gRPC method names are CamelCase)
"""``finpredict.rollout.v1.RolloutService``: rollouts, shadows and experiments over gRPC.

Reads need the ``reader`` role, every change ``admin`` (see :data:`METHOD_ROLES`); the
operator's subject is recorded as the rollout's ``started_by`` and in each decision's reason.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as pb_grpc
from finpredict.common.auth import ADMIN, READER, current_subject
from finpredict.gateway.analysis import Thresholds, VariantWindow
from finpredict.gateway.catalog import Catalog, CatalogError
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.policies import Experiment, PolicyError, PolicyStore, Shadow
from finpredict.gateway.rollout import Rollout, RolloutConflictError, RolloutError, RolloutState
from finpredict.gateway.routing import Arm

SERVICE = pb.DESCRIPTOR.services_by_name["RolloutService"].full_name
METHOD_ROLES: dict[str, str] = {
    f"/{SERVICE}/{method}": role
    for method, role in {
        "StartRollout": ADMIN,
        "GetRollout": READER,
        "ListRollouts": READER,
        "PauseRollout": ADMIN,
        "ResumeRollout": ADMIN,
        "AbortRollout": ADMIN,
        "PromoteRollout": ADMIN,
        "SetShadow": ADMIN,
        "StartExperiment": ADMIN,
        "StopExperiment": ADMIN,
    }.items()
}
Context = grpc.aio.ServicerContext[Any, Any]
_STATES = {
    RolloutState.PROGRESSING: pb.ROLLOUT_STATE_PROGRESSING,
    RolloutState.PROMOTING: pb.ROLLOUT_STATE_PROGRESSING,
    RolloutState.PAUSED: pb.ROLLOUT_STATE_PAUSED,
    RolloutState.PROMOTED: pb.ROLLOUT_STATE_PROMOTED,
    RolloutState.ROLLED_BACK: pb.ROLLOUT_STATE_ROLLED_BACK,
    RolloutState.ABORTED: pb.ROLLOUT_STATE_ABORTED,
}
MAX_PAGE = 200
MAX_ANALYSIS_INTERVAL_S = 7 * 86_400.0


def _ts(t: float) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    if t:
        ts.FromNanoseconds(int(t * 1e9))
    return ts


def _variant_metrics(name: str, version: int, w: VariantWindow) -> pb.VariantMetrics:
    return pb.VariantMetrics(
        variant=name,
        version=version,
        requests=w.requests,
        error_rate=w.error_rate,
        p50_latency_ms=w.latency_ms(0.5),
        p99_latency_ms=w.latency_ms(0.99),
        mean_score=sum(w.scores) / len(w.scores) if w.scores else 0.0,
    )


def thresholds_from_proto(t: pb.AnalysisThresholds) -> Thresholds:
    """Thresholds with the defaults for every field left at 0; negative values are refused."""
    base = Thresholds()
    values: dict[str, float] = {}
    for name in (
        "max_error_rate_increase",
        "max_p99_latency_ms",
        "max_p99_latency_ratio",
        "max_score_psi",
        "max_score_kl",
        "max_auc_drop",
    ):
        v = float(getattr(t, name))
        if v < 0 or v != v:
            raise RolloutError(f"thresholds.{name}: {v} must be a non-negative number")
        values[name] = v or float(getattr(base, name))
    return Thresholds(**values, min_labeled=base.min_labeled)


class RolloutServicer(pb_grpc.RolloutServiceServicer):
    def __init__(self, controller: RolloutController, policies: PolicyStore, catalog: Catalog) -> None:
        self._controller = controller
        self._policies = policies
        self._catalog = catalog

    def to_proto(self, r: Rollout) -> pb.Rollout:
        out = pb.Rollout(
            id=r.id,
            model=r.model,
            stable_version=r.stable_version,
            candidate_version=r.candidate_version,
            steps=r.steps,
            step_index=min(r.step_index, len(r.steps) - 1),
            weight=r.weight,
            state=_STATES[r.state],
            analysis_interval=duration_pb2.Duration(
                seconds=int(r.analysis_interval_s), nanos=int((r.analysis_interval_s % 1) * 1e9)
            ),
            min_requests_per_step=r.min_requests_per_step,
            thresholds=pb.AnalysisThresholds(
                max_error_rate_increase=r.thresholds.max_error_rate_increase,
                max_p99_latency_ms=r.thresholds.max_p99_latency_ms,
                max_p99_latency_ratio=r.thresholds.max_p99_latency_ratio,
                max_score_psi=r.thresholds.max_score_psi,
                max_score_kl=r.thresholds.max_score_kl,
                max_auc_drop=r.thresholds.max_auc_drop,
            ),
            decisions=[
                pb.Decision(time=_ts(d.time), step_index=d.step_index, verdict=d.verdict, reason=d.reason)
                for d in r.decisions
            ],
            started_at=_ts(r.started_at),
            ended_at=_ts(r.ended_at),
            started_by=r.started_by,
        )
        window = self._controller.window(r.id)
        if window is not None:
            out.metrics.append(_variant_metrics("stable", r.stable_version, window.stable))
            out.metrics.append(_variant_metrics("canary", r.candidate_version, window.canary))
        return out

    async def _abort_for(self, context: Context, exc: Exception) -> None:
        if isinstance(exc, KeyError):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"rollout_id: no rollout {exc.args[0]!r}")
        if isinstance(exc, CatalogError):
            await context.abort(exc.code, str(exc))
        if isinstance(exc, RolloutConflictError):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def StartRollout(
        self, request: pb.StartRolloutRequest, context: Context
    ) -> pb.StartRolloutResponse:
        try:
            if not request.model:
                raise RolloutError("model: required")
            if request.candidate_version < 1:
                raise RolloutError("candidate_version: must be a registered version (>= 1)")
            if request.model in self._policies.experiments:
                raise RolloutConflictError(
                    f"model: {request.model!r} has a running experiment; stop it first"
                )
            interval = (
                request.analysis_interval.seconds + request.analysis_interval.nanos / 1e9
                if request.HasField("analysis_interval")
                else 60.0
            )
            if not 0 < interval <= MAX_ANALYSIS_INTERVAL_S:
                raise RolloutError("analysis_interval: must be positive and at most 7 days")
            if request.min_requests_per_step < 0:
                raise RolloutError("min_requests_per_step: must not be negative")
            rollout = await self._controller.start(
                request.model,
                request.candidate_version,
                steps=list(request.steps),
                analysis_interval_s=interval,
                min_requests_per_step=request.min_requests_per_step or 200,
                thresholds=thresholds_from_proto(request.thresholds),
                actor=current_subject(),
            )
        except (RolloutError, CatalogError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc
        return pb.StartRolloutResponse(rollout=self.to_proto(rollout))

    async def GetRollout(self, request: pb.GetRolloutRequest, context: Context) -> pb.GetRolloutResponse:
        if request.rollout_id:
            rollout = self._controller.get(request.rollout_id)
        elif request.model:
            rollout = self._controller.latest(request.model)
        else:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model or rollout_id: one is required")
            raise AssertionError("unreachable")
        if rollout is None:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"no rollout for {request.rollout_id or request.model!r}"
            )
        assert rollout is not None
        return pb.GetRolloutResponse(rollout=self.to_proto(rollout))

    async def ListRollouts(
        self, request: pb.ListRolloutsRequest, context: Context
    ) -> pb.ListRolloutsResponse:
        if request.page_size < 0 or request.page_size > MAX_PAGE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"page_size: must be in [0, {MAX_PAGE}]")
        size = request.page_size or 50
        try:
            start = int(request.page_token or "0")
        except ValueError:
            start = -1
        if start < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "page_token: not a token from ListRollouts")
        rollouts = self._controller.list(request.model)
        page = rollouts[start : start + size]
        more = start + size < len(rollouts)
        return pb.ListRolloutsResponse(
            rollouts=[self.to_proto(r) for r in page], next_page_token=str(start + size) if more else ""
        )

    async def _change(self, context: Context, action: str, rollout_id: str, reason: str) -> pb.Rollout:
        why = f"{current_subject()}: {reason}" if reason else f"{action} by {current_subject()}"
        try:
            if action == "pause":
                rollout = self._controller.pause(rollout_id, why)
            elif action == "resume":
                rollout = self._controller.resume(rollout_id, why)
            elif action == "abort":
                rollout = self._controller.abort(rollout_id, why)
            else:
                rollout = await self._controller.promote(rollout_id, why)
        except (KeyError, RolloutError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc
        return self.to_proto(rollout)

    async def PauseRollout(
        self, request: pb.PauseRolloutRequest, context: Context
    ) -> pb.PauseRolloutResponse:
        return pb.PauseRolloutResponse(
            rollout=await self._change(context, "pause", request.rollout_id, request.reason)
        )

    async def ResumeRollout(
        self, request: pb.ResumeRolloutRequest, context: Context
    ) -> pb.ResumeRolloutResponse:
        return pb.ResumeRolloutResponse(
            rollout=await self._change(context, "resume", request.rollout_id, request.reason)
        )

    async def AbortRollout(
        self, request: pb.AbortRolloutRequest, context: Context
    ) -> pb.AbortRolloutResponse:
        return pb.AbortRolloutResponse(
            rollout=await self._change(context, "abort", request.rollout_id, request.reason)
        )

    async def PromoteRollout(
        self, request: pb.PromoteRolloutRequest, context: Context
    ) -> pb.PromoteRolloutResponse:
        return pb.PromoteRolloutResponse(
            rollout=await self._change(context, "promote", request.rollout_id, request.reason)
        )

    async def SetShadow(self, request: pb.SetShadowRequest, context: Context) -> pb.SetShadowResponse:
        try:
            if not request.model:
                raise PolicyError("model: required")
            if request.version < 0:
                raise PolicyError("version: must not be negative (0 stops mirroring)")
            if request.version == 0:
                self._policies.set_shadow(None, request.model)
                return pb.SetShadowResponse(version=0, percent=0)
            await self._catalog.version(request.model, request.version)
            shadow = Shadow(request.model, request.version, request.percent or 100.0)
            self._policies.set_shadow(shadow, request.model)
        except PolicyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CatalogError as exc:
            await context.abort(exc.code, str(exc))
        return pb.SetShadowResponse(version=shadow.version, percent=shadow.percent)

    async def StartExperiment(
        self, request: pb.StartExperimentRequest, context: Context
    ) -> pb.StartExperimentResponse:
        try:
            if not request.model:
                raise PolicyError("model: required")
            if self._controller.active(request.model) is not None:
                raise PolicyError(f"model: {request.model!r} has an active rollout; finish it first")
            for arm in request.arms:
                await self._catalog.version(request.model, arm.version)
            exp = Experiment(
                request.model,
                [Arm(a.name, a.version, a.weight) for a in request.arms],
                started_by=current_subject(),
            )
            self._policies.start_experiment(exp)
        except PolicyError as exc:
            code = (
                grpc.StatusCode.FAILED_PRECONDITION
                if "already" in str(exc) or "active" in str(exc)
                else (grpc.StatusCode.INVALID_ARGUMENT)
            )
            await context.abort(code, str(exc))
        except CatalogError as exc:
            await context.abort(exc.code, str(exc))
        return pb.StartExperimentResponse(experiment=_experiment(exp))

    async def StopExperiment(
        self, request: pb.StopExperimentRequest, context: Context
    ) -> pb.StopExperimentResponse:
        try:
            exp = self._policies.stop_experiment(request.experiment_id)
        except KeyError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"experiment_id: no running experiment {request.experiment_id!r}"
            )
            raise AssertionError("unreachable") from None
        return pb.StopExperimentResponse(experiment=_experiment(exp))


def _experiment(exp: Experiment) -> pb.Experiment:
    return pb.Experiment(
        id=exp.id,
        model=exp.model,
        arms=[pb.ExperimentArm(name=a.name, version=a.version, weight=a.weight) for a in exp.arms],
        started_at=_ts(exp.started_at),
        stopped_at=_ts(exp.stopped_at),
    )
