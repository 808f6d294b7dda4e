"""The rollout controller: operator actions from any replica, and the analysis on exactly one.

Every replica measures what it routes (:class:`~finpredict.gateway.live.LiveRollouts`) and
publishes it. The replica holding the controller lease (:mod:`finpredict.gateway.state.lease`)
analyses each progressing rollout every ``analysis_interval`` over the sum of every replica's
measurements of the current window (:func:`finpredict.gateway.analysis.analyze`):

- ``wait`` keeps the window open (not enough traffic is never a pass);
- ``rollback`` sets the canary weight to 0 at once, leaves the registry's aliases alone, and
  records the reason (a log event and ``finpredict_gateway_rollout_decisions_total{verdict=
  "rollback"}``, which the Prometheus alert rule turns into an alert);
- ``advance`` moves to the next step with a fresh window; passing the last step below 100 %
  moves ``production`` in the registry by compare-and-set (expected: the stable version the
  rollout started from) and only then marks the rollout promoted.

The statistics (:mod:`finpredict.gateway.canary_stats`) judge the counts since the rollout
started at each analysis too: their rollback rolls back, and a sample-ratio mismatch halts
(pauses) the rollout with ``finpredict_gateway_rollout_sample_ratio_mismatch_total`` counted for
the alert. With them the model checks: each variant's inputs and scores, counted on its own
reference profile by every replica (:mod:`finpredict.gateway.inputs`), give the training/serving
skew (a rollback names the worst feature) and the prediction consistency; the canary's score
drift against stable decides after them, and only for a candidate without a reference profile
or while stable's own traffic still fits stable's own profile (no population shift then explains
a canary scoring unlike stable). Each analysis decision records the statistics' figures
(``model_checks`` says which check of the scores decided, and why).

Every change is a compare-and-set on the stored rollout, so a step or a promotion is recorded
once however many replicas try; a decision is written only while this replica's lease token is
still current (fencing): one that lost its lease logs "lost the controller lease, decision not
written" and writes nothing. A replica that takes over resumes each rollout at its step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

import grpc

from finpredict.gateway import metrics
from finpredict.gateway.analysis import Thresholds, Verdict, analyze
from finpredict.gateway.canary_stats import (
    combine,
    cumulative_inputs,
    cumulative_strata,
    halts,
    model_checks,
    stat_limits,
)
from finpredict.gateway.catalog import Catalog, CatalogError
from finpredict.gateway.experiment_stats import EXPERIMENT_WINDOW, merged_counts
from finpredict.gateway.live import LiveRollouts
from finpredict.gateway.periodic import Periodic
from finpredict.gateway.rollout import (
    ACTIVE,
    DEFAULT_ANALYSIS_INTERVAL_S,
    DEFAULT_MIN_REQUESTS_PER_STEP,
    Decision,
    Rollout,
    RolloutConflictError,
    RolloutState,
    RolloutStore,
    StaleRolloutError,
)
from finpredict.gateway.routing import Split
from finpredict.gateway.state.db import StateUnavailableError, call
from finpredict.gateway.state.lease import Fence, LeaseHolder, LeaseKeeper, LeaseLostError
from finpredict.gateway.state.sync import Applied
from finpredict.gateway.state.windows import StepWindow, WindowStore, merge_windows
from finpredict.gateway.stats import ArmCounts, CanaryEvidence, evaluate

log = logging.getLogger("finpredict.gateway.controller")
CHANGE_ATTEMPTS = 5  # an operator change retried when a decision was written meanwhile
PRUNE_EVERY_S = 30.0  # the leader deletes the window rows of past windows this often


class RolloutController:
    """Operator actions and reads of this replica; the analysis loop while it holds the lease."""

    def __init__(
        self,
        store: RolloutStore,
        windows: WindowStore,
        lease: LeaseKeeper,
        catalog: Catalog,
        *,
        applied: Applied | None = None,
        tick_s: float = 0.5,
        clock: Callable[[], float] = time.time,
        canary_weight_factor: float = 1.0,
    ) -> None:
        self._store = store
        self._windows = windows
        self._lease = lease
        self._catalog = catalog
        self._applied = applied or Applied()
        self._clock = clock
        self.replica = windows.replica
        self.live = LiveRollouts(canary_weight_factor=canary_weight_factor)
        self._last: dict[str, Verdict] = {}
        self._promoting: set[str] = set()  # rollouts with a registry call in flight (never two at once)
        self._pruned_at = 0.0
        self._loop = Periodic("rollout controller tick", self.tick, tick_s, log, (StateUnavailableError,))

    # ----- the request path (in memory) --------------------------------------------------------

    def active(self, model: str) -> Rollout | None:
        """The model's rollout while it still routes traffic to the canary."""
        return self.live.active(model)

    def split(self, rollout: Rollout) -> Split:
        return self.live.split(rollout)

    def record(
        self,
        rollout_id: str,
        variant: str,
        *,
        ok: bool,
        latency_ms: float,
        score: float | None = None,
        threshold: float | None = None,
    ) -> None:
        scores = () if score is None else (score,)
        self.live.record_batch(
            rollout_id, variant, 1, ok=ok, latency_ms=latency_ms, scores=scores, threshold=threshold
        )

    def last_verdict(self, rollout_id: str) -> Verdict | None:
        return self._last.get(rollout_id)

    # ----- reads (from the shared state) -------------------------------------------------------

    async def get(self, rollout_id: str) -> Rollout | None:
        return await call("read", self._store.get, rollout_id)

    async def latest(self, model: str) -> Rollout | None:
        return await call("read", self._store.latest, model)

    async def list(self, model: str = "") -> list[Rollout]:
        return await call("read", self._store.list, model)

    async def window(self, rollout: Rollout) -> tuple[StepWindow, int] | None:
        """The current window of an active rollout summed over every replica (this one live), and
        how many replicas contributed; None for an ended rollout."""
        if rollout.state not in ACTIVE:
            return None
        published = await call("read", self._windows.read, rollout.id, rollout.window)
        await self.live.count_inputs()
        own = self.live.window(rollout.id)
        return merge_windows(rollout.window, published, own, self._windows.source, self.replica)

    async def experiment_counts(self, experiment_id: str) -> tuple[dict[str, ArmCounts], int]:
        """An experiment's per-arm counts since it started summed over every replica (this one live),
        and how many replicas contributed."""
        rows = await call("read", self._windows.read_rows, experiment_id, EXPERIMENT_WINDOW)
        own = self.live.experiments.counts(experiment_id)
        return merged_counts(rows, own, self._windows.source, self.replica)

    async def leader(self) -> LeaseHolder:
        return await call("read", self._lease.lease.current)

    # ----- operator actions --------------------------------------------------------------------

    async def start(
        self,
        model: str,
        candidate_version: int,
        *,
        steps: Sequence[float] = (),
        analysis_interval_s: float = DEFAULT_ANALYSIS_INTERVAL_S,
        min_requests_per_step: int = DEFAULT_MIN_REQUESTS_PER_STEP,
        thresholds: Thresholds | None = None,
        actor: str = "",
        why: str = "",
        fence: Fence | None = None,
    ) -> Rollout:
        """Starts a rollout of ``candidate_version`` against the model's production version: an
        operator's (``actor``), or one the controller starts by itself (``why`` is added to the
        start decision's reason; ``fence``: stored only while this replica holds the lease)."""
        stable = await self._catalog.production(model)
        await self._catalog.version(model, candidate_version)  # exists, and its schema is cached
        kwargs: dict[str, object] = {}
        if steps:
            kwargs["steps"] = [float(s) for s in steps]
        now = self._clock()
        rollout = Rollout(
            model=model,
            stable_version=stable,
            candidate_version=candidate_version,
            analysis_interval_s=analysis_interval_s,
            min_requests_per_step=min_requests_per_step,
            thresholds=thresholds or Thresholds(),
            started_by=actor,
            started_at=now,
            **kwargs,  # type: ignore[arg-type]
        )
        reason = f"{actor or 'someone'} started {model} v{stable} -> v{candidate_version}"
        if why:
            reason += f": {why}"
        rollout.decisions.append(Decision(now, rollout.step_index, "start", reason, replica=self.replica))
        self._adopt(rollout, await call("write", self._store.create, rollout, fence=fence), "start")
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

    async def pause(self, rollout_id: str, reason: str) -> Rollout:
        return await self._change(rollout_id, "pause", lambda r, now: r.pause(reason, now))

    async def resume(self, rollout_id: str, reason: str) -> Rollout:
        return await self._change(rollout_id, "resume", lambda r, now: r.resume(reason, now))

    async def abort(self, rollout_id: str, reason: str) -> Rollout:
        return await self._change(rollout_id, "abort", lambda r, now: r.abort(reason, now))

    async def promote(self, rollout_id: str, reason: str) -> Rollout:
        """Skips the remaining steps; this replica moves `production` at once (the registry's
        compare-and-set and the rollout's make sure it happens and is recorded once)."""
        rollout = await self._change(rollout_id, "promote", lambda r, now: r.request_promotion(reason, now))
        try:
            return await self._promote(rollout, fence=None) or rollout
        except StateUnavailableError:
            return rollout  # promoting is stored: the controller finishes it

    async def _change(
        self, rollout_id: str, verdict: str, change: Callable[[Rollout, float], None]
    ) -> Rollout:
        """Reads the rollout, changes it and stores it, again if a decision got in between."""
        for _ in range(CHANGE_ATTEMPTS):
            rollout = await self.get(rollout_id)
            if rollout is None:
                raise KeyError(rollout_id)
            if rollout.state not in ACTIVE:
                raise RolloutConflictError(f"rollout {rollout_id} has ended ({rollout.state.value})")
            change(rollout, self._clock())
            rollout.decisions[-1].replica = self.replica
            try:
                version = await call("write", self._store.save, rollout)
            except StaleRolloutError:
                continue
            self._adopt(rollout, version, verdict)
            return rollout
        raise RolloutConflictError(f"rollout {rollout_id} kept changing; try again")

    def _adopt(self, rollout: Rollout, version: int, verdict: str) -> None:
        """A change this replica stored: counted, and applied here at once."""
        self._applied.wrote(version)
        metrics.ROLLOUT_DECISIONS_TOTAL.labels(rollout.model, verdict).inc()
        self.live.adopt(rollout)

    # ----- the loop ----------------------------------------------------------------------------

    def start_loop(self) -> None:
        self._loop.start()

    async def close(self) -> None:
        await self._loop.close()

    async def tick(self) -> None:
        """One pass over the active rollouts while this replica holds the lease."""
        fence = self._lease.fence
        if fence is None:
            return
        now = self._clock()
        for rollout in self.live.rollouts():
            if rollout.state is RolloutState.PROMOTING:
                await self._promote(rollout, fence)
            elif (
                rollout.state is RolloutState.PROGRESSING
                and now - rollout.window_started >= rollout.analysis_interval_s
            ):
                await self._analyse(rollout, fence, now)
        if now - self._pruned_at >= PRUNE_EVERY_S:
            self._pruned_at = now
            await call("write", self._windows.prune)

    async def _analyse(self, rollout: Rollout, fence: Fence, now: float) -> None:
        merged = await self.window(rollout)
        assert merged is not None
        window, replicas = merged
        inputs = cumulative_inputs(rollout.inputs, window)
        reports = {variant: w.report() for variant, w in inputs.items()}
        limits = stat_limits(rollout.thresholds)
        checks = model_checks(reports, rollout.candidate_version, limits)
        verdict = analyze(
            window.stable,
            window.canary,
            rollout.thresholds,
            rollout.min_requests_per_step,
            score_drift_gates=checks["mode"] == "fallback",
        )
        strata = cumulative_strata(rollout.strata, rollout.weight, window)
        evidence = CanaryEvidence(strata, reports.get("canary"), reports.get("stable"))
        statistics = evaluate(evidence, limits)
        if halts(verdict, statistics):
            action, reason = "halt", "; ".join(statistics.reasons)
        else:
            verdict = combine(verdict, statistics, checks, rollout.thresholds)
            action, reason = verdict.action, verdict.reason
        self._last[rollout.id] = verdict
        updated = rollout.copy()
        step = updated.step_index
        if action == "halt":
            updated.halt(reason, now, replicas=replicas, replica=self.replica)
            updated.decisions[-1].metrics = dict(verdict.metrics)
        else:
            updated.apply(verdict, now, replicas=replicas, replica=self.replica)
        updated.decisions[-1].statistics = {**statistics.to_dict(), "model_checks": checks}
        if action in ("advance", "rollback"):
            updated.strata = [s.to_dict() for s in strata]  # the window closes: its counts are kept
            updated.inputs = {variant: w.to_json() for variant, w in inputs.items()}
        previous = updated.decisions[-2] if len(updated.decisions) > 1 else None
        if (
            verdict.action == "wait"
            and previous is not None
            and (previous.verdict, previous.step_index, previous.replica) == ("wait", step, self.replica)
        ):
            updated.decisions.pop(-2)  # one "wait" per stretch of waiting and leader, the latest figures
        if not await self._decide(updated, fence, now, action):
            return
        extra = {
            "rollout": rollout.id,
            "model": rollout.model,
            "step": step,
            "reason": reason,
            "replicas": replicas,
        }
        if action == "halt":
            metrics.SAMPLE_RATIO_MISMATCH_TOTAL.labels(rollout.model).inc()
            log.error("rollout halted: sample ratio mismatch", extra=extra)
        elif verdict.action == "rollback":
            log.warning("rollout rolled back", extra=extra)
        elif verdict.action == "advance":
            log.info("rollout advanced", extra={**extra, "weight": updated.weight})
        if updated.state is RolloutState.PROMOTING:
            await self._promote(updated, fence)

    async def _decide(self, rollout: Rollout, fence: Fence | None, now: float, verdict: str) -> bool:
        """Stores a decision: under ``fence`` (only while the lease is still this replica's) or, for
        an operator's promotion, unfenced. False when it was not written."""
        try:
            version = await call("write", self._store.save, rollout, fence=fence, now=now)
        except LeaseLostError as exc:
            assert fence is not None
            metrics.FENCED_WRITES_TOTAL.inc()
            log.warning(
                "lost the controller lease, decision not written",
                extra={"rollout": rollout.id, "verdict": verdict, "token": fence.token, "error": str(exc)},
            )
            self._lease.lost(fence, "a decision was refused")
            return False
        except StaleRolloutError:
            return False  # an operator (or another replica) changed it: the next tick sees the change
        self._adopt(rollout, version, verdict)
        return True

    async def _promote(self, rollout: Rollout, fence: Fence | None) -> Rollout | None:
        if rollout.id in self._promoting or rollout.state is not RolloutState.PROMOTING:
            return None
        self._promoting.add(rollout.id)
        try:
            return await self._move_production(rollout, fence)
        finally:
            self._promoting.discard(rollout.id)

    async def _move_production(self, rollout: Rollout, fence: Fence | None) -> Rollout | None:
        reason = (
            f"rollout {rollout.id}: v{rollout.candidate_version} passed {rollout.steps} "
            "(by the rollout controller)"
        )
        updated = rollout.copy()
        now = self._clock()
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
                updated.state, updated.ended_at = RolloutState.ABORTED, now
                updated.decisions.append(
                    Decision(
                        now,
                        updated.step_index,
                        "abort",
                        f"promotion refused by the registry: {details}",
                        replica=self.replica,
                    )
                )
                if await self._decide(updated, fence, now, "abort"):
                    log.warning("promotion refused", extra={"rollout": rollout.id, "reason": details})
                    return updated
                return None
            else:
                log.warning(
                    "promotion failed, will retry", extra={"rollout": rollout.id, "grpc_code": code.name}
                )
                return None
        updated.mark_promoted(now)
        updated.decisions[-1].replica = self.replica
        if not await self._decide(updated, fence, now, "promoted"):
            return await self.get(rollout.id)  # recorded by whoever got there first
        log.info(
            "rollout promoted",
            extra={"rollout": rollout.id, "model": rollout.model, "version": rollout.candidate_version},
        )
        return updated

    async def _already_production(self, rollout: Rollout) -> bool:
        self._catalog.invalidate(rollout.model)
        try:
            return await self._catalog.production(rollout.model) == rollout.candidate_version
        except CatalogError:
            return False
