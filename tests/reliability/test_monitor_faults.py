"""Monitor faults: ``kill -9`` under IngestPredictions load, and a full disk under its log store.

Kill: two clients stream prediction batches as fast as they can; the monitor is killed with
SIGKILL mid-load and restarted on the same data dir. Every record of every acknowledged stream
is there: re-sending them all gets them counted as duplicates (the dedup index is rebuilt from
the Parquet log), the drift windows count each stored record exactly once, and the log holds no
record twice.

Disk full: the monitor's file size limit (RLIMIT_FSIZE, set on the running process) drops below
the size of a batch's Parquet file, as a full disk would. The batch is refused with
RESOURCE_EXHAUSTED naming the cause, ``finpredict_monitor_store_write_failures_total{reason="full"}``
counts it, nothing partial is left, what was acknowledged before is intact, and once space is
back the retried batch goes through with no restart.
"""

from __future__ import annotations

import itertools
import os
import random
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import polars as pl
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.testkit.monitor import authed, monitor_env
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.scrape import metric_value

MODEL = "credit-default"
T0 = 1_740_787_200  # 2025-03-01T00:00:00Z
_ids = itertools.count()


def _env(tmp: Path) -> dict[str, str]:
    return monitor_env(tmp, FINPREDICT_MONITOR_SHUTDOWN_GRACE_S="2")


def _records(n: int, prefix: str, features: int = 4) -> list[pb.PredictionRecord]:
    out = []
    for _ in range(n):
        i = next(_ids)
        r = pb.PredictionRecord(
            request_id=f"{prefix}-{i}",
            entity_id=f"e{i}",
            model=types_pb2.ModelRef(name=MODEL, version=1),
            variant="stable",
            score=random.random(),
            threshold=0.5,
            latency_ms=3.0,
            features={f"x{j}": types_pb2.FeatureValue(number=random.random()) for j in range(features)},
        )
        r.time.FromSeconds(T0 + i % (6 * 3600))  # six hours of event time
        out.append(r)
    return out


def _ingest(
    stub: monitor_pb2_grpc.MonitorServiceStub, batches: list[list[pb.PredictionRecord]], timeout: float = 30
) -> pb.IngestPredictionsResponse:
    return stub.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=b) for b in batches]), timeout=timeout
    )


def _stored(data_dir: Path) -> pl.DataFrame:
    files = sorted((data_dir / "predictions").rglob("*.parquet"))
    return pl.concat([pl.read_parquet(f, columns=["request_id"]) for f in files]) if files else pl.DataFrame()


def _counted(stub: monitor_pb2_grpc.MonitorServiceStub) -> int:
    request = pb.GetDriftReportRequest(
        model=types_pb2.ModelRef(name=MODEL, version=1), window=pb.WINDOW_SIZE_HOURLY
    )
    return sum(w.count for w in stub.GetDriftReport(request, timeout=30).windows)


def _client(target: str, acked: list[str], errors: list[grpc.StatusCode], lock: threading.Lock) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(authed(channel))
        while True:
            batches = [_records(40, f"t{threading.get_ident()}") for _ in range(3)]
            try:
                resp = _ingest(stub, batches)
            except grpc.RpcError as exc:
                with lock:
                    errors.append(exc.code())  # type: ignore[attr-defined]
                return
            assert resp.accepted == 120, resp
            with lock:
                acked.extend(r.request_id for b in batches for r in b)


