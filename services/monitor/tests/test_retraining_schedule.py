"""Scheduled retraining in the monitor, on its clock (record times and ``EvaluateRules``): the
monitor's scheduler starts each day's run (``schedule:<date>``) on the matured, labelled records of
its window, once; a day without such records, a day the clock skipped and a failing command each
end as a recorded failure with its reason; ``ScheduleRetraining`` (the CronJob's
``finpredict retrain run --schedule``) answers a day that ran with its run and reruns a failed
one; the runs survive a restart and ``finpredict retrain list`` shows them.

The command is a stand-in for the pipeline (it records its arguments and prints the register
stage's line, or fails when told to); the real pipeline is in tests/e2e/test_scheduled_retraining.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from datetime import time, timedelta
from pathlib import Path

import grpc
import polars as pl
import pytest
from typer.testing import CliRunner

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.common.config import ConfigError, load_settings
from finpredict.demo import replay as rp
from finpredict.monitor.config import MonitorSettings
from finpredict.monitor.retrain_cli import app
from finpredict.monitor.service import dt_to_ts
from finpredict.testkit.monitor import ADMIN_TOKEN, MODEL, StartMonitor, labelled_stream, stub
from finpredict.testkit.process import ServiceProcess, wait_for

STAND_IN = """
import json, os, sys
calls, model, snapshot, start, end = sys.argv[1:6]
with open(calls, "a") as fh:
    fh.write(json.dumps({"trigger": os.environ["FINPREDICT_TRIGGER"], "start": start, "end": end}) + "\\n")
if os.path.exists(calls + ".fail"):
    print("[evaluate] gate auc_roc failed: 0.61 < 0.82")
    sys.exit(3)
n = sum(1 for _ in open(calls))
print("[register] " + model + " version " + str(n + 1) + " registered (gates passed: True)")
"""
DAY = timedelta(days=1)
ROWS = 96  # a day: one prediction every 15 minutes


def _env(tmp_path: Path, calls: Path) -> dict[str, str]:
    script = tmp_path / "train_stand_in.py"
    script.write_text(STAND_IN)
    return {
        "FINPREDICT_MONITOR_RETRAIN_COMMAND": (
            f"{sys.executable} {script} {calls} {{model}} {{snapshot}} {{window_start}} {{window_end}}"
        ),
        "FINPREDICT_MONITOR_RETRAIN_SNAPSHOT": str(tmp_path / "snapshot.parquet"),
        "FINPREDICT_MONITOR_LABEL_MATURITY_DAYS": "0.5",
        "FINPREDICT_MONITOR_RETRAIN_SCHEDULE": f"{MODEL}=01:30",
    }


def _jobs(ch: grpc.Channel) -> list[pb.RetrainingJob]:
    return list(stub(ch).ListRetrainingJobs(pb.ListRetrainingJobsRequest(model=MODEL), timeout=10).jobs)


def _finished(ch: grpc.Channel, trigger: str, job_id: str = "") -> pb.RetrainingJob:
    """The newest run of ``trigger`` (or the run ``job_id``), once it has ended."""

    def done() -> pb.RetrainingJob | None:
        found = [j for j in _jobs(ch) if j.trigger == trigger and (j.id == job_id or not job_id)]
        return found[0] if found and found[0].state != pb.RETRAINING_STATE_RUNNING else None

    return wait_for(done, 60, f"the run {trigger}")


def _day(ch: grpc.Channel, n: int) -> pl.DataFrame:
    """Day ``n``'s predictions, each labelled an hour later (the outcomes sent now)."""
    frame = labelled_stream(ROWS, 500 + n, rp.START + n * DAY, DAY / ROWS)
    s = stub(ch)
    s.IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=rp.to_records(frame, MODEL, 1))]), timeout=30
    )
    outcomes = [
        pb.Outcome(request_id=r, defaulted=d, observed_at=dt_to_ts(t + timedelta(hours=1)))
        for r, d, t in zip(frame["request_id"], frame["defaulted"], frame["time"], strict=True)
    ]
    s.RecordOutcomes(pb.RecordOutcomesRequest(outcomes=outcomes), timeout=30)
    return frame


def _clock(ch: grpc.Channel, days: float) -> None:
    stub(ch).EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(rp.START + days * DAY)), timeout=30)


def _cli(proc: ServiceProcess, *args: str) -> str:
    env = {"FINPREDICT_MONITOR_TARGET": proc.target, "FINPREDICT_TOKEN": ADMIN_TOKEN, "COLUMNS": "400"}
    result = CliRunner().invoke(app, list(args), env=env)
    assert result.exit_code == 0, result.output
    return result.output


