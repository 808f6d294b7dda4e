"""Acceptance 5: ``kill -9`` during ingest loses no acknowledged record; a restart rebuilds the
windows and the request-id dedup set from the Parquet log."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import grpc
import polars as pl

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.service import dt_to_ts
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.process import ServiceProcess, wait_for

BATCH = 50


def test_kill_9_during_ingest_loses_no_acknowledged_record(
    tmp_path: Path, start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    stream = rp.generate(rp.Scenario(days=1, per_hour=400, seed=61))
    records = rp.to_records(stream, MODEL, 1)
    batches = [records[i : i + BATCH] for i in range(0, len(records), BATCH)]
    proc = start_monitor()
    s = stub(channel_for(proc))
    acked: list[int] = []  # batch indexes whose stream returned with every record accepted
    attempted: list[int] = []
    stop = threading.Event()

    def send() -> None:
        for i, batch in enumerate(batches):
            if stop.is_set():
                return
            attempted.append(i)
            try:
                resp = s.IngestPredictions(iter([pb.IngestPredictionsRequest(records=batch)]), timeout=30)
            except grpc.RpcError:
                return  # the server died under us: this batch was not acknowledged
            assert resp.accepted == len(batch)
            acked.append(i)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    wait_for(lambda: len(acked) >= len(batches) // 3, 120, "a third of the batches acknowledged")
    proc.kill()  # SIGKILL while the sender keeps streaming
    assert proc.wait(timeout=10) == -9
    stop.set()
    sender.join(timeout=60)
    assert len(acked) < len(batches), "the kill happened during ingest"

    # recount on disk, straight from the Parquet files
    stored = pl.read_parquet(
        str(tmp_path / "data" / "predictions" / "**" / "*.parquet"), hive_partitioning=False
    )
    stored_ids = set(stored["request_id"].to_list())
    acked_ids = {r.request_id for i in acked for r in batches[i]}
    assert acked_ids <= stored_ids
    assert stored["request_id"].n_unique() == stored.height, "no record twice"

    # restart on the same data: windows and the dedup set are rebuilt
    restarted = start_monitor()
    s2 = stub(channel_for(restarted))
    ref = types_pb2.ModelRef(name=MODEL, version=1)
    hourly = s2.GetDriftReport(pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_HOURLY), timeout=30)
    assert sum(w.count for w in hourly.windows) == len(stored_ids)
    # the client retries everything it attempted: what was stored counts as duplicate, the rest lands
    retry = [r for i in attempted for r in batches[i]]
    resp = s2.IngestPredictions(iter([pb.IngestPredictionsRequest(records=retry)]), timeout=60)
    assert resp.duplicates == len(stored_ids)
    assert resp.accepted == len(retry) - len(stored_ids)
    hourly = s2.GetDriftReport(pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_HOURLY), timeout=30)
    assert sum(w.count for w in hourly.windows) == len(retry)
    # and the restarted monitor evaluates on: the clock goes on from the windows on disk
    s2.EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(rp.START + timedelta(days=1))), timeout=30)
    assert restarted.health() == 1


def test_alert_state_survives_a_restart(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    """A firing alert is still firing (not re-fired, not lost) after kill -9 and restart."""
    proc = start_monitor()
    sc = rp.Scenario(days=1, per_hour=200, drift="new_segment", shift_day=0, seed=62)
    result = rp.replay(
        channel_for(proc), rp.generate(sc).filter(pl.col("time") < sc.start + timedelta(hours=2)), MODEL, 1
    )
    fired = result.firing("score_kl_1h")
    assert fired
    proc.kill()
    proc.wait(timeout=10)
    s = stub(channel_for(start_monitor()))
    listed = s.ListAlerts(pb.ListAlertsRequest(firing_only=True), timeout=10).alerts
    assert {a.id for a in listed} >= {a.id for a in fired}
    # re-evaluating the same clock does not fire them again
    again = s.EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(sc.start + timedelta(hours=2))), timeout=10)
    assert list(again.changed) == []
