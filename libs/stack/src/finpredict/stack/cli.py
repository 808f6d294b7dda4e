"""``finpredict up | down | status``: the local platform in the background (mounted by the root CLI).

finpredict up [--profile embedded|cluster] [--only registry,gateway]
finpredict status [--profile cluster]
finpredict down
"""

from __future__ import annotations

from typing import Annotated

import typer

from finpredict.common.config import ConfigError, load_settings
from finpredict.stack.components import COMPONENTS, DEFAULT_PROFILE, PROFILES
from finpredict.stack.launcher import Stack
from finpredict.stack.settings import StackSettings

app = typer.Typer(help="The local platform: start, stop and list its components.", no_args_is_help=True)

Only = Annotated[
    str,
    typer.Option(help=f"Comma-separated components (default: all of the profile): {','.join(COMPONENTS)}."),
]
Profile = Annotated[
    str,
    typer.Option(
        help="embedded: SQLite, local artifacts, a local Ray in the model server; cluster: adds PostgreSQL, "
        "an S3 server (moto), a two-node Ray and a second gateway (see the README)."
    ),
]


def _stack(profile: str = DEFAULT_PROFILE) -> Stack:
    if profile not in PROFILES:
        raise typer.BadParameter(f"unknown profile {profile!r}; choose from {', '.join(PROFILES)}")
    try:
        settings = load_settings(StackSettings)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return Stack(run_dir=settings.run_dir, project_root=settings.project_root, profile=profile)


def _chosen(only: str, among: list[str] = COMPONENTS) -> list[str]:
    names = [s for s in only.split(",") if s] if only else []
    unknown = sorted(set(names) - set(among))
    if unknown:
        raise typer.BadParameter(
            f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(among)}",
            param_hint="--only",
        )
    return [s for s in among if not names or s in names]


@app.command()
def up(only: Only = "", profile: Profile = DEFAULT_PROFILE) -> None:
    """Start the services, Prometheus and Alertmanager in the background (logs and pids in the run dir);
    with `--profile cluster` also PostgreSQL, an S3 server, a two-node Ray and a second gateway."""
    stack = _stack(profile)
    chosen = _chosen(only, PROFILES[profile])
    stack.secrets()  # generated on the first `up`
    print(f"starting finpredict ({profile} profile):")
    try:
        stack.up(chosen)
    except FileNotFoundError as exc:  # what the cluster profile needs and this machine lacks
        print(f"cannot start the {profile} profile: {exc}")
        raise typer.Exit(1) from None
    secrets = stack.secrets_file
    print(f"tokens for the CLI and clients: {secrets} (e.g. `set -a; . {secrets}; set +a`)")
    running = stack.targets()
    if "console" in running:
        print(
            f"console: {running['console']}  (sign in with FINPREDICT_TOKEN from {secrets} for admin actions)"
        )
    if "prometheus" in running:
        print(f"Prometheus UI: {running['prometheus']}  (Alertmanager: {running.get('alertmanager', '-')})")
    if (remote := stack.dvc_remote()) is not None:
        url, options = remote
        print(f"DVC remote on the S3 server: {url} (endpointurl {options['endpointurl']}; `finpredict demo "
              "--profile cluster` pushes there)")  # fmt: skip
    print("stop them with `finpredict down`")


@app.command()
def down(only: Only = "") -> None:
    """Stop the components `finpredict up` started, of either profile (by their recorded pids)."""
    chosen = _chosen(only)
    for name, was_running in _stack().down(chosen).items():
        if was_running or only or name in PROFILES[DEFAULT_PROFILE]:  # the cluster's parts when they ran
            print(f"  {name:<13} {'stopped' if was_running else 'not running'}")


@app.command()
def status(only: Only = "", profile: Profile = DEFAULT_PROFILE) -> None:
    """List the profile's components (and any other running one) and where the running ones serve."""
    stack = _stack(profile)
    running = stack.targets()
    listed = [s for s in COMPONENTS if s in PROFILES[profile] or s in running]
    for name in _chosen(only) if only else listed:
        print(f"  {name:<13} {running.get(name, 'not running')}")
