"""``finpredict drift``: drift report, alerts and replays (mounted by the root CLI)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import grpc
import typer
from rich.console import Console
from rich.table import Table

import drift_core
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common.auth import bearer_metadata

app = typer.Typer(help="Drift reports, model-quality alerts and replays.", no_args_is_help=True)
console = Console()

Target = Annotated[str, typer.Option(help="Monitor address host:port.", envvar="FINPREDICT_MONITOR_TARGET")]
Token = Annotated[
    str,
    typer.Option(
        help="Bearer token (when the monitor has FINPREDICT_MONITOR_TOKENS).", envvar="FINPREDICT_TOKEN"
    ),
]


class _Bearer(grpc.UnaryUnaryClientInterceptor, grpc.StreamUnaryClientInterceptor):  # type: ignore[type-arg,misc]
    """Adds ``authorization: Bearer <token>`` to every call."""

    def __init__(self, token: str) -> None:
        self.metadata = bearer_metadata(token)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.metadata])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


@contextmanager
def _channel(target: str, token: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(target) as channel:
        yield grpc.intercept_channel(channel, _Bearer(token)) if token else channel


@app.command()
def report(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[int, typer.Option(help="Model version.", min=1)],
    data_dir: Annotated[
        Path, typer.Option(help="The monitor's data dir.", envvar="FINPREDICT_MONITOR_DATA_DIR")
    ],
    profile: Annotated[
        Path | None,
        typer.Option(help="Reference profile file (default: <profiles-dir>/<model>/<version>.bin)."),
    ] = None,
    profiles_dir: Annotated[
        Path | None,
        typer.Option(help="The monitor's profiles dir.", envvar="FINPREDICT_MONITOR_PROFILES_DIR"),
    ] = None,
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("drift-report.html"),
    psi_threshold: Annotated[float, typer.Option(help="PSI threshold drawn on the charts.")] = 0.25,
) -> None:
    """Render an HTML page with per-feature PSI over time and score distributions."""
    from finpredict.monitor.report import compute, render
    from finpredict.monitor.store import StoreReadError

    path = profile or ((profiles_dir or data_dir / "profiles") / model / f"{version}.bin")
    if not path.is_file():
        raise typer.BadParameter(f"no reference profile at {path}", param_hint="--profile")
    try:
        prof = drift_core.Profile.from_bytes(path.read_bytes())
    except (OSError, drift_core.DriftCoreError) as exc:
        raise typer.BadParameter(
            f"{path}: not a readable reference profile ({exc})", param_hint="--profile"
        ) from None
    try:
        days = compute(data_dir, prof, model, version)
    except StoreReadError as exc:
        raise typer.BadParameter(str(exc), param_hint="--data-dir") from None
    except drift_core.DriftCoreError as exc:
        raise typer.BadParameter(
            f"the stored predictions in {data_dir} do not match the profile {path} ({exc})",
            param_hint="--profile",
        ) from None
    if not days:
        raise typer.BadParameter(
            f"no stored predictions of {model} v{version} in {data_dir}", param_hint="--data-dir"
        )
    try:
        out.write_text(render(days, prof, model, version, psi_threshold))
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {out} ({exc.strerror})", param_hint="--out") from None
    console.print(f"wrote {out} ({len(days)} days)")


@app.command()
def alerts(
    target: Target = "127.0.0.1:50054",
    firing_only: Annotated[bool, typer.Option(help="Only firing alerts.")] = False,
    model: Annotated[str, typer.Option(help="Model name filter.")] = "",
    token: Token = "",
) -> None:
    """List model-quality alerts."""
    with _channel(target, token) as channel:
        resp = pb_grpc.MonitorServiceStub(channel).ListAlerts(
            pb.ListAlertsRequest(firing_only=firing_only, model=model), timeout=10
        )
    table = Table(
        "state", "rule", "severity", "model", "features", "value", "started (event time)", "retrained"
    )
    for a in resp.alerts:
        table.add_row(
            pb.AlertState.Name(a.state).removeprefix("ALERT_STATE_").lower(),
            a.rule,
            a.severity,
            f"{a.model.name} v{a.model.version}",
            ", ".join(a.features),
            f"{a.value:.4g}",
            a.started_at.ToDatetime().isoformat(),
            str(a.retrained_version or ""),
        )
    console.print(table)


@app.command()
def replay(
    target: Target = "127.0.0.1:50054",
    token: Token = "",
    model: Annotated[str, typer.Option(help="Model name.")] = "credit-default",
    version: Annotated[int, typer.Option(help="Model version.", min=1)] = 1,
    days: Annotated[int, typer.Option(min=1, help="The stream ends at 00:00 of this day.")] = 30,
    first_day: Annotated[int, typer.Option(min=0, help="The stream starts at 00:00 of this day.")] = 0,
    per_hour: Annotated[int, typer.Option(min=1)] = 200,
    scenario: Annotated[str, typer.Option(help="dgp drift scenario (none, recession, ...).")] = "none",
    shift_day: Annotated[int, typer.Option(help="Day (0-based) the scenario starts.")] = 10,
    degrade_from_day: Annotated[
        int | None, typer.Option(help="Serve a silently degraded model from this day.")
    ] = None,
    degrade_until_day: Annotated[int | None, typer.Option(help="... until this day.")] = None,
    label_delay_hours: Annotated[float | None, typer.Option(help="Send outcomes after this delay.")] = None,
    seed: Annotated[int, typer.Option()] = 1,
    write_profile: Annotated[
        Path | None, typer.Option(help="First write the replay's reference profile into this profiles dir.")
    ] = None,
) -> None:
    """Feed a generated stream through a running monitor on a simulated clock; print time to detect."""
    from finpredict.monitor import replay as rp

    sc = rp.Scenario(
        days=days,
        first_day=first_day,
        per_hour=per_hour,
        drift=scenario,
        shift_day=shift_day,
        degrade_from_day=degrade_from_day,
        degrade_until_day=degrade_until_day,
        seed=seed,
    )
    if write_profile is not None:
        dest = write_profile / model / f"{version}.bin"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(rp.reference_profile().to_bytes())
        console.print(f"wrote reference profile {dest} (restart the monitor if it already saw this version)")
    stream = rp.generate(sc)
    delay = timedelta(hours=label_delay_hours) if label_delay_hours is not None else None
    with _channel(target, token) as channel:
        result = rp.replay(channel, stream, model, version, label_delay=delay)
    console.print(f"accepted {result.accepted}, duplicates {result.duplicates}, rejected {result.rejected}")
    shift = sc.shift_time if scenario != "none" else None
    for a in result.changes:
        when = a.resolved_at if a.state == pb.ALERT_STATE_RESOLVED else a.started_at
        t = when.ToDatetime().replace(tzinfo=sc.start.tzinfo)
        ttd = f" (+{(t - shift).total_seconds() / 3600:.0f} h after the shift)" if shift is not None else ""
        state = pb.AlertState.Name(a.state).removeprefix("ALERT_STATE_").lower()
        console.print(f"{t.isoformat()} {state:8} {a.rule} {','.join(a.features)} {a.value:.4g}{ttd}")
