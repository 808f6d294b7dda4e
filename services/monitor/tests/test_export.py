"""Production data as a training source: ``finpredict drift export`` takes the matured, labelled
predictions of a window from a running monitor's logs (the rest left out and counted), and the
pipeline's ``production`` source ingests that snapshot with the export's counts and the
snapshot's md5 as the lineage's training data."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest
import yaml
from typer.testing import CliRunner

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.cli import app
from finpredict.monitor.service import dt_to_ts
from finpredict.pipelines import register
from finpredict.pipelines.common import run_stage
from finpredict.testkit.monitor import MODEL, StartMonitor, labelled_stream, stub
from finpredict.testkit.paths import REPO_ROOT
from finpredict.testkit.process import ServiceProcess

T0 = datetime(2025, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)
# index ranges of the stream and their times (hours after T0); window [T0, T0+48h), as of T0+72h,
# maturity 1.5 days: a prediction up to T0+36h is matured
LABELLED = range(0, 10)  # matured, outcome by request id
NO_OUTCOME = range(10, 14)  # matured, no outcome
LATE = range(14, 17)  # matured, outcome observed after as_of
BY_ENTITY = range(17, 19)  # matured, outcome by entity id and prediction time
YOUNG = range(19, 24)  # not matured (two with an outcome already)
AFTER = range(24, 27)  # after the window
BEFORE = range(27, 29)  # before the window
HOURS = [1 + i for i in range(10)] + [
    12,
    13,
    14,
    15,
    20,
    21,
    22,
    30,
    31,
    40,
    41,
    42,
    43,
    44,
    50,
    51,
    52,
    -3,
    -2,
]


def _send(ch: grpc.Channel, stream: pl.DataFrame) -> dict[str, bool]:
    """Sends the stream and its outcomes; returns the label each exported request must carry."""
    s = stub(ch)
    resp = s.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=rp.to_records(stream, MODEL, 1))]), timeout=30
    )
    assert resp.accepted == stream.height
    rids, ents, times = stream["request_id"], stream["entity_id"], stream["time"]
    labels = stream["defaulted"]
    seen = dt_to_ts(T0 + 48 * H)
    outcomes = [pb.Outcome(request_id=rids[i], defaulted=labels[i], observed_at=seen) for i in LABELLED]
    outcomes += [
        pb.Outcome(
            entity_id=ents[i], prediction_time=dt_to_ts(times[i]), defaulted=labels[i], observed_at=seen
        )
        for i in BY_ENTITY
    ]
    outcomes += [pb.Outcome(request_id=rids[i], defaulted=labels[i], observed_at=seen) for i in (19, 20)]
    outcomes += [
        pb.Outcome(request_id=rids[i], defaulted=labels[i], observed_at=seen) for i in (*AFTER, *BEFORE)
    ]
    late = dt_to_ts(T0 + 96 * H)
    outcomes += [pb.Outcome(request_id=rids[i], defaulted=labels[i], observed_at=late) for i in LATE]
    # a second outcome of a request that has one: the first one wins
    outcomes.append(pb.Outcome(request_id=rids[0], defaulted=not labels[0], observed_at=seen))
    resp_o = s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
    assert resp_o.matched == len(outcomes) - 1
    return {rids[i]: labels[i] for i in (*LABELLED, *BY_ENTITY)}


def _ingest(
    work: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> tuple[int, str]:
    from finpredict.pipelines import ingest

    monkeypatch.chdir(work)
    code = 0
    try:
        run_stage("ingest", lambda: ingest.main([]))
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


def test_export_takes_matured_labelled_records_and_ingest_records_its_counts(
    tmp_path: Path,
    start_monitor: StartMonitor,
    channel_for: Callable[[ServiceProcess], grpc.Channel],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = labelled_stream(len(HOURS), seed=5, start=T0, spacing=H)
    stream = stream.with_columns(
        pl.Series("time", [T0 + h * H for h in HOURS], dtype=pl.Datetime("us", "UTC"))
    )
    proc = start_monitor()
    expected = _send(channel_for(proc), stream)

    snapshot = tmp_path / "pipeline" / "data" / "production" / "snapshot.parquet"
    args = ["export", "--from", "2025-03-01", "--to", "2025-03-03T00:00:00", "--as-of", "2025-03-04"]
    args += ["--maturity-days", "1.5", "--data-dir", str(tmp_path / "data"), "--out", str(snapshot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["rows"], stats["excluded_unmatured"], stats["excluded_unlabelled"]) == (12, 5, 7)
    assert stats["label_coverage"] == pytest.approx(12 / 19, abs=1e-6)
    assert (stats["window_start"], stats["window_end"]) == (T0.isoformat(), (T0 + 48 * H).isoformat())

    rows = pl.read_parquet(snapshot)
    assert dict(zip(rows["request_id"], rows["defaulted"], strict=True)) == expected
    assert rows["feedback_label"].null_count() == rows.height  # no analyst feedback recorded here
    assert {"score", "version", "variant", "f.protected_group", "f.annual_revenue"} <= set(rows.columns)

    # the pipeline's production source: a snapshot of another window is refused ...
    work = snapshot.parents[2]
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"]["source"] = "production"
    params["data"]["production"]["window_end"] = "2025-03-04T00:00:00+00:00"
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = _ingest(work, monkeypatch, capsys)
    assert code == 2
    assert "data.production.window_end is 2025-03-04T00:00:00+00:00: export that window again" in err

    # ... the one of the window is ingested, its counts and md5 recorded for the lineage
    params["data"]["production"].update(window_start="2025-03-01", window_end="2025-03-03T00:00:00Z")
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    code, err = _ingest(work, monkeypatch, capsys)
    assert code == 0, err
    dataset = pl.read_parquet(work / "data/raw/loans.parquet")
    assert dict(zip(dataset["application_id"], dataset["default"], strict=True)) == {
        k: int(v) for k, v in expected.items()
    }
    lineage = register.training_data(work / "data/raw/source.json")
    assert lineage.source == "production"
    assert (lineage.rows, lineage.excluded_unmatured, lineage.excluded_unlabelled) == (12, 5, 7)
    assert lineage.label_coverage == pytest.approx(stats["label_coverage"])
    assert lineage.window_start.ToDatetime(UTC) == T0
    assert lineage.window_end.ToDatetime(UTC) == T0 + 48 * H
    assert lineage.snapshot_md5 == hashlib.md5(snapshot.read_bytes()).hexdigest()
    assert lineage.snapshot_path == "data/production/snapshot.parquet"
