"""The read-only pages: models, a model, a version, rollouts and experiments, drift and quality,
alerts, decisions.

Each page asks the services what it shows; a service that cannot answer turns into a notice on
the page (naming the service and its status), never a blank page or a stack trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import grpc
from aiohttp import web
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.console import views
from finpredict.console.backends import BackendError, Backends
from finpredict.console.config import ConsoleSettings
from finpredict.console.render import error_page, html

T = TypeVar("T")
BACKENDS: web.AppKey[Backends] = web.AppKey("backends", Backends)
SETTINGS: web.AppKey[ConsoleSettings] = web.AppKey("settings", ConsoleSettings)
DRAINING: web.AppKey[asyncio.Event] = web.AppKey("draining", asyncio.Event)  # set after SIGTERM
CONCURRENT_ROWS = 16  # models whose rollout, alerts and traffic the overview asks at once
MAX_ROWS = 500  # rows a list page fetches (pages of the services' list RPCs)
MAX_ID = 256

routes = web.RouteTableDef()


# ----- helpers -----------------------------------------------------------------------------------


async def attempt(call: Awaitable[T], problems: list[str]) -> T | None:
    """``call``'s result, or None with the failure added to ``problems`` (shown on the page)."""
    try:
        return await call
    except BackendError as exc:
        problems.append(str(exc))
        return None


async def optional(call: Awaitable[T]) -> T | None:
    """``call``'s result, or None when the thing does not exist (NOT_FOUND)."""
    try:
        return await call
    except BackendError as exc:
        if exc.code == grpc.StatusCode.NOT_FOUND:
            return None
        raise


async def paged(fetch: Callable[[str], Awaitable[tuple[list[T], str]]], limit: int = MAX_ROWS) -> list[T]:
    """Every item of a paged list RPC (at most ``limit``)."""
    out: list[T] = []
    token = ""
    while len(out) < limit:
        items, token = await fetch(token)
        out.extend(items)
        if not token:
            break
    return out[:limit]


def ts(t: datetime) -> Timestamp:
    out = Timestamp()
    out.FromDatetime(t)
    return out


def not_found_or_raise(request: web.Request, exc: BackendError) -> web.Response:
    if exc.code == grpc.StatusCode.NOT_FOUND:
        return error_page(request, 404, str(exc))
    if exc.code == grpc.StatusCode.INVALID_ARGUMENT:
        return error_page(request, 400, str(exc))
    return error_page(request, 502, str(exc))


def int_param(value: str, name: str, lo: int, hi: int) -> int:
    try:
        n = int(value)
    except ValueError:
        raise web.HTTPBadRequest(text=f"{name}: not a number") from None
    if not lo <= n <= hi:
        raise web.HTTPBadRequest(text=f"{name}: must be in [{lo}, {hi}]")
    return n


