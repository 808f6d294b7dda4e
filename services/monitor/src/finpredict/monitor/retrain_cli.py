"""``finpredict retrain``: start retraining runs in the monitor and list them (mounted by the root
CLI).

``finpredict retrain run --model M --schedule`` asks the monitor for the model's scheduled run of
the day (what the cluster's CronJob calls; the local stack's monitor can run its own scheduler,
``FINPREDICT_MONITOR_RETRAIN_SCHEDULE``); without ``--schedule`` it starts a manual run.
``finpredict retrain list`` shows each run's trigger, window, rows, and the version it registered
or why it failed.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Annotated

import grpc
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.table import Table

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.monitor.cli import Target, Token, _channel

app = typer.Typer(help="Retraining runs: start one (scheduled or manual), list them.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


@contextmanager
def _stub(target: str | None, token: str | None) -> Iterator[pb_grpc.MonitorServiceStub]:
    """The monitor's stub; a refused call prints its status and exits 1."""
    with _channel(target, token) as channel:
        try:
            yield pb_grpc.MonitorServiceStub(channel)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            err.print(f"[red]error:[/red] {code.name}: {exc.details()}")  # type: ignore[attr-defined]
            raise typer.Exit(1) from None


def _state(job: pb.RetrainingJob) -> str:
    return pb.RetrainingState.Name(job.state).removeprefix("RETRAINING_STATE_").lower()


def _time(ts: Timestamp) -> str:
    return datetime.fromtimestamp(ts.seconds, UTC).strftime("%Y-%m-%d %H:%M") if ts.seconds else ""


def job_json(job: pb.RetrainingJob) -> dict[str, object]:
    """A job as printed by ``--json``."""
    return {
        "id": job.id,
        "model": job.model,
        "trigger": job.trigger,
        "state": _state(job),
        "version": job.version,
        "error": job.error,
        "window_start": job.window_start.ToDatetime(UTC).isoformat()
        if job.HasField("window_start")
        else None,
        "window_end": job.window_end.ToDatetime(UTC).isoformat() if job.HasField("window_end") else None,
        "rows": job.rows,
        "started_at": job.started_at.ToDatetime(UTC).isoformat() if job.HasField("started_at") else None,
        "finished_at": job.finished_at.ToDatetime(UTC).isoformat() if job.HasField("finished_at") else None,
    }


@app.command()
def run(
    model: Annotated[str, typer.Option(help="Model name.")],
    schedule: Annotated[
        bool, typer.Option(help="The model's scheduled run of the day (trigger schedule:<date>).")
    ] = False,
    date: Annotated[
        str,
        typer.Option(help="With --schedule: the day (YYYY-MM-DD, UTC; default: the monitor's today)."),
    ] = "",
    reason: Annotated[str, typer.Option(help="Without --schedule: why (trigger manual:<reason>).")] = "",
    target: Target = None,
    token: Token = None,
) -> None:
    """Start a retraining run (admin). A day whose scheduled run succeeded or is running is answered
    with that run; a failed day runs again. Exits 1 when the day's run could not start because
    another run of the model is running."""
    if date and not schedule:
        raise typer.BadParameter("needs --schedule", param_hint="--date")
    with _stub(target, token) as stub:
        if not schedule:
            resp = stub.TriggerRetraining(pb.TriggerRetrainingRequest(model=model, reason=reason), timeout=30)
            console.print(f"retraining job {resp.job_id} of {model}")
            return
        got = stub.ScheduleRetraining(pb.ScheduleRetrainingRequest(model=model, date=date), timeout=30)
    print(json.dumps({"date": got.date, "started": got.started, **job_json(got.job)}, indent=2))
    if got.job.trigger != f"schedule:{got.date}":  # another run of the model is running
        err.print(
            f"[red]error:[/red] the run of {got.date} did not start: {model}'s run {got.job.id} "
            f"({got.job.trigger}) is running; try again when it has ended"
        )
        raise typer.Exit(1)


@app.command("list")
def list_jobs(
    model: Annotated[str, typer.Option(help="Model name filter.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per run.")] = False,
    target: Target = None,
    token: Token = None,
) -> None:
    """List retraining runs, newest first: the version each registered, or why it failed."""
    with _stub(target, token) as stub:
        jobs = stub.ListRetrainingJobs(pb.ListRetrainingJobsRequest(model=model), timeout=30).jobs
    if as_json:
        for job in jobs:
            print(json.dumps(job_json(job)))
        return
    table = Table("job", "model", "trigger", "state", "version", "window", "rows", "started", "error")
    for job in jobs:
        window = f"{_time(job.window_start)} - {_time(job.window_end)}" if job.HasField("window_end") else ""
        table.add_row(
            job.id,
            job.model,
            job.trigger,
            _state(job),
            str(job.version or ""),
            window,
            str(job.rows or ""),
            _time(job.started_at),
            job.error,
        )
    console.print(table)


if __name__ == "__main__":  # the CronJob's container: python -m finpredict.monitor.retrain_cli
    app()
