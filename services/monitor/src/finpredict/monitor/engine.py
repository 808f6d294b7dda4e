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
from finpredict.monitor.labels import LabelIndex
from finpredict.monitor.profiles import ProfileCache, Reference
from finpredict.monitor.records import (
    FULL_ERRNOS,
    InvalidInputError,
    OutcomeCounts,
    OutcomeIn,
    Prediction,
    StorageError,
    check_outcomes,
    feature_kind_problem,
    hour_partitions,
    outcomes_frame,
    prediction_problem,
    predictions_frame,
)
from finpredict.monitor.recovery import recover
from finpredict.monitor.rules import Rule
from finpredict.monitor.state import SavedState, save_state
from finpredict.monitor.store import (
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
        accepted: list[Prediction] = []
        seen: set[str] = set()
        duplicates = rejected = 0
        first = ""
        m.RECORDS_RECEIVED.inc(len(records))
        known = self.labels.known([p.request_id for p in records])
        for i, p in enumerate(records):
            problem = self.validate(offset + i, p)
            if problem is not None:
                rejected += 1
                first = first or problem
                m.RECORDS_REJECTED.labels(problem.split(":")[0].split(".", 1)[1].split("[")[0]).inc()
                continue
            if known[i] or p.request_id in seen:
                duplicates += 1
                m.RECORDS_DUPLICATE.labels(p.model, str(p.version)).inc()
                continue
            seen.add(p.request_id)
            accepted.append(p)
        if not accepted:
            return 0, duplicates, rejected, first
        frame = predictions_frame(accepted)
        written: list[pl.DataFrame] = []
        try:
            for model, version, hour, part in hour_partitions(frame):
                path = self.store.append_predictions(model, version, hour_key(hour), part)
                self.upkeep.dirty.add(path.parent)
                written.append(part)
        except OSError as exc:
            # The partitions already written are durable: fold them, so that the client's retry of
            # the whole batch finds them as duplicates instead of storing them twice.
            if written:
                self.fold(pl.concat(written), live=True)
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{len(accepted)} prediction records", exc) from exc
        self.fold(frame, live=True)
        return len(accepted), duplicates, rejected, first

    def fold(self, frame: pl.DataFrame, live: bool = False) -> None:
        """Adds stored records to their hourly windows and the request-id / entity indexes."""
        for model, version, hour, part in hour_partitions(frame):
            self.windows.add((model, version), hour, part, live)
            self.labels.add((model, version), hour, part)
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
        touched: set[tuple[VersionKey, datetime]] = set()
        for o in outcomes:
            result, hit = self.labels.match(o)
            results.append(result)
            if hit is not None:
                touched.add(hit)
        counts: dict[str, int] = {r: results.count(r) for r in ("matched", "waiting", "duplicate")}
        for name, n in counts.items():
            m.OUTCOMES.labels(name).inc(n)
        changed = self.evaluator.labelled(touched, max(o.observed_at for o in outcomes))
        if changed:
            self.save()
        return OutcomeCounts(counts["matched"], counts["waiting"], counts["duplicate"]), changed

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
