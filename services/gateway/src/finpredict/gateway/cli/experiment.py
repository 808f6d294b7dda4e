"""``finpredict rollout experiment start|stop``: A/B experiments with fixed-weight arms."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.cli._common import out, rollout_service, usage
from finpredict.gateway.cli.values import parse_arm


def experiment_start(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    arms: Annotated[
        list[str],
        typer.Option("--arm", help="NAME=VERSION:WEIGHT, repeated; weights add up to 100."),
    ],
) -> None:
    """Start an A/B experiment: traffic split across fixed-weight arms (admin)."""
    parsed = [parse_arm(a) for a in arms]
    if len(parsed) < 2:
        usage("--arm: an experiment needs at least two arms")
    total = sum(a.weight for a in parsed)
    if abs(total - 100) > 1e-9:
        usage(f"--arm: the weights add up to {total:g}, not 100")
    with rollout_service(ctx) as (stub, md):
        exp = stub.StartExperiment(
            pb.StartExperimentRequest(model=model, arms=parsed), metadata=md, timeout=30
        ).experiment
    _print_experiment("started", exp)


def experiment_stop(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Option("--id", help="Experiment id.")],
) -> None:
    """Stop an experiment: its model's traffic goes back to production (admin)."""
    with rollout_service(ctx) as (stub, md):
        exp = stub.StopExperiment(
            pb.StopExperimentRequest(experiment_id=experiment_id), metadata=md, timeout=30
        ).experiment
    _print_experiment("stopped", exp)


def _print_experiment(what: str, exp: pb.Experiment) -> None:
    table = Table("arm", "version", "weight", title=f"experiment {exp.id} on {escape(exp.model)}: {what}")
    for a in exp.arms:
        table.add_row(escape(a.name), f"v{a.version}", f"{a.weight:g}%")
    out.print(table)
