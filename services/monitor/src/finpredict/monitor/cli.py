"""``finpredict drift``: drift report and alerts (mounted by the root CLI)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import grpc
import typer
from pydantic_settings import BaseSettings
from rich.console import Console
from rich.table import Table

import drift_core
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.common import addresses
from finpredict.common.auth import BearerClientInterceptor
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings
from finpredict.monitor.config import MonitorSettings

app = typer.Typer(help="Drift reports and model-quality alerts.", no_args_is_help=True)
console = Console()

TARGET_ENV = env_var_name(ClientSettings, "monitor_target")
TOKEN_ENV = env_var_name(ClientSettings, "token")
DATA_DIR_ENV = env_var_name(MonitorSettings, "data_dir")
PROFILES_DIR_ENV = env_var_name(MonitorSettings, "profiles_dir")
MATURITY_ENV = env_var_name(MonitorSettings, "label_maturity_days")

S = TypeVar("S", bound=BaseSettings)

Target = Annotated[
    str | None,
    typer.Option(
        help=f"Monitor address host:port (default: {TARGET_ENV}, else {addresses.MONITOR_ADDRESS}).",
        show_default=False,
    ),
]
Token = Annotated[
    str | None,
    typer.Option(
        help=f"Bearer token, when the monitor has {env_var_name(MonitorSettings, 'tokens')} "
        f"(default: {TOKEN_ENV}).",
        show_default=False,
    ),
]
DataDir = Annotated[
    Path | None,
    typer.Option(
        help=f"The monitor's data dir (default: {DATA_DIR_ENV}, "
        f"else {MonitorSettings.model_fields['data_dir'].default}).",
        show_default=False,
    ),
]


def _load(settings_cls: type[S]) -> S:
    """Settings read from the environment; a bad value is a usage error naming the variable."""
    try:
        return load_settings(settings_cls)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@contextmanager
def _channel(target: str | None, token: str | None) -> Iterator[grpc.Channel]:
    """A channel to the monitor: the options, else the client settings (the environment)."""
    settings = _load(ClientSettings)
    target = settings.monitor_target if target is None else target
    token = settings.token.get_secret_value() if token is None else token
    with grpc.insecure_channel(target) as channel:
        yield grpc.intercept_channel(channel, BearerClientInterceptor(token)) if token else channel


def _monitor_dirs(data_dir: Path | None, profiles_dir: Path | None) -> tuple[Path, Path]:
    """The monitor's data and profiles dirs: the options, else its settings (the environment); the
    profiles dir is ``<data dir>/profiles`` unless its variable is set."""
    settings = _load(MonitorSettings)
    data = settings.data_dir if data_dir is None else data_dir
    if profiles_dir is not None:
        return data, profiles_dir
    return data, settings.profiles_dir if settings.profiles_dir is not None else data / "profiles"


@app.command()
def report(
    model: Annotated[str, typer.Option(help="Model name.")],
    version: Annotated[int, typer.Option(help="Model version.", min=1)],
    data_dir: DataDir = None,
    profile: Annotated[
        Path | None,
        typer.Option(help="Reference profile file (default: <profiles-dir>/<model>/<version>.bin)."),
    ] = None,
    profiles_dir: Annotated[
        Path | None,
        typer.Option(
            help=f"The monitor's profiles dir (default: {PROFILES_DIR_ENV}, else <data-dir>/profiles).",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option(help="HTML file to write.")] = Path("drift-report.html"),
    psi_threshold: Annotated[float, typer.Option(help="PSI threshold drawn on the charts.")] = 0.25,
) -> None:
    """Render an HTML page with per-feature PSI over time and score distributions."""
    from finpredict.monitor.report import compute, render
    from finpredict.monitor.store import StoreReadError

    data_dir, profiles_dir = _monitor_dirs(data_dir, profiles_dir)
    path = profile or (profiles_dir / model / f"{version}.bin")
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
    target: Target = None,
    firing_only: Annotated[bool, typer.Option(help="Only firing alerts.")] = False,
    model: Annotated[str, typer.Option(help="Model name filter.")] = "",
    token: Token = None,
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


def _utc(value: datetime) -> datetime:
    """A time option (typer's formats have no zone: UTC) as an aware datetime."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@app.command()
def export(
    start: Annotated[
        datetime, typer.Option("--from", help="Window start (YYYY-MM-DD[THH:MM:SS], UTC), included.")
    ],
    end: Annotated[datetime, typer.Option("--to", help="Window end (UTC), excluded.")],
    out: Annotated[Path, typer.Option(help="Parquet snapshot to write (replaced atomically).")],
    model: Annotated[str, typer.Option(help="Model name (default: every model).")] = "",
    maturity_days: Annotated[
        float | None,
        typer.Option(
            help="Days after a prediction by which its outcome is due; younger predictions are left "
            f"out (default: {MATURITY_ENV}, else "
            f"{MonitorSettings.model_fields['label_maturity_days'].default}).",
            min=0,
            show_default=False,
        ),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            help="Outcomes observed up to this time (UTC) count (default: now).", show_default=False
        ),
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Export the matured, labelled predictions of a window [from, to) with their outcomes as a
    Parquet snapshot for the training pipeline's `production` source (reads the data dir; a running
    monitor may go on writing). Prints the window and the counts as JSON."""
    from finpredict.monitor.export import export_window, write_snapshot
    from finpredict.monitor.records import model_name_problem
    from finpredict.monitor.store import RecordStore, StoreReadError

    settings = _load(MonitorSettings)
    start, end = _utc(start), _utc(end)
    if not start < end:
        raise typer.BadParameter("must be after --from", param_hint="--to")
    if model and (problem := model_name_problem("--model", model)) is not None:
        raise typer.BadParameter(problem, param_hint="--model")
    data = settings.data_dir if data_dir is None else data_dir
    if not data.is_dir():
        raise typer.BadParameter(f"{data}: not a directory", param_hint="--data-dir")
    days = settings.label_maturity_days if maturity_days is None else maturity_days
    when = datetime.now(UTC) if as_of is None else _utc(as_of)
    store = RecordStore(data, writer=False)
    for attempt in range(3):  # a file compacted away while it was read: read the hours again
        try:
            rows, stats = export_window(store, start, end, when, timedelta(days=days), model)
            break
        except StoreReadError as exc:
            if attempt == 2:
                raise typer.BadParameter(str(exc), param_hint="--data-dir") from None
    try:
        write_snapshot(out, rows, stats)
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {out} ({exc.strerror})", param_hint="--out") from None
    print(json.dumps({"snapshot": str(out), **stats.to_json()}, indent=2))
