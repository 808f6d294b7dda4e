"""Analyst feedback at the monitor: stored durably and idempotently (across a restart), refused
naming the field, and an override's corrected label is the production snapshot's label (flagged)
and the training label of the pipeline's ``production`` source; a refused request sent down the
prediction log goes to the review queue, never to the predictions."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest
from typer.testing import CliRunner

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.cli import app
from finpredict.monitor.service import dt_to_ts
from finpredict.pipelines import production
from finpredict.pipelines.common import default_dataset_schema
from finpredict.testkit.monitor import MODEL, StartMonitor, labelled_stream, stub
from finpredict.testkit.process import ServiceProcess, wait_for

T0 = datetime(2025, 3, 1, tzinfo=UTC)
H = timedelta(hours=1)


def _feedback(
    rid: str,
    verdict: types_pb2.FeedbackVerdict.ValueType,
    label: bool | None = None,
    at: datetime = T0 + 30 * H,
) -> types_pb2.Feedback:
    fb = types_pb2.Feedback(request_id=rid, verdict=verdict, reason="checked", recorded_at=dt_to_ts(at))
    if label is not None:
        fb.corrected_label = label
    return fb


def test_an_override_labels_the_snapshot_and_the_training_data(
    tmp_path: Path,
    start_monitor: StartMonitor,
    channel_for: Callable[[ServiceProcess], grpc.Channel],
) -> None:
    stream = labelled_stream(6, seed=11, start=T0, spacing=H)
    rids, labels = list(stream["request_id"]), list(stream["defaulted"])
    proc = start_monitor()
    s = stub(channel_for(proc))
    records = list(rp.to_records(stream, MODEL, 1))
    refused = pb.PredictionRecord()
    refused.CopyFrom(records[0])
    refused.request_id, refused.review = "refused-1", pb.REVIEW_KIND_REFUSED
    refused.review_detail = 'application.features["debt"]: expected a number'
    got = s.IngestPredictions(iter([pb.IngestPredictionsRequest(records=[*records, refused])]), timeout=30)
    assert (got.accepted, got.rejected) == (6, 0)  # the refused request is no prediction
    seen = dt_to_ts(T0 + 24 * H)
    outcomes = [pb.Outcome(request_id=rids[i], defaulted=labels[i], observed_at=seen) for i in range(4)]
    assert s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=outcomes), timeout=30).matched == 4

    o = types_pb2
    feedback = [
        _feedback(rids[0], o.FEEDBACK_VERDICT_OVERRIDDEN, not labels[0]),  # flips an outcome
        _feedback(rids[1], o.FEEDBACK_VERDICT_CONFIRMED),
        _feedback(rids[2], o.FEEDBACK_VERDICT_DISPUTED),
        _feedback(rids[3], o.FEEDBACK_VERDICT_OVERRIDDEN),  # overridden, no label known: the outcome stays
        _feedback(rids[4], o.FEEDBACK_VERDICT_OVERRIDDEN, True),  # labels a prediction without an outcome
        _feedback("never-logged", o.FEEDBACK_VERDICT_CONFIRMED),
        # a later change of mind about rids[1], recorded after the export's as_of: not counted there
        _feedback(rids[1], o.FEEDBACK_VERDICT_OVERRIDDEN, not labels[1], at=T0 + 60 * H),
    ]
    got_fb = s.RecordFeedback(pb.RecordFeedbackRequest(feedback=feedback), timeout=30)
    assert (got_fb.recorded, got_fb.duplicates, got_fb.unknown) == (7, 0, 1)

    # refused naming the field, nothing of the batch kept
    bad = [_feedback(rids[5], o.FEEDBACK_VERDICT_CONFIRMED, True)]
    with pytest.raises(grpc.RpcError) as refusal:
        s.RecordFeedback(pb.RecordFeedbackRequest(feedback=bad), timeout=30)
    assert refusal.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert (refusal.value.details() or "").startswith(
        "feedback[0].corrected_label: only with the verdict overridden"
    )

    # durable and idempotent across a restart: a retried call is all duplicates
    proc.stop()
    s = stub(channel_for(start_monitor({"FINPREDICT_MONITOR_OUTCOME_WAIT_S": "0.4"})))  # upkeep: 0.1 s
    again = s.RecordFeedback(pb.RecordFeedbackRequest(feedback=feedback[-1:]), timeout=30)
    assert (again.recorded, again.duplicates) == (0, 1)

    snapshot = tmp_path / "snapshot.parquet"
    args = ["export", "--from", "2025-03-01", "--to", "2025-03-02", "--as-of", "2025-03-03"]
    args += ["--maturity-days", "0", "--data-dir", str(tmp_path / "data"), "--out", str(snapshot)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    stats = json.loads(result.output)
    assert (stats["rows"], stats["excluded_unlabelled"], stats["feedback_labels"]) == (5, 1, 2)
    rows = {r["request_id"]: r for r in pl.read_parquet(snapshot).iter_rows(named=True)}
    assert set(rows) == set(rids[:5])
    assert {rid for rid, r in rows.items() if r["label_overridden"]} == {rids[0], rids[4]}
    assert (rows[rids[0]]["feedback_label"], rows[rids[0]]["defaulted"]) == (not labels[0], labels[0])
    assert (rows[rids[4]]["feedback_label"], rows[rids[4]]["defaulted"]) == (True, None)
    assert rows[rids[1]]["feedback_label"] is None

    # the pipeline's production source trains on the corrected labels
    schema = default_dataset_schema()
    dataset, source = production.ingest(snapshot, schema, "", "")
    trained = dict(zip(dataset[schema.id_column or "request_id"], dataset[schema.label], strict=True))
    assert trained == {
        rids[0]: int(not labels[0]),
        rids[1]: int(labels[1]),
        rids[2]: int(labels[2]),
        rids[3]: int(labels[3]),
        rids[4]: 1,
    }
    assert source["feedback_labels"] == 2

    # the refused request is in the review queue
    queue = s.ListReviewCases(
        pb.ListReviewCasesRequest(start=dt_to_ts(T0), end=dt_to_ts(T0 + 24 * H)), timeout=30
    )
    refused_cases = [c for c in queue.cases if c.kind == pb.REVIEW_KIND_REFUSED]
    assert [(c.request_id, c.detail) for c in refused_cases] == [("refused-1", refused.review_detail)]

    # both are kept for the retention period only (30 days back from the monitor's clock)
    s.EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(T0 + timedelta(days=40))), timeout=30)
    wait_for(
        lambda: not [*(tmp_path / "data").glob("feedback/day=*"), *(tmp_path / "data").glob("review/day=*")],
        30,
        "feedback and review cases older than the retention to go",
    )
    after = s.RecordFeedback(pb.RecordFeedbackRequest(feedback=feedback[-1:]), timeout=30)
    assert after.recorded == 1  # forgotten: recorded afresh
