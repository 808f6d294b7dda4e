"""``finpredict.monitor.v1.MonitorService`` on top of the :class:`~finpredict.monitor.engine.Engine`."""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import polars as pl
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common.config import ConfigError, env_var_name
from finpredict.common.triggers import valid_trigger
from finpredict.monitor.alerting import AlertmanagerClient, Watchers
from finpredict.monitor.analyst import Analyst
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.engine import Engine, EngineOptions
from finpredict.monitor.evaluation import AlertRecord
from finpredict.monitor.export import export_window, write_snapshot
from finpredict.monitor.fetch import ProfileFetcher
from finpredict.monitor.ingest import GroupCommit
from finpredict.monitor.lookup import Query, check_query, lookup
from finpredict.monitor.metrics import HOUSEKEEPING_ERRORS
from finpredict.monitor.profiles import ProfileCache, Reference
from finpredict.monitor.records import (
    MAX_EVENT_TIME,
    IngestBatch,
    InvalidInputError,
    OutcomeIn,
    Prediction,
    StorageError,
    model_name_problem,
    reason_codes_from_json,
)
from finpredict.monitor.retrain import Job, Retrainer
from finpredict.monitor.rules import Rule, load_rules
from finpredict.monitor.schedule import Scheduler
from finpredict.monitor.store import FEATURE_PREFIX
from finpredict.monitor.windows import VersionKey, WindowStats

log = logging.getLogger("finpredict.monitor")

_SIZES = {pb.WINDOW_SIZE_HOURLY: "hourly", pb.WINDOW_SIZE_DAILY: "daily"}


_EPOCH = datetime.fromtimestamp(0, UTC)
_MAX_S = int(MAX_EVENT_TIME.timestamp())
MAX_REASON = 2_000


def ts_to_dt(ts: Timestamp) -> datetime:
    return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)


def checked_dt(field: str, ts: Timestamp) -> datetime:
    """``ts`` as a datetime; :class:`InvalidInputError` naming ``field`` outside 1970 to 9000."""
    if not 0 <= ts.seconds < _MAX_S or not 0 <= ts.nanos < 1_000_000_000:
        raise InvalidInputError(f"{field}: must be a time between 1970 and the year 9000")
    return ts_to_dt(ts)


def _event_time(ts: Timestamp) -> datetime:
    """A record's time; out of range it is the epoch, which validation refuses naming the field
    (one bad record is rejected, not its whole batch)."""
    try:
        return checked_dt("time", ts)
    except InvalidInputError:
        return _EPOCH


def _status(exc: StorageError) -> grpc.StatusCode:
    return grpc.StatusCode.RESOURCE_EXHAUSTED if exc.full else grpc.StatusCode.UNAVAILABLE


