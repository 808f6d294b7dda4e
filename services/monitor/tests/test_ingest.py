"""Ingest on the real monitor: validation naming the field, duplicates, out-of-order and late
records landing in their event-time window, outcome matching, counters."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta

import grpc
import polars as pl
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.demo import replay as rp
from finpredict.monitor.service import dt_to_ts
from finpredict.testkit.monitor import MODEL, StartMonitor, authed, monitor_env, stub
from finpredict.testkit.process import ServiceProcess, start_service


def _records(
    hours: int = 3, per_hour: int = 20, tag: str = ""
) -> tuple[pl.DataFrame, list[pb.PredictionRecord]]:
    stream = rp.generate(rp.Scenario(days=1, per_hour=per_hour, seed=5)).filter(
        pl.col("time") < rp.START + timedelta(hours=hours)
    )
    stream = stream.with_columns(
        (pl.lit(tag) + pl.col("request_id")).alias("request_id"),
        (pl.lit(tag) + pl.col("entity_id")).alias("entity_id"),
    )
    return stream, rp.to_records(stream, MODEL, 1)


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory, profile_bytes: bytes) -> Iterator[ServiceProcess]:
    """One monitor for the validation tests (each uses its own request ids; counters by delta)."""
    work = tmp_path_factory.mktemp("monitor")
    (work / "profiles" / MODEL).mkdir(parents=True)
    (work / "profiles" / MODEL / "1.bin").write_bytes(profile_bytes)
    proc = start_service("monitor", work, env=monitor_env(work))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def shared_stub(shared: ServiceProcess) -> Iterator[pb_grpc.MonitorServiceStub]:
    with grpc.insecure_channel(shared.target) as ch:
        yield pb_grpc.MonitorServiceStub(authed(ch))


def _ingest(s: object, *batches: list[pb.PredictionRecord]) -> pb.IngestPredictionsResponse:
    resp: pb.IngestPredictionsResponse = s.IngestPredictions(  # type: ignore[attr-defined]
        iter([pb.IngestPredictionsRequest(records=b) for b in batches]), timeout=30
    )
    return resp


def _metric(proc: ServiceProcess, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


def _bad(mutate: Callable[[pb.PredictionRecord], None], tag: str) -> pb.PredictionRecord:
    _, recs = _records(1, 1, tag)
    rec = recs[0]
    rec.request_id = tag + "bad"
    mutate(rec)
    return rec


BAD_RECORDS = [
    (lambda r: r.ClearField("request_id"), "records[1].request_id"),
    (lambda r: r.model.ClearField("name"), "records[1].model.name"),
    (lambda r: setattr(r.model, "version", 0), "records[1].model.version"),
    (lambda r: r.ClearField("time"), "records[1].time"),
    (lambda r: setattr(r, "score", 1.5), "records[1].score"),
    (lambda r: setattr(r, "score", float("nan")), "records[1].score"),
    (lambda r: setattr(r, "threshold", -0.1), "records[1].threshold"),
    (lambda r: setattr(r, "latency_ms", -1.0), "records[1].latency_ms"),
    (
        lambda r: r.features["sector"].CopyFrom(types_pb2.FeatureValue(number=3.0)),
        "records[1].features[sector]",
    ),
    (
        lambda r: r.features["annual_revenue"].CopyFrom(types_pb2.FeatureValue(category="lots")),
        "records[1].features[annual_revenue]",
    ),
]


@pytest.mark.parametrize(("mutate", "field"), BAD_RECORDS, ids=[f for _, f in BAD_RECORDS])
def test_bad_records_are_rejected_naming_the_field_and_counted(
    mutate: Callable[[pb.PredictionRecord], None],
    field: str,
    shared: ServiceProcess,
    shared_stub: pb_grpc.MonitorServiceStub,
) -> None:
    rejected0 = _metric(shared, "finpredict_monitor_records_rejected_total{")
    ingested0 = _metric(shared, "finpredict_monitor_records_ingested_total{")
    tag = f"case{BAD_RECORDS.index((mutate, field))}-"
    _, good = _records(1, 2, tag=tag)
    resp = _ingest(shared_stub, [good[0], _bad(mutate, tag), good[1]])
    assert (resp.accepted, resp.rejected) == (2, 1)
    assert resp.first_rejection.startswith(field + ":"), resp.first_rejection
    assert _metric(shared, "finpredict_monitor_records_rejected_total{") == rejected0 + 1
    assert _metric(shared, "finpredict_monitor_records_ingested_total{") == ingested0 + 2


def test_duplicates_ignored_out_of_order_and_late_records_land_in_their_window(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    s = stub(channel_for(proc))
    stream, recs = _records(3, 20)
    hour_of = [int((t - rp.START).total_seconds() // 3600) for t in stream["time"]]
    late = [r for r, h in zip(recs, hour_of, strict=True) if h == 0][:5]
    first = [r for r, h in zip(recs, hour_of, strict=True) if not (h == 0 and r in late)]
    resp = _ingest(s, list(reversed(first)))  # out of order inside the batch
    assert (resp.accepted, resp.duplicates) == (len(first), 0)
    s.EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(rp.START + timedelta(hours=3))), timeout=10)
    # a replayed batch (duplicates, also inside one batch) and late records for hour 0
    resp = _ingest(s, first[:10] + first[:3], late)
    assert (resp.accepted, resp.duplicates, resp.rejected) == (5, 13, 0)
    assert _metric(proc, "finpredict_monitor_records_duplicate_total{") == 13
    assert _metric(proc, "finpredict_monitor_records_late_total{") == 5
    windows = s.GetDriftReport(
        pb.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=MODEL, version=1), window=pb.WINDOW_SIZE_HOURLY
        ),
        timeout=10,
    ).windows
    assert [w.count for w in windows] == [hour_of.count(h) for h in range(3)]
    assert [w.start.ToDatetime(tzinfo=rp.START.tzinfo) for w in windows] == [
        rp.START + timedelta(hours=h) for h in range(3)
    ]


def test_outcomes_match_by_request_or_entity_and_before_their_prediction(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    s = stub(channel_for(proc))
    _, recs = _records(1, 30)
    seen = dt_to_ts(rp.START + timedelta(days=2))
    early = pb.Outcome(request_id=recs[0].request_id, defaulted=True, observed_at=seen)
    assert s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=[early]), timeout=10).unmatched == 1
    _ingest(s, recs)
    by_entity = pb.Outcome(
        entity_id=recs[1].entity_id, prediction_time=recs[1].time, defaulted=False, observed_at=seen
    )
    by_id = pb.Outcome(request_id=recs[2].request_id, defaulted=False, observed_at=seen)
    unknown = pb.Outcome(request_id="never-scored", defaulted=False, observed_at=seen)
    resp = s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=[by_entity, by_id, unknown]), timeout=10)
    assert (resp.matched, resp.unmatched) == (2, 1)
    (window,) = s.GetDriftReport(
        pb.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=MODEL, version=1), window=pb.WINDOW_SIZE_DAILY
        ),
        timeout=10,
    ).windows
    assert window.labeled == 3  # the early outcome was attached when its prediction arrived
    assert window.label_delay_hours > 24


BAD_OUTCOMES = [
    (pb.Outcome(defaulted=True), "outcomes[0]: request_id or entity_id"),
    (pb.Outcome(entity_id="e", observed_at=dt_to_ts(rp.START)), "outcomes[0].prediction_time"),
    (pb.Outcome(request_id="r"), "outcomes[0].observed_at"),
]


@pytest.mark.parametrize(("outcome", "message"), BAD_OUTCOMES)
def test_bad_outcomes_are_invalid_argument(
    outcome: pb.Outcome, message: str, shared_stub: pb_grpc.MonitorServiceStub
) -> None:
    s = shared_stub
    with pytest.raises(grpc.RpcError) as err:
        s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=[outcome]), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (err.value.details() or "")


def test_report_and_evaluate_requests_are_validated(shared_stub: pb_grpc.MonitorServiceStub) -> None:
    s = shared_stub
    cases = [
        (
            lambda: s.GetDriftReport(pb.GetDriftReportRequest(window=pb.WINDOW_SIZE_DAILY), timeout=5),
            "model.name",
        ),
        (
            lambda: s.GetDriftReport(
                pb.GetDriftReportRequest(model=types_pb2.ModelRef(name=MODEL)), timeout=5
            ),
            "model.version",
        ),
        (
            lambda: s.GetDriftReport(
                pb.GetDriftReportRequest(model=types_pb2.ModelRef(name=MODEL, version=1)), timeout=5
            ),
            "window",
        ),
        (lambda: s.EvaluateRules(pb.EvaluateRulesRequest(), timeout=5), "now"),
        (lambda: s.TriggerRetraining(pb.TriggerRetrainingRequest(), timeout=5), "model"),
    ]
    for call, field in cases:
        with pytest.raises(grpc.RpcError) as err:
            call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        assert (err.value.details() or "").startswith(field), err.value.details()


def test_records_of_a_version_without_profile_are_stored_and_counted(
    shared: ServiceProcess, shared_stub: pb_grpc.MonitorServiceStub
) -> None:
    _, recs = _records(1, 5, tag="unprofiled")
    for r in recs:
        r.model.version = 2
    assert _ingest(shared_stub, recs).accepted == 5
    assert _metric(shared, "finpredict_monitor_records_unprofiled_total{") == 5
