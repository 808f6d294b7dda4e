"""The monitor's core: durable ingest, streaming drift windows, label matching, rule evaluation.

Windows are keyed by event time (``PredictionRecord.time``): one drift_core ``Window`` per model
version and hour; a daily window is the merge of its 24 hourly ones. Rules are evaluated when
windows *close* (event time, or the clock given to :meth:`Engine.evaluate`, has passed their end),
never on wall-clock timers of their own, so a replay on a simulated clock is fast and
deterministic. Everything here is synchronous; the gRPC layer serialises calls with a lock.

:class:`Engine` composes the parts, each in its own module: the records and their validation
(:mod:`~finpredict.monitor.records`), the durable logs (:mod:`~finpredict.monitor.store`), the
windows and their statistics (:mod:`~finpredict.monitor.windows`), label matching
(:mod:`~finpredict.monitor.labels`), rule evaluation and alert state
(:mod:`~finpredict.monitor.evaluation`), the state file (:mod:`~finpredict.monitor.state`),
retention, snapshots and compaction (:mod:`~finpredict.monitor.upkeep`) and the start-up
(:mod:`~finpredict.monitor.recovery`).

State is bounded by the retention period, counted back from the monitor's clock (the latest event
or evaluation time): older hours leave the logs, the windows and the index, and records older
than it are refused. Times more than the allowed skew ahead of the wall clock are refused, so
they never move the clock. A restart loads the snapshot and folds only the files written after it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.monitor import metrics as m
from finpredict.monitor.drift_input import SCORE_COLUMN
from finpredict.monitor.evaluation import AlertRecord, RuleEvaluator
from finpredict.monitor.labels import LabelIndex, digest
from finpredict.monitor.profiles import ProfileCache, Reference
from finpredict.monitor.records import (
    FULL_ERRNOS,
    RID_COLUMN,
    IngestBatch,
    InvalidInputError,
    Labelled,
    OutcomeCounts,
    OutcomeIn,
    Prediction,
    StorageError,
    check_outcomes,
    feature_kind_problem,
    hour_partitions,
    model_name_problem,
    outcomes_frame,
    prediction_from_row,
    prediction_problem,
    predictions_frame,
)
from finpredict.monitor.recovery import recover
from finpredict.monitor.rules import Rule
from finpredict.monitor.state import SavedState, save_state
from finpredict.monitor.store import (
    FEATURE_PREFIX,
    RecordStore,
    day_key,
    hour_key,
    live_files,
    read_files,
)
from finpredict.monitor.upkeep import Upkeep
from finpredict.monitor.windows import DAY, HOUR, VersionKey, Windows, WindowStats, floor_day, floor_hour

__all__ = [
    "SCORE_COLUMN",
    "Engine",
    "EngineOptions",
]  # SCORE_COLUMN: where the replay has always imported it from

log = logging.getLogger("finpredict.monitor")


@dataclass(frozen=True)
class EngineOptions:
    """How the engine bounds its state and its clock (the service fills it from its settings)."""

    allowed_lateness: timedelta = timedelta(minutes=5)
    retention: timedelta = timedelta(days=30)
    max_future_skew: timedelta = timedelta(minutes=5)
    snapshot_interval_s: float = 300.0
    outcome_wait_s: float = 3600.0
    max_waiting_outcomes: int = 100_000
    fetching: bool = False  # whether missing profiles are fetched (from the registry)


class Engine:
    """Logs, windows, statistics and alert state of one monitor process."""

    def __init__(
        self,
        data_dir: Path,
        profiles: ProfileCache,
        rules: Sequence[Rule],
        options: EngineOptions = EngineOptions(),
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.data_dir = data_dir
        self.options = options
        self.wall = wall
        self.store = RecordStore(data_dir)
        self.lateness = options.allowed_lateness
        self.state_path = data_dir / "state.json"
        self.windows = Windows(lambda key: profiles.load(*key), options.fetching)
        self.labels = LabelIndex(
            self.windows.versions,
            options.outcome_wait_s,
            options.max_waiting_outcomes,
            remember_s=options.retention.total_seconds(),
        )
        self.evaluator = RuleEvaluator(rules, self.windows)
        self.clock: datetime | None = None
        self.upkeep = Upkeep(
            data_dir,
            self.store,
            self.windows,
            self.labels,
            self.event_clock,
            options.retention,
            options.allowed_lateness,
            options.snapshot_interval_s,
        )
        self._late_changes: list[AlertRecord] = []  # accuracy changes found while ingesting
        self.recovered_files = 0  # log files read at start-up (those written after the snapshot)
        self.recovery_s = 0.0
        recover(self)

    @property
    def alerts(self) -> dict[str, AlertRecord]:
        return self.evaluator.alerts

    @property
    def listeners(self) -> list[Callable[[AlertRecord, Rule | None], None]]:
        return self.evaluator.listeners

    def rule(self, name: str) -> Rule | None:
        return self.evaluator.rule(name)

    # ------------------------------------------------------------------ state

    def save(self) -> None:
        """Durably writes the alert state (returns once it is on disk)."""
        evaluated = {
            k: v.evaluated_until for k, v in self.windows.versions.items() if v.evaluated_until is not None
        }
        ev = self.evaluator
        save_state(
            self.state_path,
            SavedState(ev.alerts, ev.streaks, ev.streak_ends, ev.accuracy_day, self.clock, evaluated),
        )

    def snapshot(self) -> None:
        """Writes a snapshot of the window state (then compacts the closed partitions)."""
        self.upkeep.snapshot()

    def housekeeping(self) -> None:
        """Periodic upkeep: orphaned outcomes, old logs deleted, a snapshot when due."""
        self.upkeep.run()

    # ------------------------------------------------------------------ clocks and retention

    def event_clock(self) -> datetime | None:
        """The monitor's clock: the latest of the evaluation clock and every version's latest event."""
        times = [v.max_event for v in self.windows.versions.values() if v.max_event is not None]
        if self.clock is not None:
            times.append(self.clock)
        return max(times, default=None)

    def future_problem(self, field: str, t: datetime) -> str | None:
        """Why ``t`` is refused as too far ahead of the wall clock, naming ``field``, or None."""
        limit = self.wall() + self.options.max_future_skew
        if t > limit:
            skew = self.options.max_future_skew.total_seconds()
            return (
                f"{field}: {t.isoformat()} is more than {skew:g} s ahead of the monitor's clock "
                f"({self.wall().isoformat()}; FINPREDICT_MONITOR_MAX_FUTURE_SKEW_S)"
            )
        return None

    @property
    def horizon(self) -> datetime | None:
        """Records before it are out of the retention period."""
        return self.upkeep.horizon

    # ------------------------------------------------------------------ ingest

    def validate(self, i: int, p: Prediction) -> str | None:
        """The first problem of record ``i``, naming the field, or None."""
        problem = prediction_problem(i, p)
        if problem is not None:
            return problem
        future = self.future_problem(f"records[{i}].time", p.time)
        if future is not None:
            m.FUTURE_REFUSED.labels("record").inc()
            return future
        if self.horizon is not None and p.time < self.horizon:
            days = self.options.retention.days
            return (
                f"records[{i}].time: {p.time.isoformat()} is older than the retention period ({days} days "
                f"before the monitor's clock: kept from {self.horizon.isoformat()})"
            )
        state = self.windows.version((p.model, p.version))
        return feature_kind_problem(i, p, state.numeric, state.categorical)

    def ingest(self, records: Sequence[Prediction], offset: int = 0) -> tuple[int, int, int, str]:
        """Validates, deduplicates, durably appends (fsync) and folds one batch.

        Returns (accepted, duplicates, rejected, first rejection), only after every accepted
        record is on disk.
        """
        return self.ingest_batches([IngestBatch(records=records, offset=offset)])[0]

    def ingest_batches(self, batches: Sequence[IngestBatch]) -> list[tuple[int, int, int, str]]:
        """:meth:`ingest` of several batches at once (a group commit): each is validated and
        deduplicated in turn (against the index and the batches before it), then all that were
        accepted are written with one file (one fsync) per partition and folded together.

        Returns each batch's (accepted, duplicates, rejected, first rejection), only after every
        accepted record is on disk; :class:`StorageError` (for all of them) when the write failed.
        """
        results: list[tuple[int, int, int, str]] = []
        kept: list[pl.DataFrame] = []
        seen: set[int] = set()
        for batch in batches:
            m.RECORDS_RECEIVED.inc(len(batch))
            if batch.frame is None:
                problems = [self.validate(batch.offset + i, p) for i, p in enumerate(batch.records)]
                frame = predictions_frame(
                    [p for p, q in zip(batch.records, problems, strict=True) if q is None]
                )
            else:
                problems = self._problems(batch.frame, batch.offset)
                frame = batch.frame
                if any(q is not None for q in problems):
                    frame = frame.filter(pl.Series([q is None for q in problems], dtype=pl.Boolean))
            first = next((q for q in problems if q is not None), "")
            rejected = sum(q is not None for q in problems)
            for problem in problems:
                if problem is not None:
                    m.RECORDS_REJECTED.labels(problem.split(":")[0].split(".", 1)[1].split("[")[0]).inc()
            rids = [digest(r) for r in frame["request_id"]]
            known = self.labels.ids.contains_many(rids)
            fresh: list[bool] = []
            for k, r in zip(known.tolist(), rids, strict=True):
                fresh.append(not k and r not in seen)
                seen.add(r)
            accepted = sum(fresh)
            duplicates = frame.height - accepted
            if duplicates:
                mask = pl.Series(fresh, dtype=pl.Boolean)
                for model, version, n in frame.filter(~mask).group_by("model", "version").len().iter_rows():
                    m.RECORDS_DUPLICATE.labels(model, str(version)).inc(n)
                frame = frame.filter(mask)
                rids = [r for r, f in zip(rids, fresh, strict=True) if f]
            if accepted:
                kept.append(frame.with_columns(pl.Series(RID_COLUMN, rids, dtype=pl.UInt64)))
            results.append((accepted, duplicates, rejected, first))
        if kept:
            self._store(kept)
        return results

    def _problems(self, frame: pl.DataFrame, offset: int) -> list[str | None]:
        """Each stored record's problem (:meth:`validate`), found column by column: only the rows
        that fail a check are looked at one by one, for their message."""
        bad = self._bad_rows(frame)
        problems: list[str | None] = [None] * frame.height
        if bad.any():
            for i in bad.arg_true().to_list():
                problems[i] = self.validate(offset + i, prediction_from_row(frame.row(i, named=True)))
        return problems

    def _bad_rows(self, frame: pl.DataFrame) -> pl.Series:
        """Rows :meth:`validate` refuses (a superset is fine: each is checked again one by one)."""
        models = [v for v in frame["model"].unique().to_list() if model_name_problem("", v) is None]
        limit = self.wall() + self.options.max_future_skew
        horizon = self.horizon

        def bounded(name: str) -> pl.Expr:
            return ~(pl.col(name).is_finite() & pl.col(name).is_between(0.0, 1.0))

        latency = pl.col("latency_ms").fill_null(0.0)
        checks = [
            pl.col("request_id").fill_null("") == "",
            ~pl.col("model").is_in(models),
            pl.col("version") < 1,
            pl.col("time").dt.epoch("us") <= 0,
            bounded("score"),
            bounded("threshold"),
            ~(latency.is_finite() & (latency >= 0)),
            pl.col("time") > limit,
        ]
        if horizon is not None:
            checks.append(pl.col("time") < horizon)
        bad = frame.select(pl.any_horizontal(checks).fill_null(True).alias("bad"))["bad"]
        if bad.all():
            return bad
        # feature kinds against each version's profile (a version is created on its first valid record)
        schema = frame.schema
        kinds = [c for c in schema if c.startswith(FEATURE_PREFIX)]
        keys = frame.select("model", "version").filter(~bad).unique(maintain_order=True).iter_rows()
        for model, version in keys:
            state = self.windows.version((model, version))
            wrong = [
                pl.col(c).is_not_null()
                for c in kinds
                if c.removeprefix(FEATURE_PREFIX)
                in (state.numeric if schema[c] == pl.String else state.categorical)
            ]
            if wrong:
                of_key = (pl.col("model") == model) & (pl.col("version") == version)
                bad = bad | frame.select((of_key & pl.any_horizontal(wrong)).fill_null(False).alias("k"))["k"]
        return bad

    def _store(self, frames: list[pl.DataFrame]) -> None:
        """Durably appends the accepted records (one file per partition), then folds them."""
        # a feature stored as numbers in one batch and categories in another (only one outside the
        # profile: the kinds of its features are checked) is stored as text, as within one batch
        frame = frames[0] if len(frames) == 1 else pl.concat(frames, how="diagonal_relaxed")
        parts = hour_partitions(frame)
        written: list[tuple[str, int, datetime, pl.DataFrame]] = []
        try:
            for model, version, hour, part in parts:
                path = self.store.append_predictions(model, version, hour_key(hour), part.drop(RID_COLUMN))
                self.upkeep.dirty.add(path.parent)
                written.append((model, version, hour, part))
        except OSError as exc:
            # The partitions already written are durable: fold them, so that the client's retry of
            # the whole batch finds them as duplicates instead of storing them twice.
            if written:
                self.fold(pl.concat([part for *_, part in written]), live=True, parts=written)
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{frame.height} prediction records", exc) from exc
        self.fold(frame, live=True, parts=parts)

    def fold(
        self,
        frame: pl.DataFrame,
        live: bool = False,
        parts: list[tuple[str, int, datetime, pl.DataFrame]] | None = None,
    ) -> None:
        """Adds stored records to their hourly windows and the request-id / entity indexes (a
        :data:`RID_COLUMN` column, when there, holds the request-id digests; ``parts``: the
        frame's :func:`hour_partitions`, when known)."""
        for model, version, hour, part in parts if parts is not None else hour_partitions(frame):
            self.windows.add((model, version), hour, part, live)
            rids = part[RID_COLUMN].to_list() if RID_COLUMN in part.columns else None
            self.labels.add((model, version), hour, part, rids)
        touched = self.labels.resolve_waiting(frame)  # outcomes that arrived before their predictions
        if touched and live:
            last = frame["time"].max()
            assert isinstance(last, datetime)
            self._late_changes += self.evaluator.labelled(touched, last)

    # ------------------------------------------------------------------ profiles

    def take_wanted(self) -> list[VersionKey]:
        """The versions whose profile is to be fetched (each handed out once)."""
        wanted, self.windows.wanted = sorted(self.windows.wanted), set()
        return wanted

    def frames(self, key: VersionKey) -> list[tuple[datetime, pl.DataFrame]]:
        """Each retained hour's stored records of a version."""
        out = []
        for directory, hour in self.store.hour_dirs(*key):
            if self.horizon is not None and hour < self.horizon:
                continue
            frame = read_files(live_files(directory))
            if frame is not None and frame.height:
                out.append((hour, frame))
        return out

    def profile_arrived(self, key: VersionKey, ref: Reference) -> list[AlertRecord]:
        """A version's reference arrived: its windows are built from its stored records and the
        ones that closed meanwhile evaluated. Returns the alerts that changed."""
        self.windows.arrived(key, ref, lambda: self.frames(key))
        log.info("reference profile in use", extra={"model": key[0], "version": key[1]})
        return self.evaluate()

    def profile_unavailable(self, key: VersionKey, reason: str) -> list[AlertRecord]:
        """A version will have no reference: its windows close without drift rules."""
        self.windows.unavailable(key, reason)
        log.warning("no reference profile", extra={"model": key[0], "version": key[1], "reason": reason})
        return self.evaluate()

    # ------------------------------------------------------------------ outcomes

    def record_outcomes(self, outcomes: Sequence[OutcomeIn]) -> tuple[OutcomeCounts, list[AlertRecord]]:
        """Durably appends the new outcomes, matches them to predictions, re-evaluates accuracy rules.

        Returns what became of them (``unmatched``: waiting for their prediction) and the alerts
        that changed. A duplicate (its request already has an outcome, matched, waiting or orphaned
        lately) is neither stored nor counted again.
        """
        check_outcomes(outcomes)
        for i, o in enumerate(outcomes):
            for field, t in (("observed_at", o.observed_at), ("prediction_time", o.prediction_time)):
                problem = self.future_problem(f"outcomes[{i}].{field}", t) if t is not None else None
                if problem is not None:
                    m.FUTURE_REFUSED.labels("outcome").inc()
                    raise InvalidInputError(problem)
        if not outcomes:
            return OutcomeCounts(), []
        fresh: list[OutcomeIn] = []  # stored first: a failed write leaves nothing matched
        keys: set[int] = set()
        for o in outcomes:
            key = self.labels.outcome_key(o)
            if key not in keys and not self.labels.is_duplicate(o):
                keys.add(key)
                fresh.append(o)
        by_day: dict[str, list[OutcomeIn]] = {}
        for o in fresh:
            by_day.setdefault(day_key(o.observed_at), []).append(o)
        try:
            for day, batch in sorted(by_day.items()):
                path = self.store.append_outcomes(outcomes_frame(batch), day)
                self.upkeep.dirty.add(path.parent)
        except OSError as exc:
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{len(fresh)} outcomes", exc) from exc
        results = []
        labelled: list[Labelled] = []
        touched: set[tuple[VersionKey, datetime]] = set()
        for o in outcomes:
            result, hit = self.labels.match(o)
            results.append(result)
            if hit is not None:
                touched.add(hit)
            served = self.labels.served(o) if result == "matched" else None
            if served is not None:
                (model, version), score, threshold, arm = served
                variant, rollout_id, experiment_id = arm
                labelled.append(
                    Labelled(
                        o.request_id,
                        model,
                        version,
                        score,
                        threshold,
                        o.defaulted,
                        variant=variant,
                        rollout_id=rollout_id,
                        experiment_id=experiment_id,
                    )
                )
        counts: dict[str, int] = {r: results.count(r) for r in ("matched", "waiting", "duplicate")}
        for name, n in counts.items():
            m.OUTCOMES.labels(name).inc(n)
        changed = self.evaluator.labelled(touched, max(o.observed_at for o in outcomes))
        if changed:
            self.save()
        counted = OutcomeCounts(counts["matched"], counts["waiting"], counts["duplicate"], labelled)
        return counted, changed

    # ------------------------------------------------------------------ statistics and rules

    def report(
        self, model: str, version: int, size: str, start: datetime | None, end: datetime | None
    ) -> list[WindowStats]:
        return self.windows.report(model, version, size, start, end)

    def evaluate(self, now: datetime | None = None) -> list[AlertRecord]:
        """Closes every window that ended (by event time less the allowed lateness, or by ``now``)
        and evaluates the rules on them in time order. Returns the alerts that changed.

        Versions whose reference profile is still being fetched are left open: they are evaluated
        once it arrives. :class:`InvalidInputError` when ``now`` is too far in the future.
        """
        if now is not None:
            problem = self.future_problem("now", now)
            if problem is not None:
                m.FUTURE_REFUSED.labels("evaluate").inc()
                raise InvalidInputError(problem)
        if now is not None and (self.clock is None or now > self.clock):
            self.clock = now
        changed, self._late_changes = self._late_changes, []
        closed_any = now is not None or bool(changed)
        for key, state in sorted(self.windows.versions.items()):
            if state.evaluated_until is None or state.status == "pending":
                continue
            bound = state.max_event - self.lateness if state.max_event is not None else None
            if self.clock is not None and (bound is None or self.clock > bound):
                bound = self.clock
            if bound is None:
                continue
            close_until = floor_hour(bound)  # hours starting before it have ended by ``bound``
            h = state.evaluated_until
            if h >= close_until:
                continue
            closed_any = True
            # Days without records have nothing to evaluate (neither their hours nor the day): skip
            # them in one step, so a clock far ahead of the data costs nothing.
            data_days = {floor_day(k) for k, c in state.hours.items() if c.count}
            while h < close_until:
                if floor_day(h) not in data_days:
                    h = min([close_until, *(d for d in data_days if d > h)])
                    continue
                end = h + HOUR
                changed += self.evaluator.closed_window(key, state, h, "hourly", end)
                if end.hour == 0:
                    changed += self.evaluator.closed_window(key, state, end - DAY, "daily", end)
                h = end
            if h > state.evaluated_until:
                state.evaluated_until = h
                state.evaluated_any = True
            self.windows.publish(key, state)
        if closed_any:
            self.save()
            self.upkeep.prune()
        return changed