class Reads:
    """The services' read calls the pages make, with the console's tokens."""

    def __init__(self, b: Backends) -> None:
        self.b = b

    async def models(self) -> list[rpb.Model]:
        async def page(token: str) -> tuple[list[rpb.Model], str]:
            r = await self.b.call(
                "registry", self.b.registry.ListModels, rpb.ListModelsRequest(page_size=500, page_token=token)
            )
            return list(r.models), r.next_page_token

        return await paged(page)

    async def model(self, name: str) -> rpb.Model:
        r = await self.b.call("registry", self.b.registry.GetModel, rpb.GetModelRequest(name=name))
        return r.model

    async def versions(self, model: str) -> list[rpb.ModelVersion]:
        async def page(token: str) -> tuple[list[rpb.ModelVersion], str]:
            req = rpb.ListVersionsRequest(model=model, page_size=500, page_token=token)
            r = await self.b.call("registry", self.b.registry.ListVersions, req)
            return list(r.versions), r.next_page_token

        return await paged(page)

    async def version(self, model: str, version: int) -> rpb.ModelVersion:
        req = rpb.GetVersionRequest(model=model, version=version)
        return (await self.b.call("registry", self.b.registry.GetVersion, req)).version

    async def policy(self, model: str, version: int) -> rpb.GetPolicyResponse:
        req = rpb.GetPolicyRequest(model=model, version=version)
        return await self.b.call("registry", self.b.registry.GetPolicy, req)

    async def audit(self, model: str) -> list[rpb.AuditEntry]:
        async def page(token: str) -> tuple[list[rpb.AuditEntry], str]:
            req = rpb.ListAuditLogRequest(model=model, page_size=1000, page_token=token)
            r = await self.b.call("registry", self.b.registry.ListAuditLog, req)
            return list(r.entries), r.next_page_token

        return await paged(page, limit=10_000)

    async def rollout(self, *, model: str = "", rollout_id: str = "") -> ropb.Rollout:
        req = ropb.GetRolloutRequest(model=model, rollout_id=rollout_id)
        return (await self.b.call("gateway", self.b.rollouts.GetRollout, req)).rollout

    async def rollouts(self, model: str = "") -> list[ropb.Rollout]:
        async def page(token: str) -> tuple[list[ropb.Rollout], str]:
            req = ropb.ListRolloutsRequest(model=model, page_size=200, page_token=token)
            r = await self.b.call("gateway", self.b.rollouts.ListRollouts, req)
            return list(r.rollouts), r.next_page_token

        return await paged(page, limit=200)

    async def experiment(self, *, model: str = "", experiment_id: str = "") -> ropb.GetExperimentResponse:
        """A model's running experiment, or an experiment (running or stopped) by id."""
        req = ropb.GetExperimentRequest(model=model, experiment_id=experiment_id)
        return await self.b.call("gateway", self.b.rollouts.GetExperiment, req)

    async def running_experiments(self, models: list[str]) -> list[ropb.GetExperimentResponse]:
        """The running experiment of each of ``models`` that has one."""
        slots = asyncio.Semaphore(CONCURRENT_ROWS)

        async def one(model: str) -> ropb.GetExperimentResponse | None:
            async with slots:
                return await optional(self.experiment(model=model))

        found = await asyncio.gather(*(one(m) for m in models))
        return [x for x in found if x is not None]

    async def alerts(self, model: str = "", firing_only: bool = False) -> list[mpb.Alert]:
        req = mpb.ListAlertsRequest(model=model, firing_only=firing_only)
        return list((await self.b.call("monitor", self.b.monitor.ListAlerts, req)).alerts)

    async def report(self, model: str, version: int, start: datetime, end: datetime) -> list[mpb.WindowStats]:
        req = mpb.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=model, version=version),
            window=mpb.WINDOW_SIZE_DAILY,
            start=ts(start),
            end=ts(end),
        )
        return list((await self.b.call("monitor", self.b.monitor.GetDriftReport, req)).windows)

    async def lookup(self, req: mpb.LookupPredictionsRequest) -> mpb.LookupPredictionsResponse:
        return await self.b.call("monitor", self.b.monitor.LookupPredictions, req)


def reads(request: web.Request) -> Reads:
    return Reads(request.app[BACKENDS])


def today() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


# ----- pages -------------------------------------------------------------------------------------


@routes.get("/")
async def models_page(request: web.Request) -> web.Response:
    r = reads(request)
    problems: list[str] = []
    models = await attempt(r.models(), problems) or []
    start = today()

    slots = asyncio.Semaphore(CONCURRENT_ROWS)

    async def row(m: rpb.Model) -> views.ModelRow:
        async with slots:
            return await model_row(m)

    async def model_row(m: rpb.Model) -> views.ModelRow:
        rollout = await attempt(optional(r.rollout(model=m.name)), problems)
        alerts = await attempt(r.alerts(model=m.name, firing_only=True), problems) or []
        traffic = None
        if "production" in m.aliases:
            windows = await attempt(
                r.report(m.name, m.aliases["production"], start, start + timedelta(days=1)), problems
            )
            traffic = views.traffic_today(windows, datetime.now(UTC)) if windows is not None else None
        return views.model_row(m, rollout, alerts, traffic)

    rows = await asyncio.gather(*(row(m) for m in models))
    return html(request, "models.html", title="Models", rows=rows, problems=sorted(set(problems)))


