"""Bounded state, on the engine in-process: the retention period empties the logs, the windows and
the request-id index of old hours (memory flat under constant load); a restart loads the snapshot
and folds only what was written after it; compaction leaves one file per closed hour and a crash
half-way through it double counts nothing; "3 consecutive days" are calendar days in a row; times
too far in the future are refused and never move the clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
import yaml

from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.monitor.engine import Engine, EngineOptions
from finpredict.monitor.profiles import ProfileCache
from finpredict.monitor.records import InvalidInputError, OutcomeIn
from finpredict.monitor.rules import load_rules, parse_rules
from finpredict.monitor.service import record_from_proto
from finpredict.monitor.store import COMPACT_SUFFIX, live_files
from finpredict.testkit.monitor import MODEL

KEY = (MODEL, 1)


@pytest.fixture
def cache(tmp_path: Path, profile_bytes: bytes) -> ProfileCache:
    (tmp_path / "profiles" / MODEL).mkdir(parents=True)
    (tmp_path / "profiles" / MODEL / "1.bin").write_bytes(profile_bytes)
    return ProfileCache(tmp_path / "profiles")


def _engine(tmp_path: Path, cache: ProfileCache, **options: object) -> Engine:
    return Engine(tmp_path / "data", cache, load_rules(DEFAULT_RULES_FILE), EngineOptions(**options))  # type: ignore[arg-type]


def _feed(engine: Engine, stream: pl.DataFrame, batch: int = 0) -> None:
    """Ingests ``stream`` hour by hour (in batches of ``batch`` records when given), evaluating at
    each hour's end, as a replay does."""
    for (hour,), part in stream.group_by(pl.col("time").dt.truncate("1h"), maintain_order=True):
        records = [record_from_proto(r) for r in rp.to_records(part, MODEL, 1)]
        size = batch or len(records)
        for i in range(0, len(records), size):
            _accepted, duplicates, rejected, first = engine.ingest(records[i : i + size])
            assert (duplicates, rejected) == (0, 0), first
        assert isinstance(hour, datetime)
        engine.evaluate(hour + timedelta(hours=1))


def test_retention_drops_old_hours_everywhere_and_keeps_memory_flat(
    tmp_path: Path, cache: ProfileCache
) -> None:
    engine = _engine(tmp_path, cache, retention=timedelta(days=3))
    sizes = []
    for day in range(10):
        sc = rp.Scenario(days=day + 1, first_day=day, per_hour=4, seed=3)
        _feed(engine, rp.generate(sc))
        sizes.append(
            (len(engine.labels), len(engine.labels.by_entity), len(engine.windows.versions[KEY].hours))
        )
    # from the fourth day on the state holds at most the retention period (+ the current day)
    for n_ids, n_entities, n_hours in sizes[4:]:
        assert n_ids == n_entities == n_hours * 4
        assert n_hours <= 4 * 24
    assert max(s[0] for s in sizes[4:]) - min(s[0] for s in sizes[4:]) <= 24 * 4, "flat under constant load"
    horizon = engine.horizon
    assert horizon == rp.START + timedelta(days=10) - timedelta(days=3)  # the clock is 00:00 of day 10
    assert min(h for _, h in engine.store.hour_dirs()) < horizon, "the logs go after, not during, ingest"
    engine.housekeeping()  # the periodic run deletes them
    hours_on_disk = [h for _, h in engine.store.hour_dirs()]
    assert min(hours_on_disk) >= horizon
    assert min(engine.windows.versions[KEY].hours) >= horizon
    # a record older than the retention period is refused, naming the field
    old = rp.generate(rp.Scenario(days=1, per_hour=1, seed=4)).head(1)
    accepted, _, rejected, first = engine.ingest([record_from_proto(r) for r in rp.to_records(old, MODEL, 1)])
    assert (accepted, rejected) == (0, 1)
    assert first.startswith("records[0].time:")
    assert "retention period" in first