def test_the_schedule_runs_each_day_once_and_records_every_failure(
    tmp_path: Path, start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    calls = tmp_path / "calls.jsonl"
    proc = start_monitor(env=_env(tmp_path, calls))
    ch = channel_for(proc)
    day0 = rp.START.date()
    day1 = day0 + DAY

    # the first records move the clock past day 0, 01:30: the day's window has nothing yet
    day_0 = _day(ch, 0)
    first = _finished(ch, f"schedule:{day0}")
    assert first.state == pb.RETRAINING_STATE_FAILED
    assert "no matured, labelled prediction" in first.error
    assert "nothing new to train on" in first.error

    # day 1 is not due before 01:30; then its run starts by itself, and the command fails
    _clock(ch, 1.0)
    assert not [j for j in _jobs(ch) if j.trigger == f"schedule:{day1}"]
    Path(f"{calls}.fail").touch()
    _clock(ch, 1.0 + 1.5 / 24)
    failed = _finished(ch, f"schedule:{day1}")
    assert failed.state == pb.RETRAINING_STATE_FAILED
    assert failed.error == "the command exited with status 3: [evaluate] gate auc_roc failed: 0.61 < 0.82"

    # a failed day runs again when asked (the CronJob's call): the predictions of
    # [day 0 - 12 h, day 1 - 12 h) with the labels observed by day 1, 00:00
    Path(f"{calls}.fail").unlink()
    out = json.loads(_cli(proc, "run", "--model", MODEL, "--schedule", "--date", str(day1)))
    assert (out["date"], out["started"]) == (str(day1), True)
    job = _finished(ch, f"schedule:{day1}", out["id"])
    assert (job.id, job.state, job.version, job.error) == (out["id"], pb.RETRAINING_STATE_SUCCEEDED, 3, "")
    assert job.window_end.ToDatetime() == (rp.START + DAY / 2).replace(tzinfo=None)
    assert job.window_start.ToDatetime() == (rp.START - DAY / 2).replace(tzinfo=None)
    assert job.rows == day_0.filter(pl.col("time") < rp.START + DAY / 2).height == ROWS // 2
    assert pl.read_parquet(tmp_path / "snapshot.parquet").height == ROWS // 2
    assert [json.loads(line)["trigger"] for line in calls.read_text().splitlines()] == [
        f"schedule:{day1}"
    ] * 2

    # asked again, the day that ran is answered with its run; the clock moving on starts nothing
    out = json.loads(_cli(proc, "run", "--model", MODEL, "--schedule", "--date", str(day1)))
    assert (out["started"], out["id"], out["version"]) == (False, job.id, 3)
    _clock(ch, 1.9)
    assert len([j for j in _jobs(ch) if j.trigger == f"schedule:{day1}"]) == 2  # set when a run starts
    assert len(calls.read_text().splitlines()) == 2

    # the clock jumps to day 4: days 2 and 3 are recorded as missed; day 4's window is empty
    _clock(ch, 4.1)
    empty = _finished(ch, f"schedule:{day0 + 4 * DAY}")
    assert "no matured, labelled prediction" in empty.error
    for skipped in (day0 + 2 * DAY, day0 + 3 * DAY):
        missed = _finished(ch, f"schedule:{skipped}")
        assert missed.error.startswith("missed: the monitor's clock moved"), missed.error
        assert f"--schedule --date {skipped}" in missed.error

    # the runs survive a restart; the CLI lists them, newest first, with their version or reason
    proc.stop()
    ch = channel_for(proc := start_monitor(env=_env(tmp_path, calls)))
    listed = [json.loads(line) for line in _cli(proc, "list", "--model", MODEL, "--json").splitlines()]
    assert len(listed) == 6
    assert listed[0]["trigger"] == f"schedule:{day0 + 4 * DAY}"
    assert [(j["state"], j["version"]) for j in listed if j["trigger"] == f"schedule:{day1}"] == [
        ("succeeded", 3),
        ("failed", 0),
    ]
    table = _cli(proc, "list")
    assert f"schedule:{day1}" in table
    assert "exited with status 3" in table


def test_a_schedule_needs_a_valid_time_of_day(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINPREDICT_MONITOR_RETRAIN_SCHEDULE", f"{MODEL}=25:00")
    with pytest.raises(ConfigError, match=r"FINPREDICT_MONITOR_RETRAIN_SCHEDULE.*model=HH:MM"):
        load_settings(MonitorSettings)
    monkeypatch.setenv("FINPREDICT_MONITOR_RETRAIN_SCHEDULE", f"{MODEL}=02:00, other=23:59")
    assert load_settings(MonitorSettings).schedule == {MODEL: time(2), "other": time(23, 59)}


def test_schedule_retraining_without_a_snapshot_is_failed_precondition(
    start_monitor: StartMonitor, channel_for: Callable[[ServiceProcess], grpc.Channel]
) -> None:
    s = stub(channel_for(start_monitor(env={"FINPREDICT_MONITOR_RETRAIN_COMMAND": "true"})))
    with pytest.raises(grpc.RpcError) as err:
        s.ScheduleRetraining(pb.ScheduleRetrainingRequest(model=MODEL), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "FINPREDICT_MONITOR_RETRAIN_SNAPSHOT" in (err.value.details() or "")