@routes.get("/models/{model}")
async def model_page(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    r = reads(request)
    try:
        model = await r.model(name)
    except BackendError as exc:
        return not_found_or_raise(request, exc)
    problems: list[str] = []
    versions, audit, rollouts = await asyncio.gather(
        attempt(r.versions(name), problems),
        attempt(r.audit(name), problems),
        attempt(r.rollouts(name), problems),
    )
    return html(
        request,
        "model.html",
        title=f"Model {name}",
        model=model,
        versions=versions or [],
        history=views.alias_history(audit or []),
        rollouts=rollouts or [],
        problems=problems,
    )


@routes.get("/models/{model}/versions/{version}")
async def version_page(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    number = int_param(request.match_info["version"], "version", 1, 2**62)
    r = reads(request)
    try:
        v = await r.version(name, number)
    except BackendError as exc:
        return not_found_or_raise(request, exc)
    problems: list[str] = []
    audit, policy = await asyncio.gather(
        attempt(r.audit(name), problems), attempt(r.policy(name, number), problems)
    )
    return html(
        request,
        "version.html",
        policy=views.policy_view(policy, v) if policy is not None else None,
        title=f"{name} v{number}",
        v=v,
        gates=views.gate_rows(v),
        lineage=views.lineage_rows(v.lineage),
        params=views.params_json(v.lineage),
        profile=views.profile_summary(v.reference_profile, v.reference_profile_sha256),
        history=views.alias_history(audit or [], number),
        catalogue=views.reason_catalogue(v.artifact.manifest_json),
        problems=problems,
    )


@routes.get("/models/{model}/versions/{version}/drift")
async def drift_page(request: web.Request) -> web.Response:
    name = request.match_info["model"]
    number = int_param(request.match_info["version"], "version", 1, 2**62)
    settings = request.app[SETTINGS]
    days = int_param(request.query.get("days", str(settings.drift_days)), "days", 1, 400)
    r = reads(request)
    try:
        model = await r.model(name)
    except BackendError as exc:
        return not_found_or_raise(request, exc)
    end = today() + timedelta(days=1)
    problems: list[str] = []
    windows, alerts = await asyncio.gather(
        attempt(r.report(name, number, end - timedelta(days=days), end), problems),
        attempt(r.alerts(model=name), problems),
    )
    return html(
        request,
        "drift.html",
        title=f"Drift and quality: {name} v{number}",
        model=model,
        version=number,
        days=days,
        heatmap=views.heatmap(windows or []),
        quality=views.quality_rows(windows or []),
        scores=views.score_chart(summed, *views.SCORE_CHART)
        if (summed := views.summed_histogram(windows or []))
        else None,
        alerts=views.alert_rows(alerts or []),
        problems=problems,
    )


@routes.get("/rollouts")
async def rollouts_page(request: web.Request) -> web.Response:
    model = request.query.get("model", "")
    r = reads(request)
    problems: list[str] = []
    rollouts = await attempt(r.rollouts(model), problems) or []
    names = [model] if model else [m.name for m in await attempt(r.models(), problems) or []]
    experiments = await attempt(r.running_experiments(names), problems) or []
    return html(
        request,
        "rollouts.html",
        title="Rollouts and experiments",
        rollouts=rollouts,
        experiments=[views.experiment_view(x) for x in experiments],
        model=model,
        problems=problems,
    )


@routes.get("/experiments/{experiment_id}")
async def experiment_page(request: web.Request) -> web.Response:
    try:
        x = views.experiment_view(
            await reads(request).experiment(experiment_id=request.match_info["experiment_id"])
        )
    except BackendError as exc:
        return not_found_or_raise(request, exc)
    return html(request, "experiment.html", title=f"Experiment {x.id}", x=x, live=x.running)


@routes.get("/rollouts/{rollout_id}")
async def rollout_page(request: web.Request) -> web.Response:
    return await render_rollout(request)


async def render_rollout(request: web.Request, notice: str = "", status: int = 200) -> web.Response:
    rollout_id = request.match_info["rollout_id"]
    try:
        rollout = await reads(request).rollout(rollout_id=rollout_id)
    except BackendError as exc:
        return not_found_or_raise(request, exc)
    return html(
        request,
        "rollout.html",
        status=status,
        title=f"Rollout {rollout.id}",
        r=rollout,
        live=rollout.state in views.LIVE_STATES,
        notice=notice,
        problems=[],
    )


@routes.get("/alerts")
async def alerts_page(request: web.Request) -> web.Response:
    problems: list[str] = []
    alerts = await attempt(reads(request).alerts(model=request.query.get("model", "")), problems) or []
    return html(request, "alerts.html", title="Alerts", alerts=views.alert_rows(alerts), problems=problems)


@routes.get("/decisions")
async def decisions_page(request: web.Request) -> web.Response:
    q = request.query
    form = {k: q.get(k, "").strip() for k in ("request_id", "entity_id", "date", "model")}
    if any(len(v) > MAX_ID for v in form.values()):
        return error_page(request, 400, f"every field is at most {MAX_ID} characters")
    context: dict[str, Any] = {"title": "Decision lookup", "form": form, "rows": None, "truncated": False}
    if not form["request_id"] and not form["entity_id"]:
        return html(request, "decisions.html", problems=[], **context)
    req = mpb.LookupPredictionsRequest(request_id=form["request_id"], model=form["model"])
    if not form["request_id"]:
        try:
            start = datetime.strptime(form["date"], "%Y-%m-%d").replace(tzinfo=UTC)
        except ValueError:
            return html(
                request,
                "decisions.html",
                status=400,
                problems=["date: YYYY-MM-DD is required with an entity id"],
                **context,
            )
        req.entity_id = form["entity_id"]
        req.start.CopyFrom(ts(start))
        req.end.CopyFrom(ts(start + timedelta(days=1)))
    problems: list[str] = []
    found = await attempt(reads(request).lookup(req), problems)
    if found is not None:
        context["rows"] = views.decision_rows(found.records)
        context["truncated"] = found.truncated
    return html(request, "decisions.html", problems=problems, **context)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n", headers={"Cache-Control": "no-store"})
