"""Replay (``finpredict replay``): feeds a generated (or stored) prediction stream through a
running monitor on a simulated clock, so 30 days take minutes. The monitor only sees what any
client sends it over its gRPC API; the records come from here.

The stream comes from the pipeline's data-generating process (:mod:`finpredict.pipelines.dgp`)
with its named drift scenarios. The "model" scoring it is the DGP's own risk function
(``sigmoid(default_logit)``, an oracle model); a *silently degraded* model keeps the same score
distribution but shuffles scores across requests within each hour, so only labels reveal it.

The driver sends each simulated hour as one acknowledged batch, then calls ``EvaluateRules``
with the hour's end as the clock; delayed outcomes are sent once the clock passes their
``observed_at``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import polars as pl

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.monitor.drift_input import SCORE_COLUMN
from finpredict.monitor.service import dt_to_ts, ts_to_dt
from finpredict.pipelines import dgp

START = datetime(2025, 1, 1, tzinfo=UTC)
META = ("request_id", "entity_id", "time", "score", "threshold", "defaulted", "variant")


def feature_frame(df: pl.DataFrame) -> pl.DataFrame:
    """The model inputs as the monitor sees them: numbers as Float64, categories as strings."""
    drop = {dgp.ID, dgp.TIMESTAMP, dgp.LABEL, dgp.PROTECTED}
    return df.select(
        [
            pl.col(c) if df[c].dtype == pl.String else pl.col(c).cast(pl.Float64)
            for c in df.columns
            if c not in drop
        ]
    )


def oracle_scores(df: pl.DataFrame) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-dgp.default_logit(df))), dtype=np.float64)


def reference_profile(n_rows: int = 20_000, seed: int = 7, n_bins: int = 10) -> drift_core.Profile:
    """A reference profile like the pipeline's ``profile`` stage stores: every input feature plus
    the score distribution (column ``__score__``), fitted on no-drift training-like data."""
    df = dgp.generate(n_rows, seed=seed, scenario="none", days=365)
    frame = feature_frame(df).with_columns(pl.Series(SCORE_COLUMN, oracle_scores(df)))
    return drift_core.Profile.fit(frame, n_bins=n_bins, binning="quantile", allow_copy=True)


@dataclass(frozen=True)
class Scenario:
    """What to replay."""

    days: int = 30  # the stream ends at 00:00 of this day
    per_hour: int = 200
    first_day: int = 0  # the stream starts at 00:00 of this day (a replay may skip calm days)
    drift: str = "none"  # a dgp scenario
    shift_day: int = 10  # the drift starts at 00:00 of this day (0-based)
    degrade_from_day: int | None = None  # the silently degraded model serves from this day
    degrade_until_day: int | None = None  # ... until this day (recovery), exclusive
    threshold: float = 0.1
    seed: int = 1
    start: datetime = START

    @property
    def shift_time(self) -> datetime:
        return self.start + timedelta(days=self.shift_day)


def generate(sc: Scenario) -> pl.DataFrame:
    """The stream of days ``first_day`` to ``days`` (exclusive): one row per prediction, in time
    order (features, score, label)."""
    first_h, hours = sc.first_day * 24, sc.days * 24
    n = (hours - first_h) * sc.per_hour
    hour_idx = np.repeat(np.arange(first_h, hours), sc.per_hour)
    rng = np.random.default_rng(sc.seed + 1000)
    parts = []
    shift_h = max(sc.shift_day * 24, first_h) if sc.drift != "none" else hours
    for lo, hi, scenario, seed in (
        (first_h, shift_h, "none", sc.seed),
        (shift_h, hours, sc.drift, sc.seed + 1),
    ):
        rows = (hi - lo) * sc.per_hour
        if rows > 0:
            parts.append(dgp.generate(rows, seed=seed, scenario=scenario, days=1))
    df = pl.concat(parts)
    scores = oracle_scores(df)
    if sc.degrade_from_day is not None:
        until = sc.degrade_until_day if sc.degrade_until_day is not None else sc.days
        for h in range(max(sc.degrade_from_day * 24, first_h), min(until, sc.days) * 24):
            sl = slice((h - first_h) * sc.per_hour, (h - first_h + 1) * sc.per_hour)
            scores[sl] = rng.permutation(scores[sl])
    within = np.sort(rng.uniform(0, 3600, (hours - first_h, sc.per_hour)), axis=1).ravel()
    offsets = hour_idx * 3600.0 + within
    times = [sc.start + timedelta(seconds=float(s)) for s in offsets]
    tag = f"{sc.seed}-{sc.first_day}"
    return feature_frame(df).with_columns(
        pl.Series("request_id", [f"req-{tag}-{i:09d}" for i in range(n)]),
        pl.Series("entity_id", [f"ent-{tag}-{i:09d}" for i in range(n)]),
        pl.Series("time", times, dtype=pl.Datetime("us", "UTC")),
        pl.Series("score", scores),
        pl.lit(sc.threshold).alias("threshold"),
        pl.Series("defaulted", df[dgp.LABEL].cast(pl.Boolean)),
        pl.lit("stable").alias("variant"),
    )


def to_records(frame: pl.DataFrame, model: str, version: int) -> list[pb.PredictionRecord]:
    """Proto records of a stream slice (nulls are sent as absent features)."""
    feats = [c for c in frame.columns if c not in META]
    string = {c for c in feats if frame[c].dtype == pl.String}
    columns = {c: frame[c].to_list() for c in frame.columns}
    ref = types_pb2.ModelRef(name=model, version=version)
    out = []
    for i in range(frame.height):
        fv: dict[str, types_pb2.FeatureValue] = {}
        for c in feats:
            v = columns[c][i]
            if v is None:
                continue
            fv[c] = types_pb2.FeatureValue(category=v) if c in string else types_pb2.FeatureValue(number=v)
        out.append(
            pb.PredictionRecord(
                request_id=columns["request_id"][i],
                entity_id=columns["entity_id"][i],
                model=ref,
                variant=columns["variant"][i],
                features=fv,
                score=columns["score"][i],
                threshold=columns["threshold"][i],
                latency_ms=5.0,
                time=dt_to_ts(columns["time"][i]),
            )
        )
    return out


@dataclass
class ReplayResult:
    """What a replay observed: alert state changes with the simulated clock of their evaluation."""

    accepted: int = 0
    duplicates: int = 0
    rejected: int = 0
    outcomes_matched: int = 0
    changes: list[pb.Alert] = field(default_factory=list)

    def first_firing(self, rule: str) -> pb.Alert | None:
        return next((a for a in self.changes if a.rule == rule and a.state == pb.ALERT_STATE_FIRING), None)

    def firing(self, rule: str) -> list[pb.Alert]:
        return [a for a in self.changes if a.rule == rule and a.state == pb.ALERT_STATE_FIRING]

    def resolved(self, rule: str) -> list[pb.Alert]:
        return [a for a in self.changes if a.rule == rule and a.state == pb.ALERT_STATE_RESOLVED]


def _hours(stream: pl.DataFrame) -> Iterator[tuple[datetime, pl.DataFrame]]:
    keyed = stream.with_columns(pl.col("time").dt.truncate("1h").alias("_hour"))
    for (hour,), part in keyed.group_by("_hour", maintain_order=True):
        assert isinstance(hour, datetime)
        yield hour, part.drop("_hour")


def replay(
    channel: grpc.Channel,
    stream: pl.DataFrame,
    model: str,
    version: int,
    label_delay: timedelta | None = None,
    timeout: float = 60.0,
    metadata: tuple[tuple[str, str], ...] = (),
) -> ReplayResult:
    """Sends ``stream`` hour by hour, evaluating the rules at each simulated hour's end
    (``metadata``: e.g. the bearer token of a monitor that requires one)."""
    stub = pb_grpc.MonitorServiceStub(channel)
    result = ReplayResult()
    outcomes: list[tuple[datetime, pb.Outcome]] = []
    sent = 0
    end = None
    for hour, part in _hours(stream):
        resp = stub.IngestPredictions(
            iter([pb.IngestPredictionsRequest(records=to_records(part, model, version))]),
            timeout=timeout,
            metadata=metadata,
        )
        result.accepted += resp.accepted
        result.duplicates += resp.duplicates
        result.rejected += resp.rejected
        if label_delay is not None:
            for rid, t, d in zip(part["request_id"], part["time"], part["defaulted"], strict=True):
                seen = t + label_delay
                outcomes.append(
                    (seen, pb.Outcome(request_id=rid, defaulted=bool(d), observed_at=dt_to_ts(seen)))
                )
        end = hour + timedelta(hours=1)
        sent = _send_outcomes(stub, outcomes, sent, end, result, timeout, metadata)
        result.changes += stub.EvaluateRules(
            pb.EvaluateRulesRequest(now=dt_to_ts(end)), timeout=timeout, metadata=metadata
        ).changed
    if end is not None and label_delay is not None:  # let the remaining labels arrive
        final = end + label_delay + timedelta(hours=1)
        _send_outcomes(stub, outcomes, sent, final, result, timeout, metadata)
    # Alerts raised when ingest itself closed a window are not in EvaluateRules' answers; the
    # monitor's alert list has them (one entry per alert, its latest state).
    seen = {(a.id, a.started_at.seconds, a.state) for a in result.changes}
    listed = stub.ListAlerts(pb.ListAlertsRequest(model=model), timeout=timeout, metadata=metadata).alerts
    result.changes += [a for a in listed if (a.id, a.started_at.seconds, a.state) not in seen]
    result.changes.sort(key=lambda a: a.started_at.seconds)
    return result


def _send_outcomes(
    stub: pb_grpc.MonitorServiceStub,
    outcomes: list[tuple[datetime, pb.Outcome]],
    sent: int,
    until: datetime,
    result: ReplayResult,
    timeout: float,
    metadata: tuple[tuple[str, str], ...],
) -> int:
    due = []
    while sent < len(outcomes) and outcomes[sent][0] <= until:
        due.append(outcomes[sent][1])
        sent += 1
    # outcomes arrive in hourly batches of their observation time
    batches: dict[datetime, list[pb.Outcome]] = {}
    for o in due:
        batches.setdefault(ts_to_dt(o.observed_at).replace(minute=0, second=0, microsecond=0), []).append(o)
    for _, batch in sorted(batches.items()):
        request = pb.RecordOutcomesRequest(outcomes=batch)
        resp = stub.RecordOutcomes(request, timeout=timeout, metadata=metadata)
        result.outcomes_matched += resp.matched
        result.changes += resp.changed
    return sent
