# ruff: noqa: N802  (gRPC method names are CamelCase)
"""``finpredict.rollout.v1.RolloutService``: rollouts, shadows and experiments over gRPC.

Reads need the ``reader`` role, every change ``admin`` (see :data:`METHOD_ROLES`); the
operator's subject is recorded as the rollout's ``started_by`` and in each decision's reason.
Every replica answers alike: reads come from the shared state (window metrics summed over the
replicas), and a change is one transaction there, applied by every replica within a second.
Without the database, calls answer ``UNAVAILABLE`` and change nothing.
"""

from __future__ import annotations

import json
import time
from typing import Any

import grpc

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as pb_grpc
from finpredict.common.auth import ADMIN, READER, current_subject
from finpredict.gateway.catalog import Catalog, CatalogError
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.experiment_stats import experiment_statistics
from finpredict.gateway.policies import Experiment, PolicyError, PolicyStore, Shadow
from finpredict.gateway.rollout import (
    DEFAULT_ANALYSIS_INTERVAL_S,
    DEFAULT_MIN_REQUESTS_PER_STEP,
    Rollout,
    RolloutConflictError,
    RolloutError,
)
from finpredict.gateway.rollout_proto import (
    check_id,
    check_model,
    experiment_to_proto,
    rollout_to_proto,
    thresholds_from_proto,
)
from finpredict.gateway.routing import Arm
from finpredict.gateway.state.db import StateUnavailableError

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
        "GetExperiment": READER,
    }.items()
}
Context = grpc.aio.ServicerContext[Any, Any]
MAX_PAGE = 200
MAX_ANALYSIS_INTERVAL_S = 7 * 86_400.0


