"""The request path: route, validate, score, measure, mirror, log.

One :class:`ScoringCore` serves the scoring API, the Open Inference Protocol and the benchmark:

1. resolve `production` (cached) and route every application by its entity id: the running
   rollout's split (stable/canary), else the running experiment's arms, else stable;
2. validate each application against the schema of the version it was routed to (a refused one
   is offered to the prediction log as a case for the monitor's review queue);
3. score each version's group with one (coalesced) model-server call, concurrently; a failed
   canary group is answered by stable (counted, and its records flagged for the review queue) and
   recorded as canary errors;
4. record latency, outcome and score in the rollout window (or the experiment arm's counts) and
   Prometheus (and the inputs, counted later on the version's reference profile); offer a record per
   application to the prediction log; mirror to the shadow version after responding.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from google.protobuf import timestamp_pb2
from opentelemetry import trace

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.serving.v1 import model_server_pb2 as ms_pb
from finpredict.common.telemetry import current_trace_id
from finpredict.gateway import metrics
from finpredict.gateway.backend import BackendError, ModelServerBackend, Scored
from finpredict.gateway.catalog import Catalog, VersionInfo
from finpredict.gateway.controller import RolloutController
from finpredict.gateway.policies import PolicyStore
from finpredict.gateway.prediction_log import PredictionLog
from finpredict.gateway.validation import (
    RequestError,
    validate_application,
    validate_attributes,
    validate_model_name,
)

log = logging.getLogger("finpredict.gateway.scoring")
# Shadow requests are batched over this window: nobody waits for them, and fewer model-server
# calls keep the mirror from slowing the served traffic down.
SHADOW_WINDOW_S = 0.025


@dataclass(frozen=True)
class Application:
    """One application as the request path sees it."""

    entity_id: str
    features: Mapping[str, types_pb2.FeatureValue]
    request_id: str = ""
    attributes: Mapping[str, str] = field(default_factory=dict)  # logged, never sent to the model


def logged_features(app: Application) -> Mapping[str, types_pb2.FeatureValue]:
    """What the prediction log records of an application's inputs: its features and, as
    categories, its attributes (which the model never sees)."""
    if not app.attributes:
        return app.features
    return {**app.features, **{k: types_pb2.FeatureValue(category=v) for k, v in app.attributes.items()}}


@dataclass(frozen=True)
class Route:
    """Where one application goes."""

    version: int
    variant: str  # stable | canary | experiment
    arm: str = ""
    rollout_id: str = ""
    step: int = -1
    fallback: str = ""  # why stable answered for the canary (the review queue's detail)
    experiment_id: str = ""


@dataclass(frozen=True)
class Result:
    """The answer for one application."""

    request_id: str
    entity_id: str
    prediction: ms_pb.Prediction
    threshold: float
    version: int
    route: Route


@dataclass(frozen=True)
class Measure:
    """One route's group of a request, to record in the rollout window and Prometheus."""

    route: Route
    n: int
    ok: bool
    elapsed_ms: float
    scored: Scored | None = None
    apps: Sequence[Application] = ()
    info: VersionInfo | None = None
    call_size: int = 0  # applications in the whole call (0: n); one is what the latency SLO judges


