"""``finpredict rollout start|list|pause|resume|abort|promote``: canary rollouts (``status`` is in
:mod:`~finpredict.gateway.cli.status`)."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.cli._common import (
    TargetOption,
    TokenOption,
    connection,
    out,
    rollout_service,
    to_dict,
    to_json,
    usage,
)
from finpredict.gateway.cli.render import rollout_line, steps_line, styled_state
from finpredict.gateway.cli.values import fmt_duration, fmt_time, parse_duration, parse_steps


def options(ctx: typer.Context, target: TargetOption = None, token: TokenOption = None) -> None:
    """Canary rollouts, shadow traffic and A/B experiments on the gateway."""
    ctx.obj = connection(target, token)


def _threshold_values(**values: float | None) -> pb.AnalysisThresholds:
    t = pb.AnalysisThresholds()
    for name, value in values.items():
        if value is None:
            continue
        if not math.isfinite(value) or value <= 0:
            usage(f"--{name.replace('_', '-')}: {value:g} must be a positive number")
        setattr(t, name, value)
    return t


def start(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="Candidate version.", min=1)],
    steps: Annotated[
        str, typer.Option(help="Canary weights in percent, increasing, ending at 100.")
    ] = "1,5,25,100",
    interval: Annotated[str, typer.Option(help="How often the analysis runs (90s, 2m, 500ms).")] = "60s",
    min_requests: Annotated[
        int, typer.Option(help="Requests each variant needs in a step before it can advance.", min=1)
    ] = 200,
    max_error_rate_increase: Annotated[
        float | None, typer.Option(help="Largest canary minus stable error rate.", show_default=False)
    ] = None,
    max_p99_latency_ms: Annotated[
        float | None,
        typer.Option(
            help="Per-application p99 latency SLO (ms), tested on single-application calls "
            "(both variants over it: the step holds).",
            show_default=False,
        ),
    ] = None,
    max_p99_latency_ratio: Annotated[
        float | None,
        typer.Option(help="Largest canary p99 / stable p99 (tested, per application).", show_default=False),
    ] = None,
    max_score_psi: Annotated[
        float | None, typer.Option(help="Largest PSI of canary against stable scores.", show_default=False)
    ] = None,
    max_score_kl: Annotated[
        float | None, typer.Option(help="Largest KL of canary against stable scores.", show_default=False)
    ] = None,
    max_auc_drop: Annotated[
        float | None,
        typer.Option(
            help="Largest tolerated AUC drop: the margin of the always-valid AUC test on delayed labels.",
            show_default=False,
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the started rollout as JSON.")] = False,
) -> None:
    """Start a canary rollout of VERSION against the model's production version (admin).

    Thresholds left out keep the gateway's defaults (the service's SLOs).
    """
    req = pb.StartRolloutRequest(
        model=model,
        candidate_version=version,
        steps=parse_steps(steps),
        min_requests_per_step=min_requests,
        thresholds=_threshold_values(
            max_error_rate_increase=max_error_rate_increase,
            max_p99_latency_ms=max_p99_latency_ms,
            max_p99_latency_ratio=max_p99_latency_ratio,
            max_score_psi=max_score_psi,
            max_score_kl=max_score_kl,
            max_auc_drop=max_auc_drop,
        ),
    )
    req.analysis_interval.FromNanoseconds(round(parse_duration(interval, "--interval") * 1e9))
    with rollout_service(ctx) as (stub, md):
        r = stub.StartRollout(req, metadata=md, timeout=30).rollout
    if as_json:
        typer.echo(to_json(r))
        return
    out.print(f"started {rollout_line(r)}", soft_wrap=True)
    every = fmt_duration(r.analysis_interval.ToTimedelta().total_seconds())
    out.print(
        f"steps {steps_line(r)}, analysis every {every}"
        f", at least {r.min_requests_per_step} requests per variant per step",
        soft_wrap=True,
    )
    out.print(f"follow it: finpredict rollout status --id {r.id} --watch", soft_wrap=True)


def list_(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Only this model's rollouts.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rollouts as a JSON array.")] = False,
) -> None:
    """List rollouts, newest first."""
    rollouts: list[pb.Rollout] = []
    with rollout_service(ctx) as (stub, md):
        token = ""
        while len(rollouts) < limit:
            resp = stub.ListRollouts(
                pb.ListRolloutsRequest(
                    model=model, page_size=min(limit - len(rollouts), 200), page_token=token
                ),
                metadata=md,
                timeout=30,
            )
            rollouts.extend(resp.rollouts)
            token = resp.next_page_token
            if not token:
                break
    if as_json:
        typer.echo(json.dumps([to_dict(r) for r in rollouts], indent=2))
        return
    table = Table(
        "id", "model", "stable", "candidate", "state", "step", "weight", "started", "by", "ended",
        title=f"rollouts of {model}" if model else "rollouts",
    )  # fmt: skip
    for r in rollouts:
        table.add_row(
            r.id,
            escape(r.model),
            f"v{r.stable_version}",
            f"v{r.candidate_version}",
            styled_state(r.state),
            f"{r.step_index + 1}/{len(r.steps)}",
            f"{r.weight:g}%",
            fmt_time(r.started_at),
            escape(r.started_by),
            fmt_time(r.ended_at),
        )
    out.print(table)


def _change(ctx: typer.Context, action: str, rollout_id: str, reason: str) -> None:
    with rollout_service(ctx) as (stub, md):
        if action == "pause":
            req_p = pb.PauseRolloutRequest(rollout_id=rollout_id, reason=reason)
            r = stub.PauseRollout(req_p, metadata=md, timeout=30).rollout
        elif action == "resume":
            req_r = pb.ResumeRolloutRequest(rollout_id=rollout_id, reason=reason)
            r = stub.ResumeRollout(req_r, metadata=md, timeout=30).rollout
        elif action == "abort":
            req_a = pb.AbortRolloutRequest(rollout_id=rollout_id, reason=reason)
            r = stub.AbortRollout(req_a, metadata=md, timeout=30).rollout
        else:
            req_x = pb.PromoteRolloutRequest(rollout_id=rollout_id, reason=reason)
            r = stub.PromoteRollout(req_x, metadata=md, timeout=60).rollout
    out.print(f"{action}: {rollout_line(r)}", soft_wrap=True)
    if r.decisions:
        last = r.decisions[-1]
        out.print(f"last decision: {last.verdict}: {escape(last.reason)}", soft_wrap=True)


IdOption = Annotated[str, typer.Option("--id", help="Rollout id (see `finpredict rollout list`).")]
ReasonOption = Annotated[str, typer.Option(help="Why (kept in the rollout's decisions).")]


def pause(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Hold a rollout at its current step (admin)."""
    _change(ctx, "pause", rollout_id, reason)


def resume(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Resume a paused rollout with a fresh analysis window (admin)."""
    _change(ctx, "resume", rollout_id, reason)


def abort(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Stop a rollout: canary weight to 0, the registry's aliases untouched (admin)."""
    _change(ctx, "abort", rollout_id, reason)


def promote(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Promote the candidate now, skipping the remaining steps (admin)."""
    _change(ctx, "promote", rollout_id, reason)
