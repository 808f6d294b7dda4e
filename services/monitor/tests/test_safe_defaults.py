"""Safe defaults on the real monitor: calls without a token are refused (and every call when no
tokens are configured); a record from the year 2100 is refused and later records are still
evaluated; two concurrent triggers for one model start one job; outcomes for requests not seen
wait, then are orphaned and counted, and a replayed outcome is never counted twice; a WatchAlerts
subscriber that falls behind is dropped with RESOURCE_EXHAUSTED and counted."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import polars as pl
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor import metrics as m
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.evaluation import AlertRecord
from finpredict.monitor.service import MonitorService, dt_to_ts
from finpredict.testkit.monitor import MODEL, TOKENS, WRITER_TOKEN, StartMonitor, authed, monitor_env, stub
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.scrape import metric_value


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as err:
        call()
    return err.value.code(), err.value.details() or ""  # type: ignore[attr-defined]


def test_unauthenticated_calls_are_refused_by_default(tmp_path: Path) -> None:
    open_env = monitor_env(tmp_path / "none", FINPREDICT_MONITOR_TOKENS="")
    proc = start_service("monitor", tmp_path / "none", env=open_env)
    try:
        with grpc.insecure_channel(proc.target) as ch:
            for channel in (ch, authed(ch)):  # no token at all, or one nobody configured
                code, _ = _code(lambda c=channel: stub(c).ListAlerts(pb.ListAlertsRequest(), timeout=10))
                assert code == grpc.StatusCode.UNAUTHENTICATED
    finally:
        proc.stop()
    proc = start_service("monitor", tmp_path / "tokens", env=monitor_env(tmp_path / "tokens"))
    try:
        with grpc.insecure_channel(proc.target) as ch:
            code, _ = _code(lambda: stub(ch).ListAlerts(pb.ListAlertsRequest(), timeout=10))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            # the gateway's writer may log, not start retraining
            code, _ = _code(
                lambda: stub(authed(ch, WRITER_TOKEN)).TriggerRetraining(
                    pb.TriggerRetrainingRequest(model=MODEL), timeout=10
                )
            )
            assert code == grpc.StatusCode.PERMISSION_DENIED
            assert list(stub(authed(ch)).ListAlerts(pb.ListAlertsRequest(), timeout=10).alerts) == []
    finally:
        proc.stop()
    assert TOKENS  # the test kit's monitors all run with tokens


def test_a_record_from_2100_is_refused_and_later_records_are_still_evaluated(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor()
    s = stub(channel_for(proc))
    sc = rp.Scenario(days=1, per_hour=200, drift="new_segment", shift_day=0, seed=33)
    stream = rp.generate(sc).filter(pl.col("time") < sc.start + timedelta(hours=3))
    future = rp.to_records(stream.head(1), MODEL, 1)[0]
    future.request_id = "from-2100"
    future.time.CopyFrom(dt_to_ts(datetime(2100, 1, 1, tzinfo=UTC)))
    resp = s.IngestPredictions(iter([pb.IngestPredictionsRequest(records=[future])]), timeout=10)
    assert (resp.accepted, resp.rejected) == (0, 1)
    assert resp.first_rejection.startswith("records[0].time:"), resp.first_rejection
    code, details = _code(
        lambda: s.EvaluateRules(
            pb.EvaluateRulesRequest(now=dt_to_ts(datetime(2100, 1, 1, tzinfo=UTC))), timeout=10
        )
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("now:")
    assert metric_value(proc, "finpredict_monitor_future_times_refused_total") == 2
    result = rp.replay(channel_for(proc), stream, MODEL, 1)
    kl = result.first_firing("score_kl_1h")
    assert kl is not None, "the records after it were evaluated: the clock did not jump to 2100"
    assert kl.started_at.ToDatetime(tzinfo=UTC) <= sc.start + timedelta(hours=3)


STAND_IN = "import sys, time; time.sleep(float(sys.argv[1])); " + (
    "print('[register] credit-default version 9 registered')"
)


def test_two_concurrent_triggers_for_one_model_start_one_job(
    tmp_path: Path, start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    proc = start_monitor(env={"FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} {script} 3"})
    s = stub(channel_for(proc))
    ids: list[str] = []
    barrier = threading.Barrier(2)

    def trigger() -> None:
        barrier.wait()
        ids.append(
            s.TriggerRetraining(pb.TriggerRetrainingRequest(model=MODEL, reason="drill"), timeout=10).job_id
        )

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert len(ids) == 2, ids
    assert ids[0] == ids[1], "the second trigger got the running job's id"
    assert metric_value(proc, "finpredict_monitor_retraining_runs_total") == 1
    assert metric_value(proc, "finpredict_monitor_retraining_joined_total") == 1
    # once it finished, the next trigger starts a new job
    wait_for(
        lambda: s.TriggerRetraining(pb.TriggerRetrainingRequest(model=MODEL), timeout=10).job_id != ids[0],
        60,
        "a new job once the first one finished",
        interval=0.5,
    )
    assert metric_value(proc, "finpredict_monitor_retraining_runs_total") == 2


def test_outcomes_wait_then_are_orphaned_and_a_replay_is_never_counted_twice(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    proc = start_monitor(env={"FINPREDICT_MONITOR_OUTCOME_WAIT_S": "1"})
    s = stub(channel_for(proc))
    stream = rp.generate(rp.Scenario(days=1, per_hour=10, seed=34)).head(10)
    s.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=rp.to_records(stream, MODEL, 1))]), timeout=10
    )
    seen = dt_to_ts(rp.START + timedelta(days=1))
    known = [pb.Outcome(request_id=r, defaulted=True, observed_at=seen) for r in stream["request_id"][:3]]
    unknown = pb.Outcome(request_id="never-logged", defaulted=False, observed_at=seen)
    first = s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=[*known, unknown]), timeout=10)
    assert (first.matched, first.unmatched, first.duplicates) == (3, 1, 0)
    wait_for(
        lambda: metric_value(proc, "finpredict_monitor_outcomes_total", result="orphaned") == 1,
        30,
        "the unknown request's outcome orphaned",
    )
    assert metric_value(proc, "finpredict_monitor_outcomes_waiting") == 0
    # the client retries the whole call: nothing counts twice, the orphan is not orphaned again
    again = s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=[*known, unknown, known[0]]), timeout=10)
    assert (again.matched, again.unmatched, again.duplicates) == (0, 0, 5)
    ref = types_pb2.ModelRef(name=MODEL, version=1)
    report = s.GetDriftReport(pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_DAILY), timeout=10)
    assert report.windows[0].labeled == 3
    assert metric_value(proc, "finpredict_monitor_outcomes_total", result="orphaned") == 1
    assert metric_value(proc, "finpredict_monitor_outcomes_total", result="duplicate") == 5


class _AbortedError(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class _Context:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise _AbortedError(code, details)


def _alert(i: int) -> AlertRecord:
    return AlertRecord(
        f"a{i}",
        "score_kl_1h",
        "critical",
        MODEL,
        1,
        [],
        0.5,
        0.1,
        "s",
        True,
        datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_a_slow_watch_alerts_subscriber_is_dropped_with_resource_exhausted(tmp_path: Path) -> None:
    settings = MonitorSettings(
        data_dir=tmp_path / "data", registry_target="", watch_queue_size=2, metrics_port=-1, tokens=TOKENS
    )  # type: ignore[arg-type]

    async def scenario() -> tuple[list[str], _AbortedError]:
        service = MonitorService(settings)
        stream: Any = service.WatchAlerts(pb.WatchAlertsRequest(), _Context())  # type: ignore[arg-type]
        first = asyncio.ensure_future(stream.__anext__())
        await asyncio.sleep(0.05)  # subscribed, waiting for its first change
        dropped = m.WATCHERS_DROPPED._value.get()
        service.watchers.publish([_alert(i) for i in range(5)])  # it reads none of them meanwhile
        assert m.WATCHERS_DROPPED._value.get() == dropped + 1
        got = [(await first).alert.id]

        async def rest() -> None:
            while True:
                got.append((await stream.__anext__()).alert.id)

        with pytest.raises(_AbortedError) as err:
            await rest()
        service.watchers.publish([_alert(9)])  # no longer subscribed: nothing queued for it
        return got, err.value

    got, aborted = asyncio.run(scenario())
    assert got == ["a0", "a1"]
    assert aborted.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "fell more than 2 alert changes behind" in str(aborted)