def test_kill_9_under_ingest_load_loses_no_acknowledged_record(tmp_path: Path) -> None:
    env = _env(tmp_path)
    proc = start_service("monitor", tmp_path / "run1", env=env)
    acked: list[str] = []
    errors: list[grpc.StatusCode] = []
    lock = threading.Lock()
    try:
        clients = [
            threading.Thread(target=_client, args=(proc.target, acked, errors, lock)) for _ in range(2)
        ]
        for c in clients:
            c.start()
        wait_for(lambda: len(acked) >= 1200, 90, "1200 acknowledged records")
        counted = metric_value(proc, "finpredict_monitor_records_ingested_total")
        proc.kill()
        proc.wait(timeout=10)
        for c in clients:
            c.join(timeout=60)
    finally:
        proc.kill()
    assert errors, "the clients were still writing when the monitor died"
    assert set(errors) == {grpc.StatusCode.UNAVAILABLE}, errors
    assert counted >= 1200
    on_disk = _stored(tmp_path / "data")
    assert on_disk.height == on_disk["request_id"].n_unique(), "a record was stored twice"
    assert set(acked) <= set(on_disk["request_id"].to_list()), "an acknowledged record is not on disk"

    restarted = start_service("monitor", tmp_path / "run2", env=env)
    try:
        with grpc.insecure_channel(restarted.target) as channel:
            stub = monitor_pb2_grpc.MonitorServiceStub(authed(channel))
            assert _counted(stub) == on_disk.height  # each stored record in its window, once
            resent = [
                pb.PredictionRecord(
                    request_id=rid, model=types_pb2.ModelRef(name=MODEL, version=1), score=0.5, threshold=0.5
                )
                for rid in acked
            ]
            for r in resent:
                r.time.FromSeconds(T0)
            resp = _ingest(stub, [resent[i : i + 500] for i in range(0, len(resent), 500)])
            assert (resp.accepted, resp.duplicates) == (0, len(acked)), resp
            assert metric_value(restarted, "finpredict_monitor_records_duplicate_total") == len(acked)
            assert _ingest(stub, [_records(10, "after")]).accepted == 10  # and it goes on
    finally:
        assert restarted.stop(timeout=20) == 0, restarted.logs()[-4000:]


@pytest.fixture
def monitor(tmp_path: Path) -> Iterator[ServiceProcess]:
    proc = start_service("monitor", tmp_path / "run", env=_env(tmp_path))
    try:
        yield proc
    finally:
        if proc.proc.poll() is None:  # give the process its full limit back before stopping it
            resource.prlimit(
                proc.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
            )
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def test_full_disk_refuses_clearly_counts_and_recovers(monitor: ServiceProcess, tmp_path: Path) -> None:
    data = tmp_path / "data"
    with grpc.insecure_channel(monitor.target) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(authed(channel))
        before = _records(50, "before")
        assert _ingest(stub, [before]).accepted == 50
        # "the disk fills up": no file of the monitor may grow past this (its log has room left)
        limit = max(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file()) + 64 * 1024
        _soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.prlimit(monitor.proc.pid, resource.RLIMIT_FSIZE, (limit, hard))
        big = _records(3000, "big", features=30)  # about 1 MB of Parquet: past the limit
        with pytest.raises(grpc.RpcError) as exc:
            _ingest(stub, [big])
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert "full" in exc.value.details()  # type: ignore[attr-defined]
        assert metric_value(monitor, "finpredict_monitor_store_write_failures_total", reason="full") == 1
        assert not list(data.rglob("*.tmp")), "a partial file was left behind"
        assert _stored(data).height == 50  # the acknowledged batch is intact
        assert _counted(stub) == 50
        # outcomes go through the same store
        outcomes = [pb.Outcome(request_id=os.urandom(16).hex(), defaulted=True) for _ in range(8000)]
        for o in outcomes:
            o.observed_at.FromSeconds(T0 + 7 * 3600)
        with pytest.raises(grpc.RpcError) as exc:
            stub.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED  # type: ignore[attr-defined]
        assert metric_value(monitor, "finpredict_monitor_store_write_failures_total", reason="full") == 2
        assert "log store is full" in monitor.logs()
        # space is back: the same retry goes through, no restart, nothing counted twice
        resource.prlimit(monitor.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, hard))
        resp = _ingest(stub, [big])
        assert (resp.accepted, resp.duplicates) == (3000, 0), resp
        assert _counted(stub) == 3050
        stored = _stored(data)
        assert stored.height == stored["request_id"].n_unique() == 3050
