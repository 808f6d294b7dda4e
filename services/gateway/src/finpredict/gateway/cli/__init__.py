"""``finpredict rollout ...``, ``finpredict score``, ``finpredict outcomes record`` and
``finpredict feedback record``: the gateway from the command line.

The gateway address comes from ``--target`` or ``FINPREDICT_GATEWAY_TARGET`` (default
``127.0.0.1:50051``), the bearer token from ``--token`` or ``FINPREDICT_TOKEN`` (the client
settings every command line shares, :class:`~finpredict.common.config.ClientSettings`). Reads and
scoring need a ``reader`` token, recording outcomes and feedback a ``writer`` one, every rollout, shadow and
experiment change an ``admin`` one.

Exit codes: 0 done; 1 the gateway refused or failed the call (``error: CODE: details`` and a
hint on stderr); 2 bad usage or bad input (nothing was sent); 3 ``rollout status --wait`` saw
the rollout end ROLLED_BACK or ABORTED; 4 ``--wait``/``--watch`` ran past ``--timeout``.

This module wires the command groups together; each lives in its own module.
"""

from __future__ import annotations

import typer

from finpredict.gateway.cli import experiment, feedback, outcomes, rollout, shadow, status
from finpredict.gateway.cli.applications import InputError, read_applications, read_csv, read_jsonl
from finpredict.gateway.cli.render import render_rollout
from finpredict.gateway.cli.score import BATCH_ROWS, score
from finpredict.gateway.cli.values import parse_arm, parse_duration, parse_steps

__all__ = [
    "BATCH_ROWS",
    "InputError",
    "experiment_app",
    "feedback_app",
    "outcomes_app",
    "parse_arm",
    "parse_duration",
    "parse_steps",
    "read_applications",
    "read_csv",
    "read_jsonl",
    "render_rollout",
    "rollout_app",
    "score_app",
]

rollout_app = typer.Typer(
    help="Canary rollouts, shadow traffic and A/B experiments on the gateway.",
    no_args_is_help=True,
    add_completion=False,
)
rollout_app.callback()(rollout.options)
rollout_app.command()(rollout.start)
rollout_app.command()(status.status)
rollout_app.command("list")(rollout.list_)
rollout_app.command()(rollout.pause)
rollout_app.command()(rollout.resume)
rollout_app.command()(rollout.abort)
rollout_app.command()(rollout.promote)
rollout_app.command()(shadow.shadow)

experiment_app = typer.Typer(help="A/B experiments with fixed-weight arms.", no_args_is_help=True)
experiment_app.command("start")(experiment.experiment_start)
experiment_app.command("stop")(experiment.experiment_stop)
experiment_app.command("status")(experiment.experiment_status)
rollout_app.add_typer(experiment_app, name="experiment")

score_app = typer.Typer(
    help="Score applications through the gateway.", subcommand_metavar="", add_completion=False
)
score_app.callback(invoke_without_command=True)(score)

outcomes_app = typer.Typer(
    help="Outcomes (ground truth) of scored applications, for the monitor's accuracy.",
    no_args_is_help=True,
    add_completion=False,
)
outcomes_app.callback()(outcomes.group)  # a group, so that `record` stays a sub-command
outcomes_app.command("record")(outcomes.record)

feedback_app = typer.Typer(
    help="Analyst feedback on scored decisions (overrides with a corrected label train the next model).",
    no_args_is_help=True,
    add_completion=False,
)
feedback_app.callback()(feedback.group)  # a group, so that `record` stays a sub-command
feedback_app.command("record")(feedback.record)
