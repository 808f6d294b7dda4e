"""``finpredict rollout status``: one look, or follow the rollout until it ends (``--wait``,
``--watch``), riding out a briefly unreachable gateway."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Annotated, Any

import grpc
import typer
from rich.live import Live
from rich.markup import escape

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.common.rollout_statistics import decision_statistics
from finpredict.gateway.cli._common import (
    EXIT_NOT_PROMOTED,
    EXIT_TIMEOUT,
    err,
    out,
    rollout_service,
    to_json,
    usage,
)
from finpredict.gateway.cli.render import ENDED, render_rollout, rollout_line, styled_state
from finpredict.gateway.cli.values import fmt_time, parse_duration

POLL_S = 1.0  # how often --wait / --watch ask for the rollout
RECONNECT_GRACE_S = 60.0  # how long --wait / --watch ride out an unreachable gateway


def get_rollout(
    stub: rollout_pb2_grpc.RolloutServiceStub, md: Any, model: str, rollout_id: str
) -> pb.Rollout:
    req = pb.GetRolloutRequest(rollout_id=rollout_id) if rollout_id else pb.GetRolloutRequest(model=model)
    return stub.GetRollout(req, metadata=md, timeout=10).rollout


class _TimedOutError(Exception):
    pass


def follow(
    stub: rollout_pb2_grpc.RolloutServiceStub,
    md: Any,
    rollout_id: str,
    on_update: Callable[[pb.Rollout], None],
    timeout_s: float | None,
) -> pb.Rollout:
    """Polls the rollout every POLL_S until it ends; rides out a briefly unreachable gateway."""
    deadline = time.monotonic() + timeout_s if timeout_s else None
    down_since: float | None = None
    while True:
        try:
            r = get_rollout(stub, md, "", rollout_id)
        except grpc.RpcError as exc:
            code = exc.code()  # type: ignore[attr-defined]
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise
            now = time.monotonic()
            if down_since is None:
                down_since = now
                err.print(
                    f"warning: {code.name} asking the gateway, retrying for up to {RECONNECT_GRACE_S:g}s"
                )
            if now - down_since > RECONNECT_GRACE_S:
                raise
        else:
            down_since = None
            on_update(r)
            if r.state in ENDED:
                return r
        if deadline is not None and time.monotonic() >= deadline:
            raise _TimedOutError
        time.sleep(POLL_S)


def _decision_key(d: pb.Decision) -> tuple[int, int, int, str]:
    return (d.time.seconds, d.time.nanos, d.step_index, d.verdict)


def status(
    ctx: typer.Context,
    model: Annotated[
        str, typer.Option("--model", "-m", help="The model's current (or latest) rollout.")
    ] = "",
    rollout_id: Annotated[str, typer.Option("--id", help="A rollout id.")] = "",
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", help="Block until the rollout ends: exit 0 if PROMOTED, 3 if ROLLED_BACK or ABORTED."
        ),
    ] = False,
    watch: Annotated[
        bool, typer.Option("--watch", help="Refresh the view every second until the rollout ends.")
    ] = False,
    timeout: Annotated[
        str, typer.Option(help="With --wait/--watch: give up after this long (exit 4), e.g. 30m.")
    ] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the rollout as JSON.")] = False,
) -> None:
    """Show a rollout: versions, state, steps, per-variant metrics and decisions."""
    if bool(model) == bool(rollout_id):
        usage("give exactly one of --model or --id")
    if as_json and watch:
        usage("--json and --watch do not go together (use --json --wait)")
    timeout_s = parse_duration(timeout, "--timeout") if timeout else None
    with rollout_service(ctx) as (stub, md):
        r = get_rollout(stub, md, model, rollout_id)
        if not (wait or watch):
            if as_json:
                typer.echo(to_json(r))
            else:
                out.print(render_rollout(r))
            return
        try:
            if watch:
                with Live(render_rollout(r), console=out, auto_refresh=False) as live:

                    def show(current: pb.Rollout) -> None:
                        live.update(render_rollout(current), refresh=True)

                    r = follow(stub, md, r.id, show, timeout_s)
            else:
                seen: set[tuple[int, int, int, str]] = set()

                def progress(current: pb.Rollout) -> None:
                    for d in current.decisions:
                        key = _decision_key(d)
                        if key in seen:
                            continue
                        seen.add(key)
                        if not as_json:
                            drove = decision_statistics(d)
                            out.print(
                                f"{fmt_time(d.time)} step {d.step_index + 1} {d.verdict}: {escape(d.reason)}"
                                + (f" ({escape(drove)})" if drove else ""),
                                soft_wrap=True,
                            )

                if not as_json:
                    out.print(rollout_line(r), soft_wrap=True)
                r = follow(stub, md, r.id, progress, timeout_s)
                if as_json:
                    typer.echo(to_json(r))
                else:
                    out.print(render_rollout(r))
        except _TimedOutError:
            err.print(
                f"[red]error:[/red] --timeout: rollout {r.id} has not ended after {timeout}", soft_wrap=True
            )
            raise typer.Exit(EXIT_TIMEOUT) from None
    if wait:
        if not as_json:
            out.print(f"rollout {r.id} ended {styled_state(r.state)}", soft_wrap=True)
        if r.state != pb.ROLLOUT_STATE_PROMOTED:
            raise typer.Exit(EXIT_NOT_PROMOTED)
