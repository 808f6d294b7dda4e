"""``finpredict``: one command line for the platform.

Each service owns its sub-command in its own package (``finpredict.registry.cli`` provides
``finpredict models``, and so on), and a few packages provide top-level verbs (``finpredict up``
from ``finpredict.stack.cli``); this module only mounts the ones that are installed.
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
    "outcomes": (
        "finpredict.gateway.cli",
        "outcomes_app",
        "Record outcomes (did the customer default?) of scored applications.",
    ),
    "feedback": (
        "finpredict.gateway.cli",
        "feedback_app",
        "Record analysts' feedback (confirmed, disputed, overridden) on scored decisions.",
    ),
    "drift": ("finpredict.monitor.cli", "app", "Drift reports and alerts."),
    "review": (
        "finpredict.monitor.review_cli",
        "app",
        "The review queue: refused requests, canary fallbacks, scores near the threshold.",
    ),
    "retrain": (
        "finpredict.monitor.retrain_cli",
        "app",
        "Retraining runs: start the day's scheduled run (or a manual one), list runs and their results.",
    ),
    "experiments": (
        "finpredict.pipelines.experiments",
        "app",
        "Training runs: list them, compare two (params, metrics, data, code).",
    ),
}
# top-level verbs: (module, attribute holding a typer.Typer whose commands are mounted at the root)
COMMANDS: list[tuple[str, str]] = [
    ("finpredict.stack.cli", "app"),  # up, down, status
    ("finpredict.demo.cli", "app"),  # demo, replay
    ("finpredict.pipelines.cli", "app"),  # train
]


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
    for module, attr in COMMANDS:
        try:
            verbs: typer.Typer = getattr(importlib.import_module(module), attr)
        except (ModuleNotFoundError, AttributeError):
            continue  # that package is not part of this installation
        app.registered_commands.extend(verbs.registered_commands)
    return app


def main() -> None:
    build_app()()


if __name__ == "__main__":
    main()