class ScoringCore:
    def __init__(
        self,
        catalog: Catalog,
        backend: ModelServerBackend,
        controller: RolloutController,
        policies: PolicyStore,
        prediction_log: PredictionLog | None,
        *,
        shadow_concurrency: int = 64,
    ) -> None:
        self.catalog = catalog
        self.backend = backend
        self.controller = controller
        self.policies = policies
        self.prediction_log = prediction_log
        self._shadow_slots = asyncio.Semaphore(shadow_concurrency)
        self._shadow_tasks: set[asyncio.Task[None]] = set()

    def route(self, model: str, entity_id: str, stable_version: int) -> Route:
        rollout = self.controller.active(model)
        if rollout is not None:
            arm = self.controller.split(rollout).assign(entity_id)
            return Route(arm.version, arm.name, rollout_id=rollout.id, step=rollout.step_index)
        experiment = self.policies.experiments.get(model)
        if experiment is not None:
            arm = experiment.split().assign(entity_id)
            return Route(arm.version, "experiment", arm=arm.name, experiment_id=experiment.id)
        return Route(stable_version, "stable")

    async def score(
        self,
        model: str,
        applications: Sequence[Application],
        *,
        explain: bool = False,
        top_k: int = 0,
        paths: Sequence[str] | None = None,
    ) -> list[Result]:
        """Scores ``applications`` in order; raises RequestError, CatalogError or BackendError."""
        started = time.perf_counter()
        validate_model_name(model)
        stable = await self.catalog.production(model)
        routes = [self.route(model, a.entity_id, stable) for a in applications]
        infos = {v: await self.catalog.version(model, v) for v in sorted({r.version for r in routes})}
        for i, (app, route) in enumerate(zip(applications, routes, strict=True)):
            path = paths[i] if paths is not None else f"applications[{i}]"
            info = infos[route.version]
            try:
                validate_application(
                    info.schema, app.features, path, app.entity_id, app.request_id, info.specs
                )
                if app.attributes:
                    validate_attributes(app.attributes, info.specs, path)
            except RequestError as exc:
                self._refused(model, app, route, str(exc))
                raise
        groups: dict[Route, list[int]] = {}
        for i, route in enumerate(routes):
            groups.setdefault(route, []).append(i)
        span = trace.get_current_span()
        span.set_attribute("finpredict.model", model)
        if len(groups) == 1:
            only = next(iter(groups))
            span.set_attribute("finpredict.model_version", only.version)
            span.set_attribute("finpredict.variant", only.variant)
            if only.step >= 0:
                span.set_attribute("finpredict.rollout_step", only.step)
        # Each group's measurement waits until every group has answered, then all are recorded
        # together (no await between them): an analysis never sees half of one request, which
        # would read as a split that does not match its weights.
        measures: list[Measure] = []
        gathered = await asyncio.gather(
            *(
                self._score_group(
                    model,
                    route,
                    infos[route.version],
                    [applications[i] for i in idx],
                    explain,
                    top_k,
                    started,
                    measures,
                    len(applications),
                )
                for route, idx in groups.items()
            ),
            return_exceptions=True,
        )
        for m in measures:
            self._measure(model, m)
        outcomes: list[list[Result]] = []
        for outcome in gathered:
            if isinstance(outcome, BaseException):
                raise outcome
            outcomes.append(outcome)
        results: list[Result | None] = [None] * len(applications)
        for idx, group_results in zip(groups.values(), outcomes, strict=True):
            for i, result in zip(idx, group_results, strict=True):
                results[i] = result
        done = [r for r in results if r is not None]
        self._log(model, applications, done, (time.perf_counter() - started) * 1000)
        self._mirror(model, applications, done)
        return done

    async def _score_group(
        self,
        model: str,
        route: Route,
        info: VersionInfo,
        apps: list[Application],
        explain: bool,
        top_k: int,
        started: float,
        measures: list[Measure],
        call_size: int,
    ) -> list[Result]:
        """Scores one route's group of a call of ``call_size`` applications; its measurements go to
        ``measures`` (recorded by the caller)."""
        rows = [ms_pb.FeatureRow(features=a.features) for a in apps]
        served_route = route
        try:
            scored = await self.backend.predict(model, route.version, rows, explain=explain, top_k=top_k)
        except BackendError as exc:
            elapsed_ms = (time.perf_counter() - started) * 1000
            measures.append(Measure(route, len(apps), ok=False, elapsed_ms=elapsed_ms, call_size=call_size))
            rollout = self.controller.active(model) if route.variant == "canary" else None
            if rollout is None:
                raise
            # The canary failed: answer from stable, count it, and let the analysis see the errors.
            metrics.CANARY_FALLBACKS_TOTAL.labels(model).inc(len(apps))
            log.warning(
                "canary failed, answered by stable", extra={"model": model, "grpc_code": exc.code.name}
            )
            served_route = Route(
                rollout.stable_version,
                "stable",
                rollout_id=route.rollout_id,
                step=route.step,
                fallback=f"canary v{route.version} failed ({exc.code.name}); answered by stable "
                f"v{rollout.stable_version}",
            )
            scored = await self.backend.predict(
                model, served_route.version, rows, explain=explain, top_k=top_k
            )
            return self._results(apps, scored, served_route)
        elapsed_ms = (time.perf_counter() - started) * 1000
        measures.append(
            Measure(
                route,
                len(apps),
                ok=True,
                elapsed_ms=elapsed_ms,
                scored=scored,
                apps=apps,
                info=info,
                call_size=call_size,
            )
        )
        return self._results(apps, scored, served_route)

    def _measure(self, model: str, m: Measure) -> None:
        route, ok, scored = m.route, m.ok, m.scored
        version = str(route.version)
        trace_id = current_trace_id()
        metrics.SCORE_SECONDS.labels(model, version, route.variant).observe(
            m.elapsed_ms / 1000, exemplar={"trace_id": trace_id} if trace_id else None
        )
        # Both outcome series exist from the first request, so rate() sees the first error.
        metrics.SCORED_TOTAL.labels(model, version, route.variant, "ok" if ok else "error").inc(m.n)
        metrics.SCORED_TOTAL.labels(model, version, route.variant, "error" if ok else "ok")
        if route.rollout_id:
            columns = m.info.columns if m.info is not None else None
            self.controller.live.record_batch(
                route.rollout_id,
                route.variant,
                m.n,
                ok=ok,
                latency_ms=m.elapsed_ms,
                call_size=m.call_size or m.n,
                scores=[p.score for p in scored.predictions] if scored is not None else (),
                threshold=scored.threshold if scored is not None else None,
                inputs=[a.features for a in m.apps] if columns is not None else (),
                columns=columns,
            )
        elif route.experiment_id:
            self.controller.live.experiments.record(
                route.experiment_id,
                route.arm,
                m.n,
                ok=ok,
                scores=[p.score for p in scored.predictions] if scored is not None else (),
                threshold=scored.threshold if scored is not None else None,
            )

    @staticmethod
    def _results(apps: list[Application], scored: Scored, route: Route) -> list[Result]:
        return [
            Result(a.request_id or uuid.uuid4().hex, a.entity_id, p, scored.threshold, route.version, route)
            for a, p in zip(apps, scored.predictions, strict=True)
        ]

    def _log(self, model: str, apps: Sequence[Application], results: list[Result], latency_ms: float) -> None:
        if self.prediction_log is None:
            return
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        trace_id = current_trace_id()
        for app, res in zip(apps, results, strict=True):
            self.prediction_log.offer(
                monitor_pb2.PredictionRecord(
                    request_id=res.request_id,
                    entity_id=res.entity_id,
                    model=types_pb2.ModelRef(name=model, version=res.version),
                    variant=res.route.arm or res.route.variant,
                    # the arm that served it: its delayed label is credited to that arm only
                    rollout_id=res.route.rollout_id,
                    experiment_id=res.route.experiment_id,
                    features=logged_features(app),
                    score=res.prediction.score,
                    threshold=res.threshold,
                    latency_ms=latency_ms,
                    trace_id=trace_id,
                    time=now,
                    # what the client received (the model server gives reasons only when asked)
                    reason_codes=res.prediction.reason_codes,
                    review=(
                        monitor_pb2.REVIEW_KIND_CANARY_FALLBACK
                        if res.route.fallback
                        else monitor_pb2.REVIEW_KIND_UNSPECIFIED
                    ),
                    review_detail=res.route.fallback,
                )
            )
            if res.route.fallback:
                metrics.REVIEW_CASES_TOTAL.labels(model, "canary_fallback").inc()

    def _refused(self, model: str, app: Application, route: Route, message: str) -> None:
        """Offers a request refused by validation to the prediction log, for the monitor's review
        queue (never as a prediction: it was not scored)."""
        if self.prediction_log is None:
            return
        now = timestamp_pb2.Timestamp()
        now.FromNanoseconds(time.time_ns())
        metrics.REVIEW_CASES_TOTAL.labels(model, "refused").inc()
        self.prediction_log.offer(
            monitor_pb2.PredictionRecord(
                request_id=app.request_id or uuid.uuid4().hex,
                entity_id=app.entity_id,
                model=types_pb2.ModelRef(name=model, version=route.version),
                variant=route.arm or route.variant,
                rollout_id=route.rollout_id,
                experiment_id=route.experiment_id,
                features=app.features,
                trace_id=current_trace_id(),
                time=now,
                review=monitor_pb2.REVIEW_KIND_REFUSED,
                review_detail=message,
            )
        )

    # ----- shadow ------------------------------------------------------------------------------

    def _mirror(self, model: str, apps: Sequence[Application], results: list[Result]) -> None:
        shadow = self.policies.shadows.get(model)
        if shadow is None:
            return
        picked = [
            (a, r)
            for a, r in zip(apps, results, strict=True)
            if r.version != shadow.version and shadow.mirrors(a.entity_id, r.request_id)
        ]
        if not picked:
            return
        if self._shadow_slots.locked():
            metrics.SHADOW_TOTAL.labels(model, "skipped").inc(len(picked))
            return
        task = asyncio.get_running_loop().create_task(self._shadow_call(model, shadow.version, picked))
        self._shadow_tasks.add(task)
        task.add_done_callback(self._shadow_tasks.discard)

    async def _shadow_call(self, model: str, version: int, picked: list[tuple[Application, Result]]) -> None:
        async with self._shadow_slots:
            rows = [ms_pb.FeatureRow(features=a.features) for a, _ in picked]
            started = time.perf_counter()
            try:
                scored = await self.backend.predict(model, version, rows, defer_s=SHADOW_WINDOW_S)
            except BackendError:
                metrics.SHADOW_TOTAL.labels(model, "error").inc(len(picked))
                return
            latency_ms = (time.perf_counter() - started) * 1000
            metrics.SHADOW_TOTAL.labels(model, "ok").inc(len(picked))
            shadow_results = []
            for (app, served), p in zip(picked, scored.predictions, strict=True):
                metrics.SHADOW_SCORE_DIFF.labels(model).observe(abs(p.score - served.prediction.score))
                shadow_results.append(
                    Result(
                        f"{served.request_id}:shadow",
                        app.entity_id,
                        p,
                        scored.threshold,
                        version,
                        Route(version, "shadow"),
                    )
                )
            self._log(model, [a for a, _ in picked], shadow_results, latency_ms)

    async def close(self) -> None:
        for task in list(self._shadow_tasks):
            task.cancel()
        await asyncio.gather(*self._shadow_tasks, return_exceptions=True)
