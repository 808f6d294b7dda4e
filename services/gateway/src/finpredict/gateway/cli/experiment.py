"""``finpredict rollout experiment start|stop|status``: A/B experiments with fixed-weight arms, and
their per-arm statistics (rates with always-valid confidence intervals, effects, a stopping
recommendation)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.cli._common import out, rollout_service, to_dict, usage
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


def experiment_status(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="The model's running experiment.")] = "",
    experiment_id: Annotated[str, typer.Option("--id", help="An experiment id (running or stopped).")] = "",
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the experiment and its statistics as JSON.")
    ] = False,
) -> None:
    """Show an experiment's per-arm statistics since it started: requests, error, approval and default
    rates (defaults among approved, from delayed labels) and AUC with always-valid confidence
    intervals, each arm's effects over the first arm, and the stopping recommendation."""
    if bool(model) == bool(experiment_id):
        usage("give exactly one of --model or --id")
    with rollout_service(ctx) as (stub, md):
        got = stub.GetExperiment(
            pb.GetExperimentRequest(model=model, experiment_id=experiment_id), metadata=md, timeout=30
        )
    statistics = json.loads(got.statistics)
    if as_json:
        doc = {"experiment": to_dict(got.experiment), "replicas": got.replicas, "statistics": statistics}
        typer.echo(json.dumps(doc, indent=2))
        return
    stopped = got.experiment.stopped_at.seconds or got.experiment.stopped_at.nanos
    _print_experiment("stopped" if stopped else "running", got.experiment)
    for comparison in statistics["comparisons"]:
        _print_comparison(comparison, statistics["versions"])
    out.print(f"counts summed over {got.replicas} gateway replica(s)")


def _f(value: float | None, spec: str) -> str:
    return "n/a" if value is None else format(value, spec)


def _interval(doc: Mapping[str, Any] | None, spec: str = ".4f") -> str:
    """``estimate [lower, upper]`` of an interval record (n/a while it has no data)."""
    if not doc or doc.get("estimate") is None:
        return "n/a"
    lower, upper = doc.get("lower"), doc.get("upper")
    low = "-inf" if lower is None else format(lower, spec)
    high = "inf" if upper is None else format(upper, spec)
    return f"{format(doc['estimate'], spec)} [{low}, {high}]"


def _print_comparison(c: Mapping[str, Any], versions: Mapping[str, int]) -> None:
    arms = c["arms"]
    table = Table(
        "arm",
        "version",
        "requests",
        "error rate",
        "approval rate",
        "labels",
        "default rate (approved)",
        "AUC",
        "expected AUC",
        title=f"{escape(arms[1]['arm'])} against {escape(arms[0]['arm'])}",
    )
    for arm in arms:
        expected = arm["expected"].get("auc")
        table.add_row(
            escape(arm["arm"]),
            f"v{versions.get(arm['arm'], 0)}",
            f"{arm['requests']:,}",
            _interval(arm["error_rate"]),
            _interval(arm["approval_rate"]),
            f"{arm['auc']['n']:,}",
            _interval(arm["default_rate"]),
            _interval(arm["auc"], ".3f"),
            _f(expected, ".3f"),
        )
    out.print(table)
    effects = Table("effect (b - a)", "estimate [always-valid CI]", "alpha", "n b/a")
    for e in c["effects"]:
        effects.add_row(
            e["metric"],
            _interval(e),
            _f(e.get("alpha_spent"), ".4g"),
            f"{e['n_canary']:,}/{e['n_stable']:,}",
        )
    out.print(effects)
    srm = c["srm"]
    p = srm.get("p_value")
    out.print(f"sample ratio: {'MISMATCH' if srm['mismatch'] else 'ok'} (chi2 p {_f(p, '.3g')})")
    out.print(f"recommendation: [bold]{c['recommendation']}[/bold]: {escape(c['reason'])}", soft_wrap=True)