def dt_to_ts(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


def record_from_proto(r: pb.PredictionRecord) -> Prediction:
    features: dict[str, float | str | None] = {}
    for name, v in r.features.items():
        kind = v.WhichOneof("kind")
        if kind == "number":
            features[name] = None if math.isnan(v.number) else v.number
        elif kind == "category":
            features[name] = v.category
        else:
            features[name] = None
    return Prediction(
        request_id=r.request_id,
        entity_id=r.entity_id,
        model=r.model.name,
        version=r.model.version,
        variant=r.variant,
        score=r.score,
        threshold=r.threshold,
        latency_ms=r.latency_ms,
        trace_id=r.trace_id,
        time=_event_time(r.time),
        features=features,
        reason_codes=tuple((c.code, c.feature, c.contribution, c.description) for c in r.reason_codes),
        rollout_id=r.rollout_id,
        experiment_id=r.experiment_id,
    )


def row_to_record(row: dict[str, Any]) -> pb.PredictionRecord:
    """A stored prediction (a row of :func:`~finpredict.monitor.records.predictions_frame`) as
    logged; a missing feature stays unset."""
    features: dict[str, types_pb2.FeatureValue] = {}
    for column, value in row.items():
        if not column.startswith(FEATURE_PREFIX) or value is None:
            continue
        name = column.removeprefix(FEATURE_PREFIX)
        if isinstance(value, str):
            features[name] = types_pb2.FeatureValue(category=value)
        else:
            features[name] = types_pb2.FeatureValue(number=float(value))
    return pb.PredictionRecord(
        request_id=row["request_id"],
        entity_id=row["entity_id"] or "",
        model=types_pb2.ModelRef(name=row["model"], version=row["version"]),
        variant=row["variant"] or "",
        features=features,
        score=row["score"],
        threshold=row["threshold"],
        latency_ms=row["latency_ms"] or 0.0,
        trace_id=row["trace_id"] or "",
        time=dt_to_ts(row["time"]),
        reason_codes=[
            types_pb2.ReasonCode(code=c, feature=f, contribution=v, description=d)
            for c, f, v, d in reason_codes_from_json(row.get("reason_codes"))
        ],
        rollout_id=row.get("rollout_id") or "",  # absent from records stored before they existed
        experiment_id=row.get("experiment_id") or "",
    )


def job_to_proto(job: Job) -> pb.RetrainingJob:
    if job.returncode is None:
        state = pb.RETRAINING_STATE_RUNNING
    else:
        state = pb.RETRAINING_STATE_FAILED if job.failed else pb.RETRAINING_STATE_SUCCEEDED
    msg = pb.RetrainingJob(
        id=job.id,
        model=job.model,
        trigger=job.trigger,
        state=state,
        version=job.version,
        error=job.error,
        rows=int((job.prepared or {}).get("rows", 0)),
    )
    prepared = job.prepared or {}
    if prepared.get("window_start") and prepared.get("window_end"):
        msg.window_start.CopyFrom(dt_to_ts(datetime.fromisoformat(prepared["window_start"])))
        msg.window_end.CopyFrom(dt_to_ts(datetime.fromisoformat(prepared["window_end"])))
    elif job.window is not None:
        msg.window_start.CopyFrom(dt_to_ts(job.window[0]))
        msg.window_end.CopyFrom(dt_to_ts(job.window[1]))
    if job.started_at is not None:
        msg.started_at.CopyFrom(dt_to_ts(job.started_at))
    if job.finished_at is not None:
        msg.finished_at.CopyFrom(dt_to_ts(job.finished_at))
    return msg


def alert_to_proto(a: AlertRecord) -> pb.Alert:
    msg = pb.Alert(
        id=a.id,
        rule=a.rule,
        severity=a.severity,
        state=pb.ALERT_STATE_FIRING if a.firing else pb.ALERT_STATE_RESOLVED,
        model=types_pb2.ModelRef(name=a.model, version=a.version),
        features=a.features,
        value=a.value,
        threshold=a.threshold,
        summary=a.summary,
        started_at=dt_to_ts(a.started_at),
        retrained_version=a.retrained_version,
    )
    if a.resolved_at is not None:
        msg.resolved_at.CopyFrom(dt_to_ts(a.resolved_at))
    return msg


def stats_to_proto(w: WindowStats) -> pb.WindowStats:
    return pb.WindowStats(
        start=dt_to_ts(w.start),
        size=pb.WINDOW_SIZE_HOURLY if w.size == "hourly" else pb.WINDOW_SIZE_DAILY,
        count=w.count,
        features=[
            pb.FeatureDrift(
                feature=f.name,
                psi=f.psi,
                missing_share=f.missing,
                reference_missing_share=f.reference_missing,
                kl=f.kl,
                js=f.js,
            )
            for f in w.features
        ],
        score_kl=w.score_kl,
        score_js=w.score_js,
        labeled=w.labeled,
        auc=w.auc,
        accuracy=w.accuracy,
        ece=w.ece,
        label_delay_hours=w.label_delay_hours,
        approval_rate=w.approval_rate,
        approval_rate_by_variant=w.approval_rate_by_variant,
        score_histogram=(
            pb.ScoreHistogram(edges=h.edges, counts=h.counts, reference_proportions=h.reference)
            if (h := w.score_histogram) is not None
            else None
        ),
    )


class MonitorService(pb_grpc.MonitorServiceServicer):
    """The monitor's gRPC API."""

    def __init__(self, settings: MonitorSettings) -> None:
        self.settings = settings
        rules = load_rules(settings.rules_file)
        cache = ProfileCache(settings.cache_dir)
        options = EngineOptions(
            allowed_lateness=timedelta(seconds=settings.allowed_lateness_s),
            retention=timedelta(days=settings.retention_days),
            max_future_skew=timedelta(seconds=settings.max_future_skew_s),
            snapshot_interval_s=settings.snapshot_interval_s,
            outcome_wait_s=settings.outcome_wait_s,
            max_waiting_outcomes=settings.max_waiting_outcomes,
            fetching=bool(settings.registry_target),
        )
        self.engine = Engine(settings.data_dir, cache, rules, options)
        self.fetcher = ProfileFetcher(
            settings.registry_target,
            settings.registry_token.get_secret_value(),
            cache,
            self._profile_ready,
            self._profile_missing,
            settings.profile_retry_initial_s,
            settings.profile_retry_max_s,
            settings.registry_tls_ca_file,
        )
        # ``lock`` serialises the engine's state (ingest, outcomes, evaluation, upkeep);
        # ``files_lock`` keeps the logs' files in place: taken by what removes files (compaction,
        # retention: the upkeep, first) and by what reads many of them (lookup, export), so a long
        # read never holds up ingest, which only adds files.
        self.lock = asyncio.Lock()
        self.files_lock = asyncio.Lock()
        self.watchers = Watchers(settings.watch_queue_size)
        self.alertmanager = (
            AlertmanagerClient(settings.alertmanager_url, settings.alert_resend_s)
            if settings.alertmanager_url
            else None
        )
        self.retrainer = Retrainer(
            settings.retrain_command,
            settings.data_dir / "retraining",
            self._retrain_done,
            settings.retrain_workdir,
            self._prepare_retraining if settings.retrain_snapshot is not None else None,
        )
        self.scheduler = Scheduler(
            self.retrainer,
            settings.schedule,
            timedelta(days=settings.retrain_schedule_window_days),
            timedelta(days=settings.label_maturity_days),
        )
        if self.scheduler.times and (not self.retrainer.enabled or settings.retrain_snapshot is None):
            raise ConfigError(
                f"{env_var_name(MonitorSettings, 'retrain_schedule')} needs "
                f"{env_var_name(MonitorSettings, 'retrain_command')} and "
                f"{env_var_name(MonitorSettings, 'retrain_snapshot')} (each run trains on its day's snapshot)"
            )
        self.analyst = Analyst(settings, self.engine, self.lock, self.files_lock)  # feedback, review queue
        self._pending_fired: list[tuple[AlertRecord, Rule]] = []
        self._scheduling: set[asyncio.Task[None]] = set()
        self.engine.listeners.append(self._on_transition)
        self._ticker: asyncio.Task[None] | None = None
        self.ingester = GroupCommit(self._commit)  # concurrent IngestPredictions streams share commits
        self._housekeeper: asyncio.Task[None] | None = None

    # lifecycle ---------------------------------------------------------------

    async def start(self) -> None:
        if self.alertmanager is not None:
            self.alertmanager.track(list(self.engine.alerts.values()))
            self.alertmanager.start()
        if self.settings.evaluate_interval_s > 0:
            self._ticker = asyncio.create_task(self._tick())
        self._housekeeper = asyncio.create_task(self._housekeep())
        self.fetcher.want(self.engine.take_wanted())  # versions recovered without a profile

    async def drain(self) -> None:
        self.watchers.close()
        for task in (self._ticker, self._housekeeper):
            if task is not None:
                task.cancel()

    async def shutdown(self) -> None:
        await self.fetcher.close()
        if self.alertmanager is not None:
            await self.alertmanager.stop()
        await self.retrainer.stop()
        async with self.files_lock, self.lock:  # the next start reads this snapshot, not the logs
            await asyncio.to_thread(self.engine.snapshot)

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(self.settings.evaluate_interval_s)
            async with self.lock:
                changed = await asyncio.to_thread(self.engine.evaluate, datetime.now(UTC))
                self._deliver(changed)

    async def _housekeep(self) -> None:
        """Orphans outcomes that waited too long and writes the snapshot when due."""
        period = max(0.05, min(self.settings.outcome_wait_s / 4, 30.0))
        while True:
            await asyncio.sleep(period)
            try:
                async with self.files_lock, self.lock:  # it compacts and deletes log files
                    await asyncio.to_thread(self.engine.housekeeping)
                    await asyncio.to_thread(self.analyst.prune)
            except Exception:  # one failed round must not end the upkeep for good
                HOUSEKEEPING_ERRORS.inc()
                log.exception("housekeeping failed; retrying at the next round")

    # profiles ----------------------------------------------------------------

    async def _profile_ready(self, key: VersionKey, ref: Reference) -> None:
        async with self.lock:
            changed = await asyncio.to_thread(self.engine.profile_arrived, key, ref)
            self._deliver(changed)

    async def _profile_missing(self, key: VersionKey, reason: str) -> None:
        async with self.lock:
            changed = await asyncio.to_thread(self.engine.profile_unavailable, key, reason)
            self._deliver(changed)

    # alerts ------------------------------------------------------------------

    def _on_transition(self, alert: AlertRecord, rule: Rule | None) -> None:
        if alert.firing and rule is not None and rule.retrain:
            self._pending_fired.append((alert, rule))

    def _deliver(self, changed: list[AlertRecord]) -> None:
        """Runs on the event loop after an engine call: retraining, Alertmanager, watchers."""
        fired, self._pending_fired = self._pending_fired, []
        for alert, _rule in fired:
            self._maybe_retrain(alert)
        self._schedule_due()
        if changed:
            if self.alertmanager is not None:
                self.alertmanager.changed(changed)
            self.watchers.publish(changed)
            if fired:
                self.engine.save()

    def _maybe_retrain(self, alert: AlertRecord) -> None:
        if not self.retrainer.enabled:
            return
        incident = [
            a
            for a in self.engine.alerts.values()
            if a.firing and a.model == alert.model and a.version == alert.version and a.retrain_job
        ]
        if incident:  # once per incident: join the run already started
            alert.retrain_job = incident[0].retrain_job
            alert.retrained_version = incident[0].retrained_version
            return
        job, _ = self.retrainer.start(alert.model, f"alert:{alert.id}", alert.summary, alert.started_at)
        alert.retrain_job = job.id

    def _schedule_due(self) -> None:
        """Starts the scheduled runs the monitor's clock has made due (the local scheduler)."""
        clock = self.engine.event_clock() if self.scheduler.times else None
        if clock is not None:
            self.scheduler.due(clock)

    async def _prepare_retraining(self, job: Job) -> dict[str, str]:
        """Writes the production snapshot of the job's model before its command starts: a scheduled
        run's window, else the window ending at its trigger's time (a manual trigger: the monitor's
        clock). A window without a matured, labelled prediction fails the run, naming the counts."""
        snapshot = self.settings.retrain_snapshot
        assert snapshot is not None  # only installed when set
        if not snapshot.is_absolute():
            snapshot = (self.settings.retrain_workdir or Path.cwd()) / snapshot
        if job.window is not None:
            (start, end), as_of = job.window, job.at or job.window[1]
        else:
            end = as_of = job.at or self.engine.event_clock() or datetime.now(UTC)
            start = end - timedelta(days=self.settings.retrain_window_days)
        maturity = timedelta(days=self.settings.label_maturity_days)
        async with self.files_lock:  # the logs hold still (no compaction or pruning) while read
            rows, stats = await asyncio.to_thread(
                export_window, self.engine.store, start, end, as_of, maturity, job.model
            )
        if not stats.rows:
            raise RuntimeError(
                f"no matured, labelled prediction of {job.model} in [{stats.window_start}, "
                f"{stats.window_end}) as of {stats.as_of} ({stats.excluded_unmatured} not matured, "
                f"{stats.excluded_unlabelled} without an outcome): nothing new to train on"
            )
        await asyncio.to_thread(write_snapshot, snapshot, rows, stats)
        log.info(
            "retraining snapshot written", extra={"job": job.id, "path": str(snapshot), **stats.to_json()}
        )
        return {
            "window_start": stats.window_start,
            "window_end": stats.window_end,
            "snapshot": str(snapshot),
            "rows": str(stats.rows),
        }

    def _retrain_done(self, job: Job) -> None:
        updated = [a for a in self.engine.alerts.values() if a.retrain_job == job.id]
        for a in updated:
            a.retrained_version = job.version
        self.engine.save()
        self.watchers.publish(updated)
        if self.scheduler.times:  # a day that waited for this run starts now
            task = asyncio.create_task(self._schedule_after_run())
            self._scheduling.add(task)
            task.add_done_callback(self._scheduling.discard)

    async def _schedule_after_run(self) -> None:
        async with self.lock:  # the clock is the engine's state
            self._schedule_due()

    # RPCs --------------------------------------------------------------------

    async def IngestPredictions(  # noqa: N802 (gRPC method name)
        self,
        request_iterator: AsyncIterator[pb.IngestPredictionsRequest],
        context: grpc.aio.ServicerContext[object, object],
    ) -> pb.IngestPredictionsResponse:
        accepted = duplicates = rejected = 0
        first = ""
        offset = 0
        # each request decoded column by column (ingest.ColumnarIngestInterceptor), or as a message
        request: pl.DataFrame | pb.IngestPredictionsRequest
        async for request in request_iterator:  # type: ignore[assignment]
            if isinstance(request, pl.DataFrame):  # no edge cases (those are left to protobuf)
                batch = IngestBatch(frame=request, offset=offset)
            else:
                predictions = await self.analyst.take(request.records, context)  # edge cases to review
                batch = IngestBatch(records=[record_from_proto(r) for r in predictions], offset=offset)
            try:
                a, d, r, f = await self.ingester.submit(batch)
            except StorageError as exc:
                log.error("ingest refused: %s", exc, extra={"full": exc.full})
                await context.abort(_status(exc), str(exc))
            accepted += a
            duplicates += d
            rejected += r
            first = first or f
            offset += len(batch)
        return pb.IngestPredictionsResponse(
            accepted=accepted, duplicates=duplicates, rejected=rejected, first_rejection=first
        )

    async def _commit(self, batches: list[IngestBatch]) -> list[tuple[int, int, int, str]]:
        """One group of ingested batches stored and folded, then the windows that closed evaluated."""
        async with self.lock:
            results, changed = await asyncio.to_thread(self._ingest_and_evaluate, batches)
            self._deliver(changed)
        self.fetcher.want(self.engine.take_wanted())  # never waits for the registry
        return results

    def _ingest_and_evaluate(
        self, batches: list[IngestBatch]
    ) -> tuple[list[tuple[int, int, int, str]], list[AlertRecord]]:
        results = self.engine.ingest_batches(batches)
        return results, self.engine.evaluate()

    async def RecordOutcomes(  # noqa: N802 (gRPC method name)
        self, request: pb.RecordOutcomesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RecordOutcomesResponse:
        try:
            outcomes = [
                OutcomeIn(
                    o.request_id,
                    o.entity_id,
                    o.defaulted,
                    checked_dt(f"outcomes[{i}].observed_at", o.observed_at),
                    checked_dt(f"outcomes[{i}].prediction_time", o.prediction_time)
                    if o.HasField("prediction_time")
                    else None,
                )
                for i, o in enumerate(request.outcomes)
            ]
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        async with self.lock:
            try:
                counts, changed = await asyncio.to_thread(self.engine.record_outcomes, outcomes)
            except InvalidInputError as exc:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            except StorageError as exc:
                log.error("outcomes refused: %s", exc, extra={"full": exc.full})
                await context.abort(_status(exc), str(exc))
            self._deliver(changed)
        return pb.RecordOutcomesResponse(
            matched=counts.matched,
            unmatched=counts.unmatched,
            duplicates=counts.duplicates,
            changed=[alert_to_proto(a) for a in changed],
            labelled=[
                pb.LabelledPrediction(
                    request_id=x.request_id,
                    model=types_pb2.ModelRef(name=x.model, version=x.version),
                    score=x.score,
                    threshold=x.threshold,
                    defaulted=x.defaulted,
                    variant=x.variant,
                    rollout_id=x.rollout_id,
                    experiment_id=x.experiment_id,
                )
                for x in counts.labelled
            ],
        )

    async def GetDriftReport(  # noqa: N802 (gRPC method name)
        self, request: pb.GetDriftReportRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.GetDriftReportResponse:
        problem = model_name_problem("model.name", request.model.name)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if request.model.version < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model.version: must be >= 1")
        size = _SIZES.get(request.window)
        if size is None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "window: HOURLY or DAILY is required")
            raise AssertionError  # unreachable; abort raises
        try:
            start = checked_dt("start", request.start) if request.HasField("start") else None
            end = checked_dt("end", request.end) if request.HasField("end") else None
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError from None  # unreachable; abort raises
        async with self.lock:
            windows = await asyncio.to_thread(
                self.engine.report, request.model.name, request.model.version, size, start, end
            )
        return pb.GetDriftReportResponse(windows=[stats_to_proto(w) for w in windows])

    async def ListAlerts(  # noqa: N802 (gRPC method name)
        self, request: pb.ListAlertsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListAlertsResponse:
        alerts = [
            a
            for a in self.engine.alerts.values()
            if (not request.firing_only or a.firing) and (not request.model or a.model == request.model)
        ]
        alerts.sort(key=lambda a: (a.started_at, a.id), reverse=True)
        return pb.ListAlertsResponse(alerts=[alert_to_proto(a) for a in alerts])

    async def WatchAlerts(  # noqa: N802 (gRPC method name)
        self, request: pb.WatchAlertsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> AsyncIterator[pb.WatchAlertsResponse]:
        sub = self.watchers.subscribe()
        try:
            while True:
                alert = await sub.queue.get()
                if alert is None:
                    break
                if request.model and alert.model != request.model:
                    continue
                yield pb.WatchAlertsResponse(alert=alert_to_proto(alert))
        finally:
            self.watchers.unsubscribe(sub)
        if sub.overflowed:
            await context.abort(
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this WatchAlerts stream fell more than {sub.size} alert changes behind and was dropped "
                "(FINPREDICT_MONITOR_WATCH_QUEUE_SIZE): read faster, then call ListAlerts and watch again",
            )

    async def TriggerRetraining(  # noqa: N802 (gRPC method name)
        self, request: pb.TriggerRetrainingRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.TriggerRetrainingResponse:
        problem = model_name_problem("model", request.model)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        if len(request.reason) > MAX_REASON or "\x00" in request.reason:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"reason: at most {MAX_REASON} characters, without NUL characters",
            )
        trigger = f"manual:{request.reason or 'unspecified'}"
        if not valid_trigger(trigger):  # the registry would refuse the trained version's lineage
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                "reason: printable text, not only spaces (it names the training run's trigger)",
            )
        if not self.retrainer.enabled:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "retraining is disabled: FINPREDICT_MONITOR_RETRAIN_COMMAND is empty",
            )
        # one job per model at a time: a trigger while one runs is answered with that job's id
        job, _ = self.retrainer.start(request.model, trigger, request.reason)
        return pb.TriggerRetrainingResponse(job_id=job.id)

    async def ScheduleRetraining(  # noqa: N802 (gRPC method name)
        self, request: pb.ScheduleRetrainingRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ScheduleRetrainingResponse:
        problem = model_name_problem("model", request.model)
        if problem is not None:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, problem)
        try:
            day = date.fromisoformat(request.date) if request.date else None
        except ValueError:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"date: {request.date!r} is not YYYY-MM-DD")
            raise AssertionError from None  # unreachable; abort raises
        if not self.retrainer.enabled or self.settings.retrain_snapshot is None:
            await context.abort(
                grpc.StatusCode.FAILED_PRECONDITION,
                "scheduled retraining needs FINPREDICT_MONITOR_RETRAIN_COMMAND and "
                "FINPREDICT_MONITOR_RETRAIN_SNAPSHOT (each run trains on its day's snapshot)",
            )
        if day is None:
            day = (self.engine.event_clock() or datetime.now(UTC)).date()
        job, started = self.scheduler.start(request.model, day)
        return pb.ScheduleRetrainingResponse(job=job_to_proto(job), started=started, date=day.isoformat())

    async def ListRetrainingJobs(  # noqa: N802 (gRPC method name)
        self, request: pb.ListRetrainingJobsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListRetrainingJobsResponse:
        jobs = [j for j in self.retrainer.jobs.values() if not request.model or j.model == request.model]
        jobs.sort(key=lambda j: (j.started_at or _EPOCH, j.id), reverse=True)
        return pb.ListRetrainingJobsResponse(jobs=[job_to_proto(j) for j in jobs])

    async def EvaluateRules(  # noqa: N802 (gRPC method name)
        self, request: pb.EvaluateRulesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.EvaluateRulesResponse:
        if not request.HasField("now"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "now: required")
        try:
            now = checked_dt("now", request.now)
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError from None  # unreachable; abort raises
        async with self.lock:
            try:
                changed = await asyncio.to_thread(self.engine.evaluate, now)
            except InvalidInputError as exc:  # too far in the future: the clock does not move
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            self._deliver(changed)
        return pb.EvaluateRulesResponse(changed=[alert_to_proto(a) for a in changed])

    async def LookupPredictions(  # noqa: N802 (gRPC method name)
        self, request: pb.LookupPredictionsRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.LookupPredictionsResponse:
        try:
            query = check_query(
                Query(
                    request_id=request.request_id,
                    entity_id=request.entity_id,
                    start=checked_dt("start", request.start) if request.HasField("start") else None,
                    end=checked_dt("end", request.end) if request.HasField("end") else None,
                    model=request.model,
                    limit=request.limit,
                )
            )
        except InvalidInputError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
            raise AssertionError from None  # unreachable; abort raises
        async with self.files_lock:  # no compaction or retention pass removes a file while it is read
            frame, truncated = await asyncio.to_thread(lookup, self.engine.store, query)
        records = [row_to_record(row) for row in frame.iter_rows(named=True)]
        return pb.LookupPredictionsResponse(records=records, truncated=truncated)

    async def RecordFeedback(  # noqa: N802 (gRPC method name)
        self, request: pb.RecordFeedbackRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.RecordFeedbackResponse:
        return await self.analyst.record_feedback(request, context)

    async def ListReviewCases(  # noqa: N802 (gRPC method name)
        self, request: pb.ListReviewCasesRequest, context: grpc.aio.ServicerContext[object, object]
    ) -> pb.ListReviewCasesResponse:
        return await self.analyst.list_review_cases(request, context)
