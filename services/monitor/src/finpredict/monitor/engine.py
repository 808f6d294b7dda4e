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
(:mod:`~finpredict.monitor.evaluation`) and the state file (:mod:`~finpredict.monitor.state`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.monitor import metrics as m
from finpredict.monitor.drift_input import SCORE_COLUMN
from finpredict.monitor.evaluation import AlertRecord, RuleEvaluator
from finpredict.monitor.labels import LabelIndex
from finpredict.monitor.records import (
    FULL_ERRNOS,
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
from finpredict.monitor.rules import Rule
from finpredict.monitor.state import SavedState, load_state, save_state
from finpredict.monitor.store import RecordStore, hour_key, read_parquet
from finpredict.monitor.windows import DAY, HOUR, VersionKey, Windows, WindowStats, floor_day, floor_hour

__all__ = ["SCORE_COLUMN", "Engine"]  # SCORE_COLUMN: where the replay has always imported it from

log = logging.getLogger("finpredict.monitor")


class Engine:
    """Logs, windows, statistics and alert state of one monitor process."""

    def __init__(
        self,
        data_dir: Path,
        profiles_dir: Path,
        rules: Sequence[Rule],
        allowed_lateness: timedelta = timedelta(minutes=5),
    ) -> None:
        self.store = RecordStore(data_dir)
        self.lateness = allowed_lateness
        self.state_path = data_dir / "state.json"
        self.windows = Windows(profiles_dir)
        self.labels = LabelIndex(self.windows.versions)
        self.evaluator = RuleEvaluator(rules, self.windows)
        self.clock: datetime | None = None
        self._recover()

    @property
    def alerts(self) -> dict[str, AlertRecord]:
        return self.evaluator.alerts

    @property
    def listeners(self) -> list[Callable[[AlertRecord, Rule | None], None]]:
        return self.evaluator.listeners

    def rule(self, name: str) -> Rule | None:
        return self.evaluator.rule(name)

    # ------------------------------------------------------------------ recovery and state

    def _recover(self) -> None:
        """Rebuilds windows, the dedup set and label matches from the logs; alert state from disk."""
        saved = load_state(self.state_path)
        self.evaluator.alerts = saved.alerts
        self.evaluator.streaks = saved.streaks
        self.evaluator.accuracy_day = saved.accuracy_day
        self.clock = saved.clock
        n = 0
        for path in self.store.prediction_files():
            frame = read_parquet(path)
            self._fold(frame)
            n += frame.height
        for key, until in saved.evaluated_until.items():
            state = self.windows.version(key)
            state.evaluated_until = until
            state.evaluated_any = True
        outcomes = self.store.read_outcomes()
        for row in outcomes.iter_rows(named=True):
            self.labels.match(
                OutcomeIn(
                    row["request_id"] or "",
                    row["entity_id"] or "",
                    bool(row["defaulted"]),
                    row["observed_at"],
                    row["prediction_time"],
                )
            )
        self.evaluator.publish_firing()
        log.info(
            "recovered", extra={"predictions": n, "outcomes": outcomes.height, "alerts": len(self.alerts)}
        )

    def save(self) -> None:
        """Durably writes the alert state (returns once it is on disk)."""
        evaluated = {
            k: v.evaluated_until for k, v in self.windows.versions.items() if v.evaluated_until is not None
        }
        ev = self.evaluator
        save_state(self.state_path, SavedState(ev.alerts, ev.streaks, ev.accuracy_day, self.clock, evaluated))

    # ------------------------------------------------------------------ ingest

    def validate(self, i: int, p: Prediction) -> str | None:
        """The first problem of record ``i``, naming the field, or None."""
        problem = prediction_problem(i, p)
        if problem is not None:
            return problem
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
        for i, p in enumerate(records):
            problem = self.validate(offset + i, p)
            if problem is not None:
                rejected += 1
                first = first or problem
                m.RECORDS_REJECTED.labels(problem.split(":")[0].split(".", 1)[1].split("[")[0]).inc()
                continue
            if p.request_id in self.labels or p.request_id in seen:
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
                self.store.append_predictions(model, version, hour_key(hour), part)
                written.append(part)
        except OSError as exc:
            # The partitions already written are durable: fold them, so that the client's retry of
            # the whole batch finds them as duplicates instead of storing them twice.
            if written:
                self._fold(pl.concat(written), live=True)
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{len(accepted)} prediction records", exc) from exc
        self._fold(frame, live=True)
        return len(accepted), duplicates, rejected, first

    def _fold(self, frame: pl.DataFrame, live: bool = False) -> None:
        """Adds stored records to their hourly windows and the request-id / entity indexes."""
        for model, version, hour, part in hour_partitions(frame):
            self.windows.add((model, version), hour, part, live)
            self.labels.add((model, version), hour, part)
        self.labels.resolve_pending(frame)  # outcomes that arrived before their predictions

    # ------------------------------------------------------------------ outcomes

    def record_outcomes(self, outcomes: Sequence[OutcomeIn]) -> tuple[OutcomeCounts, list[AlertRecord]]:
        """Durably appends outcomes, matches them to predictions, re-evaluates accuracy rules."""
        check_outcomes(outcomes)
        counts = OutcomeCounts()
        if not outcomes:
            return counts, []
        try:
            self.store.append_outcomes(outcomes_frame(outcomes))
        except OSError as exc:
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{len(outcomes)} outcomes", exc) from exc
        touched: set[tuple[VersionKey, datetime]] = set()
        for o in outcomes:
            hit = self.labels.match(o)
            if hit == "unmatched":
                counts.unmatched += 1
            elif hit == "duplicate":
                counts.duplicates += 1
            else:
                counts.matched += 1
                touched.add(hit)
        m.OUTCOMES.labels("matched").inc(counts.matched)
        m.OUTCOMES.labels("unmatched").inc(counts.unmatched)
        m.OUTCOMES.labels("duplicate").inc(counts.duplicates)
        now = max(o.observed_at for o in outcomes)
        changed = self.evaluator.labelled(touched, now)
        if changed:
            self.save()
        return counts, changed

    # ------------------------------------------------------------------ statistics and rules

    def report(
        self, model: str, version: int, size: str, start: datetime | None, end: datetime | None
    ) -> list[WindowStats]:
        return self.windows.report(model, version, size, start, end)

    def evaluate(self, now: datetime | None = None) -> list[AlertRecord]:
        """Closes every window that ended (by event time less the allowed lateness, or by ``now``)
        and evaluates the rules on them in time order. Returns the alerts that changed."""
        if now is not None and (self.clock is None or now > self.clock):
            self.clock = now
        changed: list[AlertRecord] = []
        closed_any = now is not None
        for key, state in sorted(self.windows.versions.items()):
            if state.evaluated_until is None:
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
        return changed