def test_a_restart_loads_the_snapshot_and_folds_only_the_tail(tmp_path: Path, cache: ProfileCache) -> None:
    stream = rp.generate(rp.Scenario(days=2, per_hour=30, seed=5))
    day1 = stream.filter(pl.col("time") < rp.START + timedelta(days=1, hours=20))
    tail = stream.filter(pl.col("time") >= rp.START + timedelta(days=1, hours=20))
    first = _engine(tmp_path, cache)
    _feed(first, day1, batch=10)  # three files an hour
    counts, _ = first.record_outcomes(
        [OutcomeIn(r, "", True, rp.START + timedelta(days=2), None) for r in day1["request_id"][:50]]
    )
    # each matched outcome comes back with its prediction's version, score and threshold (for the
    # gateway's rollout and experiment analysis)
    assert [x.request_id for x in counts.labelled] == list(day1["request_id"][:50])
    assert {(x.model, x.version, x.defaulted) for x in counts.labelled} == {(MODEL, 1, True)}
    assert [x.score for x in counts.labelled] == list(day1["score"][:50])
    first.snapshot()
    # the closed hours were compacted into one file each, after the snapshot covered them
    closed = [d for d, h in first.store.hour_dirs() if h < rp.START + timedelta(days=1, hours=19)]
    assert closed
    assert all([f.name.endswith(COMPACT_SUFFIX) for f in d.iterdir()] == [True] for d in closed)
    _feed(first, tail, batch=10)  # written after the snapshot; then "kill -9": no snapshot at exit
    expected = first.report(MODEL, 1, "hourly", None, None)

    second = _engine(tmp_path, cache)
    assert second.recovered_files == 4 * 3  # the four tail hours, three files each
    got = second.report(MODEL, 1, "hourly", None, None)
    assert [(w.start, w.count, w.labeled, w.score_kl) for w in got] == [
        (w.start, w.count, w.labeled, w.score_kl) for w in expected
    ]
    assert [[f.psi for f in w.features] for w in got] == [[f.psi for f in w.features] for w in expected]
    assert len(second.labels) == stream.height
    # the dedup set and the labels survived: everything again is a duplicate, so is an outcome
    again = [record_from_proto(r) for r in rp.to_records(stream, MODEL, 1)]
    assert second.ingest(again)[:2] == (0, stream.height)
    counts, _ = second.record_outcomes([OutcomeIn(day1["request_id"][0], "", False, rp.START, None)])
    assert counts.duplicates == 1
    # without the snapshot the logs rebuild the same state
    for p in (tmp_path / "data" / "snapshot").iterdir():
        p.unlink() if p.is_file() else None
    third = _engine(tmp_path, cache)
    assert [(w.start, w.count, w.labeled) for w in third.report(MODEL, 1, "hourly", None, None)] == [
        (w.start, w.count, w.labeled) for w in expected
    ]


def test_a_crash_half_way_through_a_compaction_double_counts_nothing(
    tmp_path: Path, cache: ProfileCache
) -> None:
    engine = _engine(tmp_path, cache)
    _feed(engine, rp.generate(rp.Scenario(days=1, per_hour=20, seed=6)).head(20), batch=5)
    (directory,) = [d for d, _ in engine.store.hour_dirs()]
    files = live_files(directory)
    assert len(files) == 4
    # what a crash after writing the compacted file, before removing the others, leaves behind
    frame = pl.concat([pl.read_parquet(f) for f in files])
    frame.write_parquet(directory / (files[-1].name[:21] + COMPACT_SUFFIX))
    assert live_files(directory) == [directory / (files[-1].name[:21] + COMPACT_SUFFIX)]
    assert engine.store.read_predictions().height == 20
    engine.store.compact(directory)
    assert [f.name for f in directory.iterdir()] == [files[-1].name[:21] + COMPACT_SUFFIX]


def test_a_day_without_data_breaks_a_run_of_consecutive_days(tmp_path: Path, cache: ProfileCache) -> None:
    rules = parse_rules(yaml.safe_load(DEFAULT_RULES_FILE.read_text()))
    psi_rule = next(r for r in rules if r.name == "feature_psi_3d")
    assert psi_rule.consecutive == 3
    stream = rp.generate(rp.Scenario(days=7, per_hour=25, drift="recession", shift_day=1, seed=7))
    gap = rp.START + timedelta(days=3)
    engine = _engine(tmp_path / "gap", cache)
    _feed(engine, stream.filter((pl.col("time") < gap) | (pl.col("time") >= gap + timedelta(days=1))))
    fired = sorted({a.started_at for a in engine.alerts.values() if a.rule == "feature_psi_3d"})
    # breaches on days 1 and 2, none on day 3 (no data), then days 4, 5, 6: the third in a row ends day 6
    assert fired == [rp.START + timedelta(days=7)]
    control = _engine(tmp_path / "control", cache)
    _feed(control, stream)
    assert min(
        a.started_at for a in control.alerts.values() if a.rule == "feature_psi_3d"
    ) == gap + timedelta(days=1)


def test_times_in_the_future_are_refused_and_never_move_the_clock(
    tmp_path: Path, cache: ProfileCache
) -> None:
    engine = _engine(tmp_path, cache)
    stream = rp.generate(rp.Scenario(days=1, per_hour=200, drift="new_segment", shift_day=0, seed=8))
    future = record_from_proto(rp.to_records(stream.head(1), MODEL, 1)[0])
    future.time = datetime(2100, 1, 1, tzinfo=UTC)
    future.request_id = "from-2100"
    accepted, _, rejected, first = engine.ingest([future])
    assert (accepted, rejected) == (0, 1)
    assert first.startswith("records[0].time:")
    assert "ahead of the monitor's clock" in first
    with pytest.raises(InvalidInputError, match=r"^now:"):
        engine.evaluate(datetime(2100, 1, 1, tzinfo=UTC))
    with pytest.raises(InvalidInputError, match=r"^outcomes\[0\]\.observed_at:"):
        engine.record_outcomes([OutcomeIn("x", "", True, datetime(2100, 1, 1, tzinfo=UTC), None)])
    assert engine.clock is None
    assert engine.event_clock() is None
    _feed(engine, stream.filter(pl.col("time") < rp.START + timedelta(hours=3)))
    assert any(a.rule == "score_kl_1h" and a.firing for a in engine.alerts.values()), (
        "later records evaluated"
    )
    assert engine.clock == rp.START + timedelta(hours=3)
