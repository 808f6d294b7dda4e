"""The ingest path's speed-ups keep its answers: a request read column by column by drift_core is
the frame protobuf's record-by-record path stores (and what that reader is unsure of goes to
protobuf); validation column by column refuses the same records with the same messages; a group
commit deduplicates across its batches and writes one file per partition; concurrent streams on
the real monitor store each record once."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from google.protobuf.message import DecodeError
from polars.testing import assert_frame_equal

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.monitor.engine import Engine
from finpredict.monitor.ingest import decode_request
from finpredict.monitor.profiles import ProfileCache
from finpredict.monitor.records import IngestBatch, OutcomeIn, predictions_frame
from finpredict.monitor.rules import load_rules
from finpredict.monitor.service import record_from_proto
from finpredict.testkit.monitor import MODEL, StartMonitor, stub

NOW = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)


def _records(n: int, tag: str, start: datetime = NOW) -> list[pb.PredictionRecord]:
    frame = rp.generate(rp.Scenario(days=1, per_hour=n // 24 + 1, seed=11)).head(n)
    records = rp.to_records(frame, MODEL, 1)
    for i, r in enumerate(records):
        r.request_id, r.entity_id = f"{tag}-{i}", f"ent-{tag}-{i}"
        r.time.FromDatetime(start + timedelta(seconds=7.654321 * i))
    return records


def _encode(records: list[pb.PredictionRecord]) -> bytes:
    return pb.IngestPredictionsRequest(records=records).SerializeToString()


def _by_protobuf(data: bytes) -> pl.DataFrame:
    return predictions_frame(
        [record_from_proto(r) for r in pb.IngestPredictionsRequest.FromString(data).records]
    )


def test_a_request_decodes_column_by_column_as_protobuf_does() -> None:
    edge = [
        pb.PredictionRecord(),  # nothing set
        pb.PredictionRecord(request_id="a", features={"x": types_pb2.FeatureValue()}),
        pb.PredictionRecord(request_id="b", features={"x": types_pb2.FeatureValue(number=math.nan)}),
        pb.PredictionRecord(request_id="c", features={"y": types_pb2.FeatureValue(category="")}),
        pb.PredictionRecord(
            request_id="dé😀",
            model=types_pb2.ModelRef(name="m", version=-3),
            score=math.inf,
            reason_codes=[types_pb2.ReasonCode(code="R1", feature="f", contribution=1e-5, description="é")],
        ),
        pb.PredictionRecord(request_id="e", variant="canary", rollout_id="r0ll0ut"),
        pb.PredictionRecord(request_id="f", variant="treatment", experiment_id="exp€r"),
    ]
    edge[2].time.seconds, edge[2].time.nanos = 1_700_000_000, 999_999_600  # rounds up a second
    edge[3].time.seconds = 300_000_000_000  # past the year 9000: the epoch, refused by validation
    edge[4].time.seconds = -5
    for data in (_encode(_records(300, "r")), _encode(edge), _encode([])):
        decoded = decode_request(data)
        assert isinstance(decoded, pl.DataFrame)
        assert_frame_equal(decoded, _by_protobuf(data))
    # a record sent in two pieces merges as protobuf merges it
    one = pb.PredictionRecord(request_id="z", features={"x": types_pb2.FeatureValue(number=1)})
    two = pb.PredictionRecord(
        model=types_pb2.ModelRef(version=4), features={"x": types_pb2.FeatureValue(number=2)}
    )
    piece = one.SerializeToString() + two.SerializeToString()
    data = b"\x0a" + bytes([len(piece)]) + piece
    decoded = decode_request(data)
    assert isinstance(decoded, pl.DataFrame)
    assert_frame_equal(decoded, _by_protobuf(data))
    # left to protobuf: a feature with both kinds, an edge case for the review queue, garbage
    mixed = [
        pb.PredictionRecord(request_id="a", features={"x": types_pb2.FeatureValue(number=1)}),
        pb.PredictionRecord(request_id="b", features={"x": types_pb2.FeatureValue(category="q")}),
    ]
    refused = [pb.PredictionRecord(request_id="r", review=pb.REVIEW_KIND_REFUSED)]
    for records in (mixed, refused):
        assert isinstance(decode_request(_encode(records)), pb.IngestPredictionsRequest)
    # a field number the reader does not know (a field added to the contract later), in the record
    # or in a message inside it, is never skipped: protobuf's path decides what to keep of it
    record = _records(1, "u")[0].SerializeToString()
    model = types_pb2.ModelRef(name=MODEL, version=1).SerializeToString() + b"\xa0\x06\x01"  # field 100
    for piece in (record + b"\xa0\x06\x01", record + b"\x1a" + bytes([len(model)]) + model):
        data = _encode([pb.PredictionRecord.FromString(piece)])  # protobuf keeps unknown fields
        assert isinstance(decode_request(data), pb.IngestPredictionsRequest)
        assert pb.IngestPredictionsRequest.FromString(data).records[0].request_id == "u-0"
    with pytest.raises(DecodeError):
        decode_request(b"\xff\xff\xff\xff garbage")


@pytest.fixture
def engines(tmp_path: Path, profile_bytes: bytes) -> tuple[Engine, Engine]:
    (tmp_path / "profiles" / MODEL).mkdir(parents=True)
    (tmp_path / "profiles" / MODEL / "1.bin").write_bytes(profile_bytes)
    cache = ProfileCache(tmp_path / "profiles")
    rules = load_rules(DEFAULT_RULES_FILE)
    return Engine(tmp_path / "a", cache, rules), Engine(tmp_path / "b", cache, rules)


def test_validation_column_by_column_refuses_what_record_by_record_does(
    engines: tuple[Engine, Engine],
) -> None:
    records = _records(40, "v")
    records[3].score = 1.5
    records[5].model.name = "Bad Name"
    records[9].time.FromDatetime(datetime.now(UTC) + timedelta(days=1))  # the future
    records[11].request_id = ""
    records[13].request_id = records[12].request_id  # a duplicate within the batch
    wrong_kind = _records(5, "k")
    for r in wrong_kind:  # a category feature sent as numbers
        r.features["sector"].CopyFrom(types_pb2.FeatureValue(number=3.0))
    by_columns, by_records = engines
    for batch, expected in ((records, (35, 1, 4)), (wrong_kind, (0, 0, 5))):
        frame = decode_request(_encode(batch))
        assert isinstance(frame, pl.DataFrame)
        fast = by_columns.ingest_batches([IngestBatch(frame=frame, offset=10)])
        slow = by_records.ingest([record_from_proto(r) for r in batch], offset=10)
        assert fast == [slow]
        assert slow[:3] == expected
    assert "records[13].score" in by_records.ingest([record_from_proto(r) for r in records], 10)[3]
    stored = [e.store.read_predictions().sort("request_id") for e in engines]
    assert_frame_equal(stored[0], stored[1])


def test_an_outcome_names_the_arm_that_served_its_prediction_after_restarts_and_on_older_data(
    engines: tuple[Engine, Engine], tmp_path: Path
) -> None:
    """The arm a prediction was logged with (variant, rollout id, experiment id), read column by
    column, comes back with its outcome: live, after a restart from the logs and from a snapshot.
    Logs and snapshots written before the ids existed still load (no rollout, no experiment)."""
    engine = engines[0]
    old, new = _records(2, "old"), _records(3, "new")
    new[0].variant, new[0].rollout_id = "canary", "rollout-1"
    new[1].variant, new[1].experiment_id = "treatment", "exp-1"
    new[2].variant, new[2].rollout_id = "stable", "rollout-2"
    for batch in (old, new):
        frame = decode_request(_encode(batch))
        assert isinstance(frame, pl.DataFrame)
        assert engine.ingest_batches([IngestBatch(frame=frame)])[0][0] == len(batch)
    for f in (engine.data_dir / "predictions").rglob("*.parquet"):  # the old batch as stored before
        stored = pl.read_parquet(f)
        if stored["request_id"].str.starts_with("old").all():
            stored.drop("rollout_id", "experiment_id").write_parquet(f)

    def arm(e: Engine, request_id: str) -> tuple[str, str, str]:
        counts, _ = e.record_outcomes([OutcomeIn(request_id, "", True, datetime.now(UTC), None)])
        (x,) = counts.labelled
        return x.variant, x.rollout_id, x.experiment_id

    def restarted() -> Engine:
        return Engine(engine.data_dir, ProfileCache(tmp_path / "profiles"), load_rules(DEFAULT_RULES_FILE))

    assert arm(engine, "new-0") == ("canary", "rollout-1", "")
    from_logs = restarted()
    assert arm(from_logs, "new-1") == ("treatment", "", "exp-1")
    assert arm(from_logs, "old-0") == (old[0].variant, "", "")
    from_logs.snapshot()
    assert arm(restarted(), "new-2") == ("stable", "rollout-2", "")
    snapshot = engine.data_dir / "snapshot"
    index = snapshot / (snapshot / "CURRENT").read_text().strip() / "index.parquet"
    pl.read_parquet(index).drop("variant", "rollout_id", "experiment_id").write_parquet(index)
    assert arm(restarted(), "old-1") == ("", "", "")  # a snapshot of an earlier release: none known


def test_a_group_commit_deduplicates_across_batches_and_writes_one_file_per_partition(
    engines: tuple[Engine, Engine],
) -> None:
    engine = engines[0]
    first, second = _records(30, "g"), _records(30, "g")[20:] + _records(10, "h")
    batches = [IngestBatch(frame=decode_request(_encode(b))) for b in (first, second)]  # type: ignore[arg-type]
    assert engine.ingest_batches(batches) == [(30, 0, 0, ""), (10, 10, 0, "")]
    hours = {r.time.ToDatetime(UTC).replace(minute=0, second=0, microsecond=0) for r in first + second}
    files = list((engine.data_dir / "predictions").rglob("*.parquet"))
    assert len(files) == len(hours), "one file per partition for the whole group"
    assert len(engine.labels) == 40
    # the next group finds them all as duplicates
    assert engine.ingest_batches(batches[1:]) == [(0, 20, 0, "")]


def test_concurrent_streams_store_each_record_once(start_monitor: StartMonitor, channel_for: object) -> None:
    proc = start_monitor()
    s = stub(channel_for(proc))  # type: ignore[operator]
    streams = [[_records(200, f"s{k}")[i : i + 50] for i in range(0, 200, 50)] for k in range(3)]
    streams.append(streams[0])  # a fourth stream repeats the first one's records

    def send(batches: list[list[pb.PredictionRecord]]) -> tuple[int, int]:
        total = (0, 0)
        for b in batches:
            resp = s.IngestPredictions(iter([pb.IngestPredictionsRequest(records=b)]), timeout=30)
            total = (total[0] + resp.accepted, total[1] + resp.duplicates)
        return total

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(send, streams))
    assert sum(a for a, _ in results) == 600
    assert sum(d for _, d in results) == 200
    report = s.GetDriftReport(
        pb.GetDriftReportRequest(
            model=types_pb2.ModelRef(name=MODEL, version=1), window=pb.WINDOW_SIZE_HOURLY
        ),
        timeout=30,
    )
    assert sum(w.count for w in report.windows) == 600


def test_the_columnar_reader_knows_every_field_of_the_contract() -> None:
    """drift_core's record reader (records.rs) reads these field numbers and sends any other to the
    protobuf path: a field added to the contract fails here until the reader is taught it, instead of
    turning every batch of a newer gateway into the slow path at run time."""
    from google.protobuf import timestamp_pb2

    read_by_records_rs = {
        pb.IngestPredictionsRequest: {1},
        pb.PredictionRecord: set(range(1, 16)),
        types_pb2.ModelRef: {1, 2},
        types_pb2.FeatureValue: {1, 2},
        types_pb2.ReasonCode: {1, 2, 3, 4},
        timestamp_pb2.Timestamp: {1, 2},
    }
    for message, numbers in read_by_records_rs.items():
        assert {f.number for f in message.DESCRIPTOR.fields} == numbers, message.DESCRIPTOR.full_name
