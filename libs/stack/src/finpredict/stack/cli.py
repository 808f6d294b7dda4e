"""``finpredict up | down | status``: the local platform in the background (mounted by the root CLI).

finpredict up [--only registry,gateway]
finpredict status
finpredict down
"""

from __future__ import annotations

from typing import Annotated

import typer

from finpredict.common.config import ConfigError, load_settings
from finpredict.stack.components import COMPONENTS
from finpredict.stack.launcher import Stack
from finpredict.stack.settings import StackSettings

app = typer.Typer(help="The local platform: start, stop and list its components.", no_args_is_help=True)

Only = Annotated[
    str,
    typer.Option(help=f"Comma-separated components (default: all): {','.join(COMPONENTS)}."),
]


def _stack() -> Stack:
    try:
        settings = load_settings(StackSettings)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    return Stack(run_dir=settings.run_dir, project_root=settings.project_root)


def _chosen(only: str) -> list[str]:
    names = [s for s in only.split(",") if s] if only else []
    unknown = sorted(set(names) - set(COMPONENTS))
    if unknown:
        raise typer.BadParameter(
            f"unknown component(s) {', '.join(unknown)}; choose from {', '.join(COMPONENTS)}",
            param_hint="--only",
        )
    return [s for s in COMPONENTS if not names or s in names]


@app.command()
def up(only: Only = "") -> None:
    """Start the services, Prometheus and Alertmanager in the background (logs and pids in the run dir)."""
    chosen = _chosen(only)
    stack = _stack()
    stack.secrets()  # generated on the first `up`
    print("starting finpredict services:")
    stack.up(chosen)
    secrets = stack.secrets_file
    print(f"tokens for the CLI and clients: {secrets} (e.g. `set -a; . {secrets}; set +a`)")
    running = stack.targets()
    if "console" in running:
        print(
            f"console: {running['console']}  (sign in with FINPREDICT_TOKEN from {secrets} for admin actions)"
        )
    if "prometheus" in running:
        print(f"Prometheus UI: {running['prometheus']}  (Alertmanager: {running.get('alertmanager', '-')})")
    print("stop them with `finpredict down`")


@app.command()
def down(only: Only = "") -> None:
    """Stop the components `finpredict up` started (by their recorded pids)."""
    chosen = _chosen(only)
    for name, was_running in _stack().down(chosen).items():
        print(f"  {name:<13} {'stopped' if was_running else 'not running'}")


@app.command()
def status(only: Only = "") -> None:
    """List the components and where the running ones serve."""
    chosen = _chosen(only)
    running = _stack().targets()
    for name in chosen:
        print(f"  {name:<13} {running.get(name, 'not running')}")
