"""The rollout controller: measures both variants, runs the analysis, promotes or rolls back.

Every scored application of a rollout's model is recorded in the current step's window (one
:class:`VariantWindow` for stable and one for the canary, over the same time span). Every
``analysis_interval`` the window is analysed (:func:`finpredict.gateway.analysis.analyze`):

- ``wait`` keeps the window open (not enough traffic is never a pass);
- ``rollback`` sets the canary weight to 0 at once, leaves the registry's aliases alone, and
  records the reason (a log event and ``finpredict_gateway_rollout_decisions_total{verdict=
  "rollback"}``, which the Prometheus alert rule turns into an alert);
- ``advance`` moves to the next step with a fresh window; passing the last step below 100 %
  moves ``production`` in the registry by compare-and-set (expected: the stable version the
  rollout started from) and only then marks the rollout promoted.

State changes are written to the store before they take effect, so a restarted gateway resumes
each rollout at its step (with a fresh window: measurements are not persisted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import grpc

from finpredict.gateway import metrics
from finpredict.gateway.analysis import Thresholds, VariantWindow, Verdict, analyze
from finpredict.gateway.catalog import Catalog, CatalogError
from finpredict.gateway.rollout import (
    ACTIVE,
    Decision,
    Rollout,
    RolloutConflictError,
    RolloutState,
    RolloutStore,
)
from finpredict.gateway.routing import Split

log = logging.getLogger("finpredict.gateway.controller")


@dataclass
class StepWindow:
    """Both variants' measurements since the current step (or the last analysis) began."""

    started: float
    stable: VariantWindow = field(default_factory=VariantWindow)
    canary: VariantWindow = field(default_factory=VariantWindow)


