"""LookupPredictions on the real monitor: a request by id, an entity's requests in a range, the
reason codes as the client received them, validation naming the field."""

from __future__ import annotations

import math
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import polars as pl
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.demo import replay as rp
from finpredict.monitor.service import dt_to_ts
from finpredict.testkit.monitor import MODEL, StartMonitor

# The gateway's token (writer: it logs predictions) and a reader's (the console: it looks them up).
WRITER = "lookup-writer-0123456789"
READER = "lookup-reader-0123456789"


@pytest.fixture
def monitor(start_monitor: StartMonitor) -> Iterator[pb_grpc.MonitorServiceStub]:
    proc = start_monitor({"FINPREDICT_MONITOR_TOKENS": f"{WRITER}=gateway:writer,{READER}=console:reader"})
    with grpc.insecure_channel(proc.target) as ch:
        yield pb_grpc.MonitorServiceStub(ch)


def _ingest(monitor: pb_grpc.MonitorServiceStub, records: list[pb.PredictionRecord]) -> int:
    resp = monitor.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=records)]), metadata=bearer_metadata(WRITER), timeout=30
    )
    return int(resp.accepted)


def _lookup(monitor: pb_grpc.MonitorServiceStub, **fields: Any) -> pb.LookupPredictionsResponse:
    resp: pb.LookupPredictionsResponse = monitor.LookupPredictions(
        pb.LookupPredictionsRequest(**fields), metadata=bearer_metadata(READER), timeout=30
    )
    return resp


def _stream() -> tuple[pl.DataFrame, list[pb.PredictionRecord]]:
    stream = rp.generate(rp.Scenario(days=1, per_hour=6, seed=3)).filter(
        pl.col("time") < rp.START + timedelta(hours=4)
    )
    records = rp.to_records(stream, MODEL, 1)
    for i, r in enumerate(records):
        r.variant = "canary" if i % 2 else "stable"
        if i % 3 == 0:  # the client asked for reasons
            r.reason_codes.extend(
                [
                    types_pb2.ReasonCode(
                        code="R07", feature="utilisation", contribution=0.4, description="u"
                    ),
                    types_pb2.ReasonCode(code="R02", feature="debt", contribution=0.1, description="d"),
                ]
            )
    return stream, records


def test_a_request_is_found_by_id_with_its_reason_codes(monitor: pb_grpc.MonitorServiceStub) -> None:
    _, records = _stream()
    assert _ingest(monitor, records) == len(records)
    for wanted in (records[0], records[1]):  # with and without reason codes
        found = _lookup(monitor, request_id=wanted.request_id)
        assert len(found.records) == 1
        assert not found.truncated
        got = found.records[0]
        assert (got.request_id, got.entity_id, got.variant) == (
            wanted.request_id,
            wanted.entity_id,
            wanted.variant,
        )
        assert (got.model.name, got.model.version) == (MODEL, 1)
        assert (got.score, got.threshold, got.time) == (wanted.score, wanted.threshold, wanted.time)
        assert list(got.reason_codes) == list(wanted.reason_codes)
        numeric = {k for k, v in wanted.features.items() if v.HasField("number") and not math.isnan(v.number)}
        assert {k: v.number for k, v in got.features.items() if k in numeric} == {
            k: wanted.features[k].number for k in numeric
        }
    missing = _lookup(monitor, request_id="no-such-request")
    assert list(missing.records) == []


def test_an_entity_is_found_in_its_range_newest_first(monitor: pb_grpc.MonitorServiceStub) -> None:
    _, records = _stream()
    entity = records[5].entity_id
    # the same customer scored three more times, an hour apart
    extra = []
    for k in range(1, 4):
        r = pb.PredictionRecord()
        r.CopyFrom(records[5])
        r.request_id = f"{records[5].request_id}-again-{k}"
        r.time.FromDatetime(rp.START + timedelta(hours=k, minutes=30))
        extra.append(r)
    assert _ingest(monitor, records + extra) == len(records) + len(extra)
    ours = [r for r in records + extra if r.entity_id == entity]

    def look(start_h: float, end_h: float, limit: int = 0) -> pb.LookupPredictionsResponse:
        return _lookup(
            monitor,
            entity_id=entity,
            start=dt_to_ts(rp.START + timedelta(hours=start_h)),
            end=dt_to_ts(rp.START + timedelta(hours=end_h)),
            limit=limit,
        )

    everything = look(0, 24)
    expected = sorted(ours, key=lambda r: r.time.ToDatetime(), reverse=True)
    assert [r.request_id for r in everything.records] == [r.request_id for r in expected]
    assert {r.entity_id for r in everything.records} == {entity}
    window = look(1, 2)
    assert [r.request_id for r in window.records] == [
        r.request_id
        for r in expected
        if timedelta(hours=1) <= r.time.ToDatetime(rp.START.tzinfo) - rp.START < timedelta(hours=2)
    ]
    first = look(0, 24, limit=1)
    assert [r.request_id for r in first.records] == [expected[0].request_id]
    assert first.truncated


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (pb.LookupPredictionsRequest(), "request_id or entity_id"),
        (pb.LookupPredictionsRequest(entity_id="e1"), "start and end"),
        (pb.LookupPredictionsRequest(request_id="r", limit=5000), "limit"),
        (pb.LookupPredictionsRequest(request_id="r", model="Bad Name"), "model"),
        (
            pb.LookupPredictionsRequest(
                entity_id="e1", start=dt_to_ts(rp.START), end=dt_to_ts(rp.START + timedelta(days=40))
            ),
            "end",
        ),
    ],
)
def test_a_bad_lookup_names_the_field(
    monitor: pb_grpc.MonitorServiceStub, query: pb.LookupPredictionsRequest, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        monitor.LookupPredictions(query, metadata=bearer_metadata(READER), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (err.value.details() or "")
