"""``finpredict demo`` and ``finpredict replay`` (mounted at the root of the ``finpredict`` command line).

``finpredict demo`` is the main job: the whole story of a credit-risk model on one machine.
It starts the platform on embedded defaults (registry on SQLite, local artifact store and DVC
remote, a local Ray with the model server, gateway, monitor, Prometheus and Alertmanager; with
``--profile cluster``: PostgreSQL, S3 artifacts and DVC remote, a two-node Ray, two gateways), then:
trains v1 through the DVC pipeline and promotes it; serves it through the gateway with the
client SDK while delayed labels follow through the gateway; trains v2 on the next month and rolls it out
1% -> 5% -> 25% -> 100% to production; rolls out a broken candidate and watches the automatic
rollback; replays a recession through the monitor until the drift alerts fire and the
retraining trigger trains v3, which the platform puts into a canary by policy; prints the
summary and writes the HTML report (``reports/demo/report.html``). The story itself is
:mod:`finpredict.demo.story`.

The platform's data is fresh on every run (``.run/demo/platform``; ``finpredict up``'s own data
in ``.run/`` is left alone). The stack keeps running at the end for exploration (``finpredict
down`` stops it); ``--no-keep`` stops it.

``finpredict replay`` feeds a generated stream through a running monitor on a simulated clock
(:mod:`finpredict.demo.replay`). The heavy imports (the story, the data-generating process)
happen inside the commands, so that mounting them keeps ``finpredict --help`` fast.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, TypeVar

import typer
from pydantic_settings import BaseSettings
from rich.console import Console

from finpredict.common import addresses
from finpredict.common.auth import bearer_metadata
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings

app = typer.Typer(help="The main job and synthetic replays.", no_args_is_help=True)

TARGET_ENV = env_var_name(ClientSettings, "monitor_target")
TOKEN_ENV = env_var_name(ClientSettings, "token")

S = TypeVar("S", bound=BaseSettings)


def _load(settings_cls: type[S]) -> S:
    """Settings read from the environment; a bad value is a usage error naming the variable."""
    try:
        return load_settings(settings_cls)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None


@app.command()
def demo(
    keep: Annotated[
        bool,
        typer.Option(
            "--keep/--no-keep", help="Leave the stack running at the end (`finpredict down` stops it)."
        ),
    ] = True,
    report: Annotated[
        Path | None, typer.Option(help="The HTML report (default: <project root>/reports/demo/report.html).")
    ] = None,
    profile: Annotated[
        str,
        typer.Option(
            help="The platform's profile (as `finpredict up --profile`): embedded, or cluster (PostgreSQL, "
            "an S3 server, a two-node Ray, two gateways)."
        ),
    ] = "embedded",
) -> None:
    """The main job: start the platform, train, serve, roll out, roll back, detect drift, retrain, report."""
    from finpredict.demo.story import StoryConfig, run_story
    from finpredict.pipelines.config import WandbSettings
    from finpredict.stack.components import PROFILES
    from finpredict.stack.launcher import Stack
    from finpredict.stack.settings import StackSettings

    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    settings, wandb = _load(StackSettings), _load(WandbSettings)
    console = Console()
    work_dir = settings.run_dir / "demo"
    cfg = StoryConfig(
        stack=Stack(
            run_dir=settings.run_dir,
            data_dir=work_dir / "platform",
            log=lambda s: console.print(s, highlight=False),
            project_root=settings.project_root,
            profile=profile,
        ),
        work_dir=work_dir,
        report_path=report or settings.project_root / "reports" / "demo" / "report.html",
        console=console,
        keep=keep,
        dvc_cache=settings.project_root / ".dvc" / "cache",
        dvc_remote=settings.project_root / ".dvc-remote",
        wandb_mode=wandb.mode or "offline",  # the demo's training runs stay offline unless WANDB_MODE says
    )
    try:
        run_story(cfg)
    except KeyboardInterrupt:
        console.print("[red]interrupted")
        raise typer.Exit(130) from None
    except Exception as exc:
        console.print(f"[red]the demo failed: {type(exc).__name__}: {exc}")
        console.print(f"logs: {settings.run_dir}/*.log")
        raise typer.Exit(1) from None


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
        help=f"Bearer token of the monitor's admin role (it evaluates the rules; default: {TOKEN_ENV}).",
        show_default=False,
    ),
]


@app.command()
def replay(
    target: Target = None,
    token: Token = None,
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
    import grpc

    from finpredict.api.monitor.v1 import monitor_pb2 as pb
    from finpredict.demo import replay as rp

    console = Console()
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
    client = _load(ClientSettings)
    target = client.monitor_target if target is None else target
    token = client.token.get_secret_value() if token is None else token
    metadata = bearer_metadata(token) if token else ()
    with grpc.insecure_channel(target) as channel:
        result = rp.replay(channel, stream, model, version, label_delay=delay, metadata=metadata)
    console.print(f"accepted {result.accepted}, duplicates {result.duplicates}, rejected {result.rejected}")
    shift = sc.shift_time if scenario != "none" else None
    for a in result.changes:
        when = a.resolved_at if a.state == pb.ALERT_STATE_RESOLVED else a.started_at
        t = when.ToDatetime().replace(tzinfo=sc.start.tzinfo)
        ttd = f" (+{(t - shift).total_seconds() / 3600:.0f} h after the shift)" if shift is not None else ""
        state = pb.AlertState.Name(a.state).removeprefix("ALERT_STATE_").lower()
        console.print(f"{t.isoformat()} {state:8} {a.rule} {','.join(a.features)} {a.value:.4g}{ttd}")
