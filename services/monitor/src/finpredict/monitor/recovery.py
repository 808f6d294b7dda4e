"""Rebuilding the engine's state at start-up: the alert state file, the snapshot, then only the
log files written after it (every retained log file without one); never a file older than the
retention period, nor a partition stamped in the future (which an earlier release accepted)."""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

from finpredict.monitor import metrics as m
from finpredict.monitor.records import OutcomeIn
from finpredict.monitor.snapshot import load_snapshot, restore
from finpredict.monitor.state import load_state
from finpredict.monitor.store import read_parquet, stamp_of

if TYPE_CHECKING:
    from finpredict.monitor.engine import Engine

log = logging.getLogger("finpredict.monitor")


def recover(engine: Engine) -> None:
    """Rebuilds ``engine``'s windows, index, waiting outcomes and alert state; sets
    ``engine.recovery_s`` and ``engine.recovered_files``."""
    t0 = time.perf_counter()
    saved = load_state(engine.state_path)
    ev = engine.evaluator
    ev.alerts, ev.streaks, ev.streak_ends, ev.accuracy_day = (
        saved.alerts,
        saved.streaks,
        saved.streak_ends,
        saved.accuracy_day,
    )
    limit = engine.wall() + engine.options.max_future_skew
    if saved.clock is not None and saved.clock > limit:
        log.warning("saved clock is in the future: ignored", extra={"clock": saved.clock.isoformat()})
        saved.clock = None
    engine.clock = saved.clock
    store = engine.store
    snap = load_snapshot(engine.data_dir)
    predictions_stamp = outcomes_stamp = ""
    if snap is not None:
        restore(snap, engine.windows, engine.labels)
        predictions_stamp, outcomes_stamp = snap.predictions_stamp, snap.outcomes_stamp
    hours = [h for _, h in store.hour_dirs() if h <= limit]
    latest = max([t for t in (engine.clock, max(hours, default=None)) if t is not None], default=None)
    horizon = engine.upkeep.horizon = engine.upkeep.horizon_at(latest) if latest is not None else None
    files = store.prediction_files(since=horizon, until=limit)
    tail = store.files_after(files, predictions_stamp)
    for path in tail:
        engine.fold(read_parquet(path))
    outcome_files = store.outcome_files(since=horizon)
    outcome_tail = store.files_after(outcome_files, outcomes_stamp)
    for path in outcome_tail:
        for row in read_parquet(path).iter_rows(named=True):
            engine.labels.match(
                OutcomeIn(
                    row["request_id"] or "",
                    row["entity_id"] or "",
                    bool(row["defaulted"]),
                    row["observed_at"],
                    row["prediction_time"],
                )
            )
    for f in files:  # the next file is named after every one there is
        store.raise_floor(stamp_of(f))
    store.raise_floor(max(predictions_stamp, outcomes_stamp, *(stamp_of(f) for f in outcome_files)))
    store.outcomes_stamp = max([outcomes_stamp, *(stamp_of(f) for f in outcome_files)])
    for key, until in saved.evaluated_until.items():
        state = engine.windows.version(key)
        state.evaluated_until = until
        state.evaluated_any = True
    for key, state in engine.windows.versions.items():  # a cached profile the snapshot had not seen
        ref = state.reference()
        if ref is not None and any(c.window is None and c.count for c in state.hours.values()):
            engine.windows.arrived(key, ref, functools.partial(engine.frames, key))
    engine.upkeep.prune()  # the memory now; old logs are deleted after the start, not before
    ev.publish_firing()
    engine.recovered_files = len(tail) + len(outcome_tail)
    engine.recovery_s = time.perf_counter() - t0
    m.RECOVERY_SECONDS.set(engine.recovery_s)
    log.info(
        "recovered",
        extra={
            "snapshot": snap is not None,
            "files_read": engine.recovered_files,
            "predictions": len(engine.labels),
            "alerts": len(engine.alerts),
            "seconds": round(engine.recovery_s, 3),
        },
    )