class RolloutServicer(pb_grpc.RolloutServiceServicer):
    def __init__(self, controller: RolloutController, policies: PolicyStore, catalog: Catalog) -> None:
        self._controller = controller
        self._policies = policies
        self._catalog = catalog

    async def to_proto(self, r: Rollout) -> pb.Rollout:
        """The rollout with its window summed over the replicas, and the current leader (both left
        out when the database stops answering after a change was made: the change stands)."""
        try:
            holder = await self._controller.leader()
            window = await self._controller.window(r)
        except StateUnavailableError:
            return rollout_to_proto(r)
        return rollout_to_proto(r, window, holder.holder if holder.expires_at > time.time() else "")

    async def _abort_for(self, context: Context, exc: Exception) -> None:
        if isinstance(exc, StateUnavailableError):
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
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
            check_model(request.model)
            if request.candidate_version < 1:
                raise RolloutError("candidate_version: must be a registered version (>= 1)")
            interval = (
                request.analysis_interval.seconds + request.analysis_interval.nanos / 1e9
                if request.HasField("analysis_interval")
                else DEFAULT_ANALYSIS_INTERVAL_S
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
                min_requests_per_step=request.min_requests_per_step or DEFAULT_MIN_REQUESTS_PER_STEP,
                thresholds=thresholds_from_proto(request.thresholds),
                actor=current_subject(),
            )
            return pb.StartRolloutResponse(rollout=await self.to_proto(rollout))
        except (RolloutError, CatalogError, StateUnavailableError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc

    async def GetRollout(self, request: pb.GetRolloutRequest, context: Context) -> pb.GetRolloutResponse:
        try:
            if request.rollout_id:
                check_id(request.rollout_id, "rollout_id")
                rollout = await self._controller.get(request.rollout_id)
            elif request.model:
                check_model(request.model)
                rollout = await self._controller.latest(request.model)
            else:
                raise RolloutError("model or rollout_id: one is required")
            if rollout is None:
                await context.abort(
                    grpc.StatusCode.NOT_FOUND, f"no rollout for {request.rollout_id or request.model!r}"
                )
            assert rollout is not None
            return pb.GetRolloutResponse(rollout=await self.to_proto(rollout))
        except (RolloutError, StateUnavailableError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc

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
        try:
            if request.model:
                check_model(request.model)
            rollouts = await self._controller.list(request.model)
            page = rollouts[start : start + size]
            more = start + size < len(rollouts)
            return pb.ListRolloutsResponse(
                rollouts=[await self.to_proto(r) for r in page],
                next_page_token=str(start + size) if more else "",
            )
        except (RolloutError, StateUnavailableError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc

    async def _change(self, context: Context, action: str, rollout_id: str, reason: str) -> pb.Rollout:
        why = f"{current_subject()}: {reason}" if reason else f"{action} by {current_subject()}"
        try:
            check_id(rollout_id, "rollout_id")
            if action == "pause":
                rollout = await self._controller.pause(rollout_id, why)
            elif action == "resume":
                rollout = await self._controller.resume(rollout_id, why)
            elif action == "abort":
                rollout = await self._controller.abort(rollout_id, why)
            else:
                rollout = await self._controller.promote(rollout_id, why)
            return await self.to_proto(rollout)
        except (KeyError, RolloutError, StateUnavailableError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc

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
                await self._policies.set_shadow(None, request.model)
                return pb.SetShadowResponse(version=0, percent=0)
            await self._catalog.version(request.model, request.version)
            shadow = Shadow(request.model, request.version, request.percent or 100.0)
            await self._policies.set_shadow(shadow, request.model)
        except PolicyError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except CatalogError as exc:
            await context.abort(exc.code, str(exc))
        except StateUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.SetShadowResponse(version=shadow.version, percent=shadow.percent)

    async def StartExperiment(
        self, request: pb.StartExperimentRequest, context: Context
    ) -> pb.StartExperimentResponse:
        try:
            if not request.model:
                raise PolicyError("model: required")
            for arm in request.arms:
                await self._catalog.version(request.model, arm.version)
            exp = Experiment(
                request.model,
                [Arm(a.name, a.version, a.weight) for a in request.arms],
                started_by=current_subject(),
            )
            await self._policies.start_experiment(exp)
        except PolicyError as exc:
            code = (
                grpc.StatusCode.FAILED_PRECONDITION
                if "already" in str(exc) or "active" in str(exc)
                else (grpc.StatusCode.INVALID_ARGUMENT)
            )
            await context.abort(code, str(exc))
        except CatalogError as exc:
            await context.abort(exc.code, str(exc))
        except StateUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        return pb.StartExperimentResponse(experiment=experiment_to_proto(exp))

    async def StopExperiment(
        self, request: pb.StopExperimentRequest, context: Context
    ) -> pb.StopExperimentResponse:
        try:
            check_id(request.experiment_id, "experiment_id")
            exp = await self._policies.stop_experiment(request.experiment_id)
        except RolloutError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError("unreachable") from None
        except KeyError:
            await context.abort(
                grpc.StatusCode.NOT_FOUND, f"experiment_id: no running experiment {request.experiment_id!r}"
            )
            raise AssertionError("unreachable") from None
        except StateUnavailableError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            raise AssertionError("unreachable") from None
        return pb.StopExperimentResponse(experiment=experiment_to_proto(exp))

    async def GetExperiment(
        self, request: pb.GetExperimentRequest, context: Context
    ) -> pb.GetExperimentResponse:
        try:
            if request.experiment_id:
                check_id(request.experiment_id, "experiment_id")
            elif request.model:
                check_model(request.model)
            else:
                raise RolloutError("model or experiment_id: one is required")
            exp = await self._policies.find_experiment(
                model=request.model, experiment_id=request.experiment_id
            )
            if exp is None:
                what = (
                    f"experiment {request.experiment_id!r}"
                    if request.experiment_id
                    else (f"running experiment of {request.model!r}")
                )
                await context.abort(grpc.StatusCode.NOT_FOUND, f"no {what}")
            assert exp is not None
            arms, replicas = await self._controller.experiment_counts(exp.id)
        except (RolloutError, StateUnavailableError) as exc:
            await self._abort_for(context, exc)
            raise AssertionError("unreachable") from exc
        return pb.GetExperimentResponse(
            experiment=experiment_to_proto(exp),
            statistics=json.dumps(experiment_statistics(exp, arms)),
            replicas=replicas,
        )
