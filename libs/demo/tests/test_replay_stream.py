"""The synthetic replay's stream: deterministic for a seed, on the simulated clock it claims, with
the drift and the silent degradation where the scenario puts them."""

from __future__ import annotations

from datetime import timedelta

import polars as pl
from polars.testing import assert_frame_equal

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.demo import replay as rp

SMALL = rp.Scenario(days=3, first_day=1, per_hour=10, drift="recession", shift_day=2, seed=5)


def test_the_same_scenario_gives_the_same_stream() -> None:
    assert_frame_equal(rp.generate(SMALL), rp.generate(SMALL))
    other = rp.generate(rp.Scenario(days=3, first_day=1, per_hour=10, drift="recession", shift_day=2, seed=6))
    assert not other["score"].equals(rp.generate(SMALL)["score"])


def test_the_stream_covers_its_days_in_time_order() -> None:
    stream = rp.generate(SMALL)
    assert stream.height == (SMALL.days - SMALL.first_day) * 24 * SMALL.per_hour
    times = stream["time"]
    assert times.is_sorted()
    assert times.min() >= SMALL.start + timedelta(days=SMALL.first_day)
    assert times.max() < SMALL.start + timedelta(days=SMALL.days)
    assert stream["request_id"].n_unique() == stream.height
    assert SMALL.shift_time == SMALL.start + timedelta(days=2)


def test_a_silently_degraded_model_keeps_each_hours_scores() -> None:
    calm = rp.Scenario(days=1, per_hour=20, seed=3)
    degraded = rp.Scenario(days=1, per_hour=20, seed=3, degrade_from_day=0)
    a, b = rp.generate(calm), rp.generate(degraded)
    assert not a["score"].equals(b["score"])  # shuffled across requests ...
    hour = pl.col("time").dt.truncate("1h")
    per_hour_a = a.group_by(hour).agg(pl.col("score").sort()).sort("time")
    per_hour_b = b.group_by(hour).agg(pl.col("score").sort()).sort("time")
    assert_frame_equal(per_hour_a, per_hour_b)  # ... within each hour: the same distribution


def test_records_carry_the_stream() -> None:
    stream = rp.generate(rp.Scenario(days=1, per_hour=2, seed=1))
    records = rp.to_records(stream.head(3), "credit-default", 4)
    assert [r.request_id for r in records] == stream["request_id"].head(3).to_list()
    first = records[0]
    assert isinstance(first, monitor_pb2.PredictionRecord)
    assert (first.model.name, first.model.version, first.variant) == ("credit-default", 4, "stable")
    assert first.score == stream["score"][0]
    features = [c for c in stream.columns if c not in rp.META]
    assert set(first.features) <= set(features)
    assert len(first.features) > 10
