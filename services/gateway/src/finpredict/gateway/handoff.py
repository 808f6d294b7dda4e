"""Hand-off by policy: the rollout controller starts the canary of a new version by itself.

A model's promotion policy, held by the registry (``finpredict models policy``), may say that a
newly registered version that satisfies it enters a canary (``HandOff``, mode ``canary``, with
the rollout's steps and limits). The replica holding the controller lease polls the registry
every ``handoff_poll_s`` (:class:`HandOffWatcher`). For each model whose newest version is newer
than ``production``, it starts a rollout of that version when

- the policy's hand-off is ``canary`` and the version was registered after it was turned on
  (``after_version``),
- the registry says the version satisfies the policy (``GetPolicy`` with the version), and
- this gateway never rolled that version out (one rollout per version, whatever its end) and the
  model has no active rollout (otherwise it waits and looks again at the next poll).

The rollout is started by ``registry-policy`` and its start decision names the version, the
policy (who set it, when), and the version's trigger (``alert:<id>``, ``schedule`` ...). It is
stored under the controller's lease (fencing), so a replica that lost the lease starts nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import grpc

from finpredict.api.registry.v1 import registry_pb2
from finpredict.gateway import metrics
from finpredict.gateway.catalog import CatalogError
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.periodic import Periodic
from finpredict.gateway.rollout import (
    ACTIVE,
    DEFAULT_ANALYSIS_INTERVAL_S,
    DEFAULT_MIN_REQUESTS_PER_STEP,
    Rollout,
    RolloutConflictError,
    RolloutError,
)
from finpredict.gateway.rollout_proto import thresholds_from_proto
from finpredict.gateway.state.db import StateUnavailableError
from finpredict.gateway.state.lease import LeaseKeeper, LeaseLostError

log = logging.getLogger("finpredict.gateway.handoff")
ACTOR = "registry-policy"  # the rollout's started_by
PRODUCTION = "production"
PAGE = 200


class HandOffWatcher:
    """The leader's watch of the registry for versions their policy hands off to a canary."""

    def __init__(
        self,
        stub: Any,
        metadata: Callable[[], tuple[tuple[str, str], ...]],
        controller: RolloutController,
        lease: LeaseKeeper,
        *,
        poll_s: float,
        timeout_s: float = 5.0,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._controller = controller
        self._lease = lease
        self._timeout = timeout_s
        self._refused: set[tuple[str, int]] = set()  # versions whose settings StartRollout refused
        self._loop = Periodic(
            "rollout hand-off",
            self.tick,
            poll_s,
            log,
            (StateUnavailableError, CatalogError, grpc.aio.AioRpcError),  # the registry or state away
        )

    async def _registry(self, method: str, request: Any) -> Any:
        return await getattr(self._stub, method)(request, metadata=self._metadata(), timeout=self._timeout)

    async def _models(self) -> list[registry_pb2.Model]:
        models: list[registry_pb2.Model] = []
        token = ""
        while True:
            resp = await self._registry(
                "ListModels", registry_pb2.ListModelsRequest(page_size=PAGE, page_token=token)
            )
            models.extend(resp.models)
            token = resp.next_page_token
            if not token:
                return models

    async def tick(self) -> list[Rollout]:
        """One look at the registry while this replica holds the lease; the rollouts it started."""
        if self._lease.fence is None:
            return []
        started: list[Rollout] = []
        for model in await self._models():
            production = int(model.aliases.get(PRODUCTION, 0))
            newest = int(model.latest_version)
            if not production or newest <= production or (model.name, newest) in self._refused:
                continue
            rollout = await self._hand_off(model.name, newest)
            if rollout is not None:
                started.append(rollout)
        return started

    async def _hand_off(self, model: str, version: int) -> Rollout | None:
        rollout, outcome = await self._check(model, version)
        if outcome:
            metrics.HANDOFF_CHECKS_TOTAL.labels(model, outcome).inc()
        return rollout

    async def _check(self, model: str, version: int) -> tuple[Rollout | None, str]:
        """Starts the rollout of ``version`` when it is due; the rollout and the check's outcome
        (:data:`~finpredict.gateway.metrics.HANDOFF_CHECKS_TOTAL`; "" when nothing was decided)."""
        rollouts = await self._controller.list(model)
        if any(r.candidate_version == version for r in rollouts):
            return None, "rolled_out"  # handed off (or rolled out by an operator) before
        if any(r.state in ACTIVE for r in rollouts):
            return None, "waiting"  # waits for the active rollout to end
        try:
            got = await self._registry(
                "GetPolicy", registry_pb2.GetPolicyRequest(model=model, version=version)
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION):
                return None, ""  # deleted meanwhile
            raise
        policy, check = got.policy, got.check
        h = policy.hand_off
        if h.mode != registry_pb2.HAND_OFF_MODE_CANARY or version <= h.after_version:
            return None, "off"
        if not check.promotable:
            log.debug(
                "version not handed off: it does not satisfy the policy",
                extra={"model": model, "version": version, "problems": list(check.problems)},
            )
            return None, "unsatisfied"
        lineage = await self._registry(
            "GetLineage", registry_pb2.GetLineageRequest(model=model, version=version)
        )
        set_by = (
            "the registry's default"
            if policy.is_default
            else f"set by {policy.updated_by} at {policy.updated_at.ToJsonString()}"
        )
        why = (
            f"v{version} (trigger {lineage.lineage.trigger or 'unknown'}) satisfies {model}'s promotion "
            f"policy ({set_by}), whose hand-off is canary for versions after v{h.after_version}"
        )
        interval = h.analysis_interval.ToNanoseconds() / 1e9
        fence = self._lease.fence
        if fence is None:
            return None, ""
        try:
            rollout = await self._controller.start(
                model,
                version,
                steps=list(h.steps),
                analysis_interval_s=interval or DEFAULT_ANALYSIS_INTERVAL_S,
                min_requests_per_step=int(h.min_requests_per_step) or DEFAULT_MIN_REQUESTS_PER_STEP,
                thresholds=thresholds_from_proto(h.thresholds),
                actor=ACTOR,
                why=why,
                fence=fence,
            )
        except LeaseLostError:
            self._lease.lost(fence, "a rollout started by policy was refused")
            return None, ""
        except RolloutConflictError:
            return None, "waiting"  # an operator started one meanwhile: the next poll looks again
        except RolloutError as exc:
            self._refused.add((model, version))
            log.warning(
                "the policy's rollout settings were refused", extra={"model": model, "error": str(exc)}
            )
            return None, "refused"
        log.info(
            "rollout started by policy",
            extra={
                "rollout": rollout.id,
                "model": model,
                "version": version,
                "trigger": lineage.lineage.trigger,
            },
        )
        return rollout, "started"

    # ----- the loop ----------------------------------------------------------------------------

    def start(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()