class RolloutController:
    """Owns the active rollouts of this gateway and the loop that analyses them."""

    def __init__(
        self,
        store: RolloutStore,
        catalog: Catalog,
        tick_s: float = 0.5,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._catalog = catalog
        self._tick = tick_s
        self._clock = clock
        self._active: dict[str, Rollout] = {}
        self._windows: dict[str, StepWindow] = {}
        self._splits: dict[str, tuple[tuple[str, int, str], Split]] = {}
        self._last: dict[str, Verdict] = {}
        self._promoting: set[str] = set()  # rollouts with a registry call in flight (never two at once)
        self._task: asyncio.Task[None] | None = None
        for rollout in store.active():
            self._active[rollout.model] = rollout
            self._windows[rollout.id] = StepWindow(self._clock())
            self._export(rollout)
            log.info(
                "resumed rollout",
                extra={
                    "rollout": rollout.id,
                    "model": rollout.model,
                    "step": rollout.step_index,
                    "state": rollout.state.value,
                },
            )

    # ----- request path ------------------------------------------------------------------------

    def active(self, model: str) -> Rollout | None:
        """The model's rollout while it still routes traffic to the canary."""
        return self._active.get(model)

    def split(self, rollout: Rollout) -> Split:
        key = (rollout.state.value, rollout.step_index, rollout.id)
        cached = self._splits.get(rollout.model)
        if cached is None or cached[0] != key:
            cached = (key, rollout.split())
            self._splits[rollout.model] = cached
        return cached[1]

    def record(
        self, rollout_id: str, variant: str, *, ok: bool, latency_ms: float, score: float | None = None
    ) -> None:
        window = self._windows.get(rollout_id)
        if window is None:
            return
        side = window.canary if variant == "canary" else window.stable
        side.record(ok=ok, latency_ms=latency_ms, score=score)

    def window(self, rollout_id: str) -> StepWindow | None:
        return self._windows.get(rollout_id)

    def last_verdict(self, rollout_id: str) -> Verdict | None:
        return self._last.get(rollout_id)

    # ----- operator actions --------------------------------------------------------------------

    async def start(
        self,
        model: str,
        candidate_version: int,
        *,
        steps: Sequence[float] = (),
        analysis_interval_s: float = 60.0,
        min_requests_per_step: int = 200,
        thresholds: Thresholds | None = None,
        actor: str = "",
    ) -> Rollout:
        if model in self._active:
            raise RolloutConflictError(
                f"model: {model!r} already has an active rollout ({self._active[model].id})"
            )
        stable = await self._catalog.production(model)
        await self._catalog.version(model, candidate_version)  # exists, and its schema is cached
        kwargs: dict[str, object] = {}
        if steps:
            kwargs["steps"] = [float(s) for s in steps]
        rollout = Rollout(
            model=model,
            stable_version=stable,
            candidate_version=candidate_version,
            analysis_interval_s=analysis_interval_s,
            min_requests_per_step=min_requests_per_step,
            thresholds=thresholds or Thresholds(),
            started_by=actor,
            **kwargs,  # type: ignore[arg-type]
        )
        rollout.decisions.append(
            Decision(
                self._clock(),
                rollout.step_index,
                "start",
                f"{actor or 'someone'} started {model} v{stable} -> v{candidate_version}",
            )
        )
        self._store.create(rollout)
        self._active[model] = rollout
        self._windows[rollout.id] = StepWindow(self._clock())
        self._export(rollout)
        log.info(
            "rollout started",
            extra={
                "rollout": rollout.id,
                "model": model,
                "stable": stable,
                "candidate": candidate_version,
                "steps": rollout.steps,
            },
        )
        return rollout

    def get(self, rollout_id: str) -> Rollout | None:
        for rollout in self._active.values():
            if rollout.id == rollout_id:
                return rollout
        return self._store.get(rollout_id)

    def latest(self, model: str) -> Rollout | None:
        if model in self._active:
            return self._active[model]
        found = self._store.list(model)
        return found[0] if found else None

    def list(self, model: str = "") -> list[Rollout]:
        live = {r.id: r for r in self._active.values()}
        return [live.get(r.id, r) for r in self._store.list(model)]

    def _running(self, rollout_id: str) -> Rollout:
        rollout = self.get(rollout_id)
        if rollout is None:
            raise KeyError(rollout_id)
        if rollout.state not in ACTIVE:
            raise RolloutConflictError(f"rollout {rollout_id} has ended ({rollout.state.value})")
        return rollout

    def pause(self, rollout_id: str, reason: str) -> Rollout:
        rollout = self._running(rollout_id)
        rollout.pause(reason, self._clock())
        self._commit(rollout, "pause")
        return rollout

    def resume(self, rollout_id: str, reason: str) -> Rollout:
        rollout = self._running(rollout_id)
        rollout.resume(reason, self._clock())
        self._windows[rollout.id] = StepWindow(self._clock())
        self._commit(rollout, "resume")
        return rollout

    def abort(self, rollout_id: str, reason: str) -> Rollout:
        rollout = self._running(rollout_id)
        rollout.abort(reason, self._clock())
        self._commit(rollout, "abort")
        return rollout

    async def promote(self, rollout_id: str, reason: str) -> Rollout:
        rollout = self._running(rollout_id)
        rollout.request_promotion(reason, self._clock())
        self._commit(rollout, "promote")
        await self._promote(rollout)
        return rollout

    # ----- the loop ----------------------------------------------------------------------------

    def start_loop(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="rollout-controller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self.tick()
            except Exception:
                log.exception("rollout controller tick failed")
            await asyncio.sleep(self._tick)

    async def tick(self) -> None:
        """One pass over the active rollouts (the loop calls it every ``tick_s``)."""
        now = self._clock()
        for rollout in list(self._active.values()):
            if rollout.state is RolloutState.PROMOTING:
                await self._promote(rollout)
            elif rollout.state is RolloutState.PROGRESSING:
                window = self._windows.setdefault(rollout.id, StepWindow(now))
                if now - window.started >= rollout.analysis_interval_s:
                    self._analyse(rollout, window, now)
                    if rollout.state is RolloutState.PROMOTING:  # type: ignore[comparison-overlap]
                        await self._promote(rollout)

    def _analyse(self, rollout: Rollout, window: StepWindow, now: float) -> None:
        verdict = analyze(window.stable, window.canary, rollout.thresholds, rollout.min_requests_per_step)
        self._last[rollout.id] = verdict
        step = rollout.step_index
        rollout.apply(verdict, now)
        previous = rollout.decisions[-2] if len(rollout.decisions) > 1 else None
        if (
            verdict.action == "wait"
            and previous is not None
            and (previous.verdict, previous.step_index) == ("wait", step)
        ):
            rollout.decisions.pop(-2)  # keep one "wait" per stretch of waiting, with the latest figures
        self._commit(rollout, verdict.action)
        extra = {"rollout": rollout.id, "model": rollout.model, "step": step, "reason": verdict.reason}
        if verdict.action == "rollback":
            log.warning("rollout rolled back", extra=extra)
        elif verdict.action == "advance":
            log.info("rollout advanced", extra={**extra, "weight": rollout.weight})
        if verdict.action != "wait":
            self._windows[rollout.id] = StepWindow(now)

    async def _promote(self, rollout: Rollout) -> None:
        if rollout.id in self._promoting or rollout.state is not RolloutState.PROMOTING:
            return
        self._promoting.add(rollout.id)
        try:
            await self._move_production(rollout)
        finally:
            self._promoting.discard(rollout.id)

    async def _move_production(self, rollout: Rollout) -> None:
        reason = (
            f"rollout {rollout.id}: v{rollout.candidate_version} passed {rollout.steps} "
            "(by the rollout controller)"
        )
        try:
            await self._catalog.set_production(
                rollout.model, rollout.candidate_version, expected=rollout.stable_version, reason=reason
            )
        except (grpc.aio.AioRpcError, CatalogError) as exc:
            code = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else exc.code
            details = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else str(exc)
            if code == grpc.StatusCode.ABORTED and await self._already_production(rollout):
                pass  # an earlier attempt moved it (e.g. before a restart): the promotion happened
            elif code in (
                grpc.StatusCode.ABORTED,
                grpc.StatusCode.FAILED_PRECONDITION,
                grpc.StatusCode.NOT_FOUND,
            ):
                rollout.state, rollout.ended_at = RolloutState.ABORTED, self._clock()
                rollout.decisions.append(
                    Decision(
                        self._clock(),
                        rollout.step_index,
                        "abort",
                        f"promotion refused by the registry: {details}",
                    )
                )
                self._commit(rollout, "abort")
                log.warning("promotion refused", extra={"rollout": rollout.id, "reason": details})
                return
            else:
                log.warning(
                    "promotion failed, will retry", extra={"rollout": rollout.id, "grpc_code": code.name}
                )
                return
        rollout.mark_promoted(self._clock())
        self._commit(rollout, "promoted")
        log.info(
            "rollout promoted",
            extra={"rollout": rollout.id, "model": rollout.model, "version": rollout.candidate_version},
        )

    async def _already_production(self, rollout: Rollout) -> bool:
        self._catalog.invalidate(rollout.model)
        try:
            return await self._catalog.production(rollout.model) == rollout.candidate_version
        except CatalogError:
            return False

    def _commit(self, rollout: Rollout, verdict: str) -> None:
        self._store.save(rollout)
        metrics.ROLLOUT_DECISIONS_TOTAL.labels(rollout.model, verdict).inc()
        if rollout.state not in ACTIVE:
            self._active.pop(rollout.model, None)
            self._windows.pop(rollout.id, None)
        self._export(rollout)

    def _export(self, rollout: Rollout) -> None:
        metrics.ROLLOUT_WEIGHT_PERCENT.labels(rollout.model).set(rollout.weight)
        metrics.ROLLOUT_STEP.labels(rollout.model).set(rollout.step_index)
