"""``finpredict``: one command line for the platform.

Each service owns its sub-command in its own package (``finpredict.registry.cli`` provides
``finpredict models``, and so on); this module only mounts the ones that are installed.
"""

from __future__ import annotations

import importlib

import typer

# sub-command -> (module, attribute holding a typer.Typer, help)
SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "models": (
        "finpredict.registry.cli",
        "app",
        "Model registry: versions, lineage, promote, rollback, history.",
    ),
    "rollout": ("finpredict.gateway.cli", "rollout_app", "Canary rollouts: start, status, pause, resume."),
    "score": ("finpredict.gateway.cli", "score_app", "Score applications through the gateway."),
    "drift": ("finpredict.monitor.cli", "app", "Drift reports and alerts."),
}


def build_app() -> typer.Typer:
    """The root app with every installed sub-command mounted."""
    app = typer.Typer(
        help="finpredict: train, version, gate, deploy, canary and monitor credit-risk models.",
        no_args_is_help=True,
    )

    @app.callback()
    def root() -> None:
        """finpredict command line."""

    @app.command()
    def version() -> None:
        """Print the installed finpredict version."""
        from importlib.metadata import version as dist_version

        typer.echo(f"finpredict {dist_version('finpredict-cli')}")

    for name, (module, attr, help_text) in SUBCOMMANDS.items():
        try:
            sub = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError):
            continue  # that service's CLI is not part of this installation (yet)
        app.add_typer(sub, name=name, help=help_text)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
