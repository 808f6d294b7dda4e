"""``finpredict rollout ...`` and ``finpredict score``: the gateway from the command line.

The gateway address comes from ``--target`` or ``FINPREDICT_GATEWAY_TARGET`` (default
``127.0.0.1:50051``), the bearer token from ``--token`` or ``FINPREDICT_TOKEN`` (the variable the
registry's CLI reads too). Reads and scoring need a ``reader`` token, every rollout, shadow and
experiment change an ``admin`` one.

Exit codes: 0 done; 1 the gateway refused or failed the call (``error: CODE: details`` and a
hint on stderr); 2 bad usage or bad input (nothing was sent); 3 ``rollout status --wait`` saw
the rollout end ROLLED_BACK or ABORTED; 4 ``--wait``/``--watch`` ran past ``--timeout``.
"""

from __future__ import annotations

import csv
import datetime as dt
import itertools
import json
import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, NoReturn

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from finpredict.api.common.v1 import types_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.common.auth import bearer_metadata

TARGET_ENV = "FINPREDICT_GATEWAY_TARGET"
TOKEN_ENV = "FINPREDICT_TOKEN"
DEFAULT_TARGET = "127.0.0.1:50051"

EXIT_USAGE = 2
EXIT_NOT_PROMOTED = 3
EXIT_TIMEOUT = 4

BATCH_ROWS = 500  # applications per ScoreBatch call
POLL_S = 1.0  # how often --wait / --watch ask for the rollout
RECONNECT_GRACE_S = 60.0  # how long --wait / --watch ride out an unreachable gateway
DECISIONS_SHOWN = 15  # newest decisions in the status view
ENTITY_KEY = "entity_id"

ENDED = (pb.ROLLOUT_STATE_PROMOTED, pb.ROLLOUT_STATE_ROLLED_BACK, pb.ROLLOUT_STATE_ABORTED)
_STATE_STYLE = {
    pb.ROLLOUT_STATE_PROGRESSING: "cyan",
    pb.ROLLOUT_STATE_PAUSED: "yellow",
    pb.ROLLOUT_STATE_PROMOTED: "green",
    pb.ROLLOUT_STATE_ROLLED_BACK: "red",
    pb.ROLLOUT_STATE_ABORTED: "red",
}
_VARIANTS = {
    spb.VARIANT_STABLE: "stable",
    spb.VARIANT_CANARY: "canary",
    spb.VARIANT_EXPERIMENT: "experiment",
}

rollout_app = typer.Typer(
    help="Canary rollouts, shadow traffic and A/B experiments on the gateway.",
    no_args_is_help=True,
    add_completion=False,
)
experiment_app = typer.Typer(help="A/B experiments with fixed-weight arms.", no_args_is_help=True)
rollout_app.add_typer(experiment_app, name="experiment")
score_app = typer.Typer(
    help="Score applications through the gateway.", subcommand_metavar="", add_completion=False
)

out = Console()
err = Console(stderr=True)


@dataclass
class _Conn:
    target: str
    token: str


TargetOption = Annotated[str, typer.Option("--target", envvar=TARGET_ENV, help="Gateway address host:port.")]
TokenOption = Annotated[
    str, typer.Option("--token", envvar=TOKEN_ENV, help="Bearer token.", show_default=False)
]


# ----- errors ----------------------------------------------------------------------------------


def _usage(message: str) -> NoReturn:
    """Bad usage or bad input: nothing was sent to the gateway."""
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(EXIT_USAGE)


def _hint(code: grpc.StatusCode, details: str, target: str) -> str | None:
    d = details.lower()
    if code == grpc.StatusCode.UNAUTHENTICATED:
        return f"set a valid gateway token with --token or {TOKEN_ENV}"
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return (
            "rollout, shadow and experiment changes need a token with the admin role "
            "(status, list and scoring need reader)"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if "model server" in d or "circuit" in d:
            return (
                "the gateway answered, but its model server did not: is the model server running "
                "(the gateway's FINPREDICT_GATEWAY_MODEL_SERVER_TARGET)? Retry once it is up."
            )
        if "registry" in d:
            return (
                "the gateway answered, but cannot reach the registry "
                "(the gateway's FINPREDICT_GATEWAY_REGISTRY_TARGET)"
            )
        return f"is the gateway running at {target}? (--target or {TARGET_ENV})"
    if code == grpc.StatusCode.NOT_FOUND:
        if "rollout" in d:
            return "list rollouts with `finpredict rollout list`"
        if "experiment" in d:
            return "the experiment is not running (or the id is wrong)"
        return "check the model name and version with `finpredict models list MODEL`"
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        if "production" in d:
            return "the model needs a production version first: `finpredict models promote MODEL VERSION`"
        if "experiment" in d:
            return "stop the experiment first: `finpredict rollout experiment stop --id ID`"
        if "active rollout" in d:
            return "see it with `finpredict rollout status --model MODEL`; finish or abort it first"
        if "ended" in d or "only a running" in d or "cannot" in d:
            return "the rollout is not in a state that allows this: `finpredict rollout status --id ID`"
        return None
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "the gateway did not answer in time: retry, or check its logs"
    return None


def _rpc_error(exc: grpc.RpcError, target: str, hint: str | None = None) -> NoReturn:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    err.print(f"[red]error:[/red] {code.name}: {escape(details)}", soft_wrap=True)
    hint = hint or _hint(code, details, target)
    if hint:
        err.print(f"hint: {escape(hint)}", soft_wrap=True)
    raise typer.Exit(1)


@contextmanager
def _channel(conn: _Conn) -> Iterator[tuple[grpc.Channel, tuple[tuple[str, str], ...]]]:
    """A channel to the gateway and the call metadata; RPC errors end the command with a hint."""
    if not conn.token:
        _usage(f"no token: pass --token or set {TOKEN_ENV}")
    channel = grpc.insecure_channel(conn.target)
    try:
        yield channel, bearer_metadata(conn.token)
    except grpc.RpcError as exc:
        _rpc_error(exc, conn.target)
    finally:
        channel.close()


@contextmanager
def _rollouts(ctx: typer.Context) -> Iterator[tuple[rollout_pb2_grpc.RolloutServiceStub, Any]]:
    with _channel(ctx.obj) as (channel, md):
        yield rollout_pb2_grpc.RolloutServiceStub(channel), md


# ----- values ----------------------------------------------------------------------------------

_DURATION = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(ms|s|m|h)?\s*$")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, option: str) -> float:
    """``90s``, ``2m``, ``1.5s``, ``500ms``, ``1h`` (a bare number is seconds) → seconds > 0."""
    m = _DURATION.match(text)
    seconds = float(m.group(1)) * _UNIT_S[m.group(2) or "s"] if m else -1.0
    if not m or not math.isfinite(seconds) or seconds <= 0:
        _usage(f"{option}: {text!r} is not a positive duration (use e.g. 90s, 2m, 1.5s, 500ms)")
    return seconds


def parse_steps(text: str, option: str = "--steps") -> list[float]:
    """``1,5,25,100`` (``%`` allowed) → increasing weights in (0, 100] that end at 100."""
    steps: list[float] = []
    for part in text.split(","):
        item = part.strip().removesuffix("%").strip()
        try:
            value = float(item)
        except ValueError:
            _usage(f"{option}: {part.strip()!r} is not a number (use e.g. 1,5,25,100)")
        if not 0 < value <= 100:
            _usage(f"{option}: {value:g} is outside (0, 100]: steps are canary weights in percent")
        steps.append(value)
    if any(b <= a for a, b in itertools.pairwise(steps)):
        _usage(f"{option}: steps must increase, got {text!r}")
    if steps[-1] != 100:
        _usage(f"{option}: the last step must be 100 (full traffic), got {steps[-1]:g}")
    return steps


_ARM = re.compile(r"^\s*([^=\s]+)\s*=\s*(\d+)\s*:\s*(\d+(?:\.\d*)?|\.\d+)\s*%?\s*$")


def parse_arm(text: str) -> pb.ExperimentArm:
    """``name=version:weight`` → an experiment arm."""
    m = _ARM.match(text)
    if not m:
        _usage(f"--arm: {text!r} is not NAME=VERSION:WEIGHT (e.g. control=3:50)")
    version, weight = int(m.group(2)), float(m.group(3))
    if version < 1:
        _usage(f"--arm: {text!r}: the version must be >= 1")
    if not 0 < weight <= 100:
        _usage(f"--arm: {text!r}: the weight must be in (0, 100]")
    return pb.ExperimentArm(name=m.group(1), version=version, weight=weight)


def _fmt_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g}h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g}m"
    return f"{seconds:g}s"


def _time(ts: Timestamp) -> str:
    if not ts.seconds and not ts.nanos:
        return "-"
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _state(state: int) -> str:
    return pb.RolloutState.Name(state).removeprefix("ROLLOUT_STATE_")  # type: ignore[arg-type]


def _styled_state(state: int) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{_state(state)}[/]"  # type: ignore[call-overload]


def _to_json(msg: Message) -> str:
    return json.dumps(_to_dict(msg), indent=2)


def _to_dict(msg: Message) -> dict[str, Any]:
    return json_format.MessageToDict(
        msg,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
        unquote_int64_if_possible=True,
    )


# ----- rollout ---------------------------------------------------------------------------------


@rollout_app.callback()
def _rollout_options(
    ctx: typer.Context, target: TargetOption = DEFAULT_TARGET, token: TokenOption = ""
) -> None:
    """Canary rollouts, shadow traffic and A/B experiments on the gateway."""
    ctx.obj = _Conn(target, token)


def _steps_line(r: pb.Rollout) -> str:
    parts = []
    for i, w in enumerate(r.steps):
        label = f"{w:g}%"
        parts.append(f"[bold reverse] ▶ {label} [/]" if i == r.step_index else label)
    return " → ".join(parts)


def _thresholds_line(t: pb.AnalysisThresholds) -> str:
    return (
        f"error rate increase ≤ {t.max_error_rate_increase:g}, p99 ≤ {t.max_p99_latency_ms:g} ms, "
        f"p99 ratio ≤ {t.max_p99_latency_ratio:g}, score PSI ≤ {t.max_score_psi:g}, "
        f"score KL ≤ {t.max_score_kl:g}, AUC drop ≤ {t.max_auc_drop:g}"
    )


def render_rollout(r: pb.Rollout) -> RenderableType:
    """The status view of one rollout: summary, per-variant metrics, decisions."""
    summary = Table(show_header=False, box=None, pad_edge=False, title_justify="left")
    summary.title = f"rollout {r.id}: {r.model} v{r.stable_version} → v{r.candidate_version}"
    summary.add_column(style="bold")
    summary.add_column()
    step = f"step {r.step_index + 1} of {len(r.steps)}" if r.steps else "no steps"
    ended = r.state in ENDED
    summary.add_row("model", escape(r.model))
    summary.add_row("stable", f"v{r.stable_version}")
    summary.add_row("candidate", f"v{r.candidate_version}")
    summary.add_row("state", _styled_state(r.state))
    summary.add_row("weight", f"{r.weight:g}% to the canary ({step})")
    summary.add_row("steps", _steps_line(r))
    summary.add_row(
        "analysis",
        f"every {_fmt_duration(r.analysis_interval.ToTimedelta().total_seconds())}, "
        f"at least {r.min_requests_per_step} requests per variant per step",
    )
    summary.add_row("thresholds", _thresholds_line(r.thresholds))
    started = f"{_time(r.started_at)} by {escape(r.started_by or '-')}"
    summary.add_row("started", started)
    if ended:
        summary.add_row("ended", _time(r.ended_at))
    parts: list[RenderableType] = [summary]

    if r.metrics:
        metrics = Table(
            "variant", "version", "requests", "error rate", "p50 ms", "p99 ms", "mean score",
            title="current analysis window", title_justify="left",
        )  # fmt: skip
        for m in r.metrics:
            metrics.add_row(
                m.variant,
                f"v{m.version}",
                str(m.requests),
                f"{m.error_rate:.2%}",
                f"{m.p50_latency_ms:.1f}",
                f"{m.p99_latency_ms:.1f}",
                f"{m.mean_score:.4f}",
            )
        parts.append(metrics)
    elif not ended:
        parts.append(Text("no metrics yet (no analysis window open)", style="dim"))

    if r.decisions:
        shown = r.decisions[-DECISIONS_SHOWN:]
        title = "decisions" + (
            f" (newest {len(shown)} of {len(r.decisions)})" if len(shown) < len(r.decisions) else ""
        )
        decisions = Table("time", "step", "verdict", "reason", title=title, title_justify="left")
        for d in shown:
            decisions.add_row(_time(d.time), str(d.step_index + 1), d.verdict, escape(d.reason))
        parts.append(decisions)
        last = r.decisions[-1]
        parts.append(Text.assemble(("last decision: ", "bold"), f"{last.verdict}: {last.reason}"))
    return Group(*parts)


def _rollout_line(r: pb.Rollout) -> str:
    return (
        f"rollout [bold]{r.id}[/bold]: {escape(r.model)} v{r.stable_version} → v{r.candidate_version}, "
        f"{_styled_state(r.state)}, canary weight {r.weight:g}%"
    )


def _threshold_values(**values: float | None) -> pb.AnalysisThresholds:
    t = pb.AnalysisThresholds()
    for name, value in values.items():
        if value is None:
            continue
        if not math.isfinite(value) or value <= 0:
            _usage(f"--{name.replace('_', '-')}: {value:g} must be a positive number")
        setattr(t, name, value)
    return t


@rollout_app.command()
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
        float | None, typer.Option(help="Absolute p99 latency SLO (ms).", show_default=False)
    ] = None,
    max_p99_latency_ratio: Annotated[
        float | None, typer.Option(help="Largest canary p99 / stable p99.", show_default=False)
    ] = None,
    max_score_psi: Annotated[
        float | None, typer.Option(help="Largest PSI of canary against stable scores.", show_default=False)
    ] = None,
    max_score_kl: Annotated[
        float | None, typer.Option(help="Largest KL of canary against stable scores.", show_default=False)
    ] = None,
    max_auc_drop: Annotated[
        float | None, typer.Option(help="Largest AUC drop when labels exist.", show_default=False)
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
    with _rollouts(ctx) as (stub, md):
        r = stub.StartRollout(req, metadata=md, timeout=30).rollout
    if as_json:
        typer.echo(_to_json(r))
        return
    out.print(f"started {_rollout_line(r)}", soft_wrap=True)
    every = _fmt_duration(r.analysis_interval.ToTimedelta().total_seconds())
    out.print(
        f"steps {_steps_line(r)}, analysis every {every}"
        f", at least {r.min_requests_per_step} requests per variant per step",
        soft_wrap=True,
    )
    out.print(f"follow it: finpredict rollout status --id {r.id} --watch", soft_wrap=True)


def _get(stub: rollout_pb2_grpc.RolloutServiceStub, md: Any, model: str, rollout_id: str) -> pb.Rollout:
    req = pb.GetRolloutRequest(rollout_id=rollout_id) if rollout_id else pb.GetRolloutRequest(model=model)
    return stub.GetRollout(req, metadata=md, timeout=10).rollout


class _TimedOutError(Exception):
    pass


def _follow(
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
            r = _get(stub, md, "", rollout_id)
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


@rollout_app.command()
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
        _usage("give exactly one of --model or --id")
    if as_json and watch:
        _usage("--json and --watch do not go together (use --json --wait)")
    timeout_s = parse_duration(timeout, "--timeout") if timeout else None
    with _rollouts(ctx) as (stub, md):
        r = _get(stub, md, model, rollout_id)
        if not (wait or watch):
            if as_json:
                typer.echo(_to_json(r))
            else:
                out.print(render_rollout(r))
            return
        try:
            if watch:
                with Live(render_rollout(r), console=out, auto_refresh=False) as live:

                    def show(current: pb.Rollout) -> None:
                        live.update(render_rollout(current), refresh=True)

                    r = _follow(stub, md, r.id, show, timeout_s)
            else:
                seen: set[tuple[int, int, int, str]] = set()

                def progress(current: pb.Rollout) -> None:
                    for d in current.decisions:
                        key = _decision_key(d)
                        if key in seen:
                            continue
                        seen.add(key)
                        if not as_json:
                            out.print(
                                f"{_time(d.time)} step {d.step_index + 1} {d.verdict}: {escape(d.reason)}",
                                soft_wrap=True,
                            )

                if not as_json:
                    out.print(_rollout_line(r), soft_wrap=True)
                r = _follow(stub, md, r.id, progress, timeout_s)
                if as_json:
                    typer.echo(_to_json(r))
                else:
                    out.print(render_rollout(r))
        except _TimedOutError:
            err.print(
                f"[red]error:[/red] --timeout: rollout {r.id} has not ended after {timeout}", soft_wrap=True
            )
            raise typer.Exit(EXIT_TIMEOUT) from None
    if wait:
        if not as_json:
            out.print(f"rollout {r.id} ended {_styled_state(r.state)}", soft_wrap=True)
        if r.state != pb.ROLLOUT_STATE_PROMOTED:
            raise typer.Exit(EXIT_NOT_PROMOTED)


@rollout_app.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Only this model's rollouts.")] = "",
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print the rollouts as a JSON array.")] = False,
) -> None:
    """List rollouts, newest first."""
    rollouts: list[pb.Rollout] = []
    with _rollouts(ctx) as (stub, md):
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
        typer.echo(json.dumps([_to_dict(r) for r in rollouts], indent=2))
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
            _styled_state(r.state),
            f"{r.step_index + 1}/{len(r.steps)}",
            f"{r.weight:g}%",
            _time(r.started_at),
            escape(r.started_by),
            _time(r.ended_at),
        )
    out.print(table)


def _change(ctx: typer.Context, action: str, rollout_id: str, reason: str) -> None:
    with _rollouts(ctx) as (stub, md):
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
    out.print(f"{action}: {_rollout_line(r)}", soft_wrap=True)
    if r.decisions:
        last = r.decisions[-1]
        out.print(f"last decision: {last.verdict}: {escape(last.reason)}", soft_wrap=True)


IdOption = Annotated[str, typer.Option("--id", help="Rollout id (see `finpredict rollout list`).")]
ReasonOption = Annotated[str, typer.Option(help="Why (kept in the rollout's decisions).")]


@rollout_app.command()
def pause(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Hold a rollout at its current step (admin)."""
    _change(ctx, "pause", rollout_id, reason)


@rollout_app.command()
def resume(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Resume a paused rollout with a fresh analysis window (admin)."""
    _change(ctx, "resume", rollout_id, reason)


@rollout_app.command()
def abort(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Stop a rollout: canary weight to 0, the registry's aliases untouched (admin)."""
    _change(ctx, "abort", rollout_id, reason)


@rollout_app.command()
def promote(ctx: typer.Context, rollout_id: IdOption, reason: ReasonOption = "") -> None:
    """Promote the candidate now, skipping the remaining steps (admin)."""
    _change(ctx, "promote", rollout_id, reason)


@rollout_app.command()
def shadow(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="Version to mirror to; 0 stops.", min=0)],
    percent: Annotated[float, typer.Option(help="Share of traffic mirrored, in percent.")] = 100.0,
) -> None:
    """Mirror a share of a model's traffic to VERSION asynchronously (admin); --version 0 stops."""
    if version and not 0 < percent <= 100:
        _usage(f"--percent: {percent:g} is outside (0, 100]")
    with _rollouts(ctx) as (stub, md):
        resp = stub.SetShadow(
            pb.SetShadowRequest(model=model, version=version, percent=percent if version else 0),
            metadata=md,
            timeout=30,
        )
    if resp.version:
        out.print(f"shadow: mirroring {resp.percent:g}% of {escape(model)} traffic to v{resp.version}")
    else:
        out.print(f"shadow: off for {escape(model)}")


@experiment_app.command("start")
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
        _usage("--arm: an experiment needs at least two arms")
    total = sum(a.weight for a in parsed)
    if abs(total - 100) > 1e-9:
        _usage(f"--arm: the weights add up to {total:g}, not 100")
    with _rollouts(ctx) as (stub, md):
        exp = stub.StartExperiment(
            pb.StartExperimentRequest(model=model, arms=parsed), metadata=md, timeout=30
        ).experiment
    _print_experiment("started", exp)


@experiment_app.command("stop")
def experiment_stop(
    ctx: typer.Context,
    experiment_id: Annotated[str, typer.Option("--id", help="Experiment id.")],
) -> None:
    """Stop an experiment: its model's traffic goes back to production (admin)."""
    with _rollouts(ctx) as (stub, md):
        exp = stub.StopExperiment(
            pb.StopExperimentRequest(experiment_id=experiment_id), metadata=md, timeout=30
        ).experiment
    _print_experiment("stopped", exp)


def _print_experiment(what: str, exp: pb.Experiment) -> None:
    table = Table("arm", "version", "weight", title=f"experiment {exp.id} on {escape(exp.model)}: {what}")
    for a in exp.arms:
        table.add_row(escape(a.name), f"v{a.version}", f"{a.weight:g}%")
    out.print(table)


# ----- score -----------------------------------------------------------------------------------


class InputError(Exception):
    """A bad application in an input file; the message names the file, the line and the key."""


@dataclass
class _Row:
    application: spb.Application
    line: int  # where it came from (0 for --features)


def _where(path: Path, line: int, key: str | None, noun: str) -> str:
    return f"{path}, line {line}" + (f", {noun} {key!r}" if key is not None else "")


def _locator(path: Path, line: int, noun: str) -> Callable[[str | None], str]:
    return lambda key: _where(path, line, key, noun)


def _json_value(value: Any) -> types_pb2.FeatureValue | str:
    """A JSON value as a feature (or the reason it cannot be one)."""
    if value is None or value == "":
        return types_pb2.FeatureValue()
    if isinstance(value, bool):
        return f"{json.dumps(value)} is neither a number nor a string"
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return "the number is too large"
        return types_pb2.FeatureValue(number=number)
    if isinstance(value, str):
        return types_pb2.FeatureValue(category=value)
    kind = (
        "an object" if isinstance(value, dict) else "a list" if isinstance(value, list) else "another value"
    )
    return f"expected a number, a string or null, got {kind}"


def _entity_id(value: Any) -> str | None:
    if isinstance(value, str) and value.strip():
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def _application_from_object(
    doc: Any, where: Callable[[str | None], str], entity_id: str = ""
) -> spb.Application:
    if not isinstance(doc, dict):
        raise InputError(f"{where(None)}: expected a JSON object, got {json.dumps(doc)[:40]}")
    app = spb.Application()
    if ENTITY_KEY in doc:
        eid = _entity_id(doc[ENTITY_KEY])
        if eid is None:
            raise InputError(f"{where(ENTITY_KEY)}: must be a non-empty string (or an integer)")
        app.entity_id = eid
    if entity_id:
        app.entity_id = entity_id
    if not app.entity_id:
        raise InputError(f"{where(ENTITY_KEY)}: required (routing is sticky per entity)")
    for key, value in doc.items():
        if key == ENTITY_KEY:
            continue
        got = _json_value(value)
        if isinstance(got, str):
            raise InputError(f"{where(key)}: {got}")
        app.features[key].CopyFrom(got)
    return app


def read_jsonl(path: Path) -> list[_Row]:
    """One JSON object per line: ``entity_id`` and features; blank lines are skipped."""
    rows: list[_Row] = []
    with path.open(encoding="utf-8-sig") as f:
        n = 0
        while True:
            try:
                line = f.readline()
            except UnicodeDecodeError as exc:
                raise InputError(f"{path}, line {n + 1}: not UTF-8 text ({exc.reason})") from None
            if not line:
                break
            n += 1
            if not line.strip():
                continue
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(
                    f"{path}, line {n}: not valid JSON: {exc.msg} (column {exc.colno})"
                ) from None
            except RecursionError:
                raise InputError(f"{path}, line {n}: JSON nested too deeply") from None
            rows.append(_Row(_application_from_object(doc, _locator(path, n, "key")), n))
    return rows


def _csv_value(text: str) -> types_pb2.FeatureValue:
    stripped = text.strip()
    if not stripped or stripped.lower() == "null":
        return types_pb2.FeatureValue()
    try:
        return types_pb2.FeatureValue(number=float(stripped))
    except ValueError:
        return types_pb2.FeatureValue(category=stripped)


def read_csv(path: Path) -> list[_Row]:
    """A header row with an ``entity_id`` column; one application per row; empty cells are missing."""
    rows: list[_Row] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f)
        try:
            header = next(reader, None)
            if header is None:
                raise InputError(f"{path}: empty file (expected a header row with an {ENTITY_KEY} column)")
            names = [h.strip() for h in header]
            for i, name in enumerate(names):
                if not name:
                    raise InputError(f"{path}, line {reader.line_num}: column {i + 1} has no name")
                if name in names[:i]:
                    raise InputError(f"{path}, line {reader.line_num}, column {name!r}: appears twice")
            if ENTITY_KEY not in names:
                raise InputError(f"{path}, line {reader.line_num}: no {ENTITY_KEY!r} column in the header")
            for record in reader:
                line = reader.line_num
                if not record or all(not cell.strip() for cell in record):
                    continue
                if len(record) != len(names):
                    raise InputError(
                        f"{path}, line {line}: {len(record)} fields, but the header has {len(names)}"
                    )
                app = spb.Application()
                for name, cell in zip(names, record, strict=True):
                    if name == ENTITY_KEY:
                        if not cell.strip():
                            raise InputError(f"{_where(path, line, name, 'column')}: empty entity id")
                        app.entity_id = cell.strip()
                    else:
                        app.features[name].CopyFrom(_csv_value(cell))
                rows.append(_Row(app, line))
        except csv.Error as exc:
            raise InputError(f"{path}, line {reader.line_num}: bad CSV: {exc}") from None
        except UnicodeDecodeError as exc:
            raise InputError(f"{path}, line {reader.line_num + 1}: not UTF-8 text ({exc.reason})") from None
    return rows


def read_applications(path: Path) -> list[_Row]:
    """Applications from a ``.jsonl``/``.ndjson`` or ``.csv`` file (raises :class:`InputError`)."""
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".ndjson", ".csv"):
        raise InputError(
            f"{path}: unknown file type {suffix or '(none)'!r}: use .jsonl (one JSON object per line) or .csv"
        )
    try:
        rows = read_csv(path) if suffix == ".csv" else read_jsonl(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise InputError(f"{path}: no applications in the file")
    return rows


def _reasons(s: spb.Score) -> str:
    return ", ".join(f"{c.code} {c.feature} ({c.contribution:+.3f})" for c in s.reason_codes)


def _variant(s: spb.Score) -> str:
    name = _VARIANTS.get(s.variant, "-")
    return f"{name} ({s.arm})" if s.arm else name


def _decision(s: spb.Score) -> str:
    if s.decision == spb.DECISION_DECLINE:
        return "[red]decline[/red]"
    if s.decision == spb.DECISION_APPROVE:
        return "[green]approve[/green]"
    return "-"


_APP_INDEX = re.compile(r"^applications\[(\d+)\]")


@score_app.callback(invoke_without_command=True)
def score(
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    entity_id: Annotated[
        str, typer.Option("--entity-id", "-e", help="Entity id of the application (with --features).")
    ] = "",
    features: Annotated[
        str, typer.Option(help="One application's features as a JSON object, e.g. '{\"debt\": 1.0}'.")
    ] = "",
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            "-f",
            help="Applications, one per line (.jsonl) or row (.csv), each with an entity_id.",
            show_default=False,
        ),
    ] = None,
    explain: Annotated[bool, typer.Option("--explain", help="Return adverse-action reason codes.")] = False,
    top_k: Annotated[
        int | None,
        typer.Option(help="Reason codes per application (implies --explain; default 4).", min=1, max=45),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object per application.")] = False,
    target: TargetOption = DEFAULT_TARGET,
    token: TokenOption = "",
) -> None:
    """Score applications: one with --entity-id and --features, or a file with --file.

    File input: numbers become numeric features, strings categories, empty or null values
    missing ones. Files are checked completely before anything is sent.
    """
    if bool(features) == (file is not None):
        _usage("give exactly one of --features (with --entity-id) or --file")
    explain = explain or top_k is not None
    if file is not None:
        if entity_id:
            _usage("--entity-id goes with --features; a --file has an entity_id per application")
        try:
            rows = read_applications(file)
        except InputError as exc:
            _usage(str(exc))
    else:
        try:
            doc = json.loads(features)
        except json.JSONDecodeError as exc:
            _usage(f"--features: not valid JSON: {exc.msg} (column {exc.colno})")
        if not entity_id and not (isinstance(doc, dict) and ENTITY_KEY in doc):
            _usage(f"--entity-id: required with --features (or an {ENTITY_KEY} key in the JSON)")
        try:
            app = _application_from_object(
                doc, lambda key: "--features" + (f", key {key!r}" if key else ""), entity_id
            )
        except InputError as exc:
            _usage(str(exc))
        rows = [_Row(app, 0)]

    results: list[spb.Score] = []
    conn = _Conn(target, token)
    with _channel(conn) as (channel, md):
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for start_at in range(0, len(rows), BATCH_ROWS):
            batch = rows[start_at : start_at + BATCH_ROWS]
            try:
                if file is None:
                    got = [
                        stub.Score(
                            spb.ScoreRequest(
                                model=model,
                                application=batch[0].application,
                                explain=explain,
                                top_k=top_k or 0,
                            ),
                            metadata=md,
                            timeout=30,
                        ).result
                    ]
                else:
                    got = list(
                        stub.ScoreBatch(
                            spb.ScoreBatchRequest(
                                model=model,
                                applications=[r.application for r in batch],
                                explain=explain,
                                top_k=top_k or 0,
                            ),
                            metadata=md,
                            timeout=60,
                        ).results
                    )
            except grpc.RpcError as exc:
                _score_error(exc, conn.target, file, batch, start_at, as_json)
            if as_json:
                for s in got:
                    typer.echo(json.dumps(_to_dict(s)))
            results.extend(got)
    if as_json:
        return
    table = Table("entity", "score", "decision", "version", "variant", title=f"scores of {escape(model)}")
    if explain:
        table.add_column("reason codes")
    for s in results:
        cells = [escape(s.entity_id), f"{s.score:.4f}", _decision(s), f"v{s.model.version}", _variant(s)]
        if explain:
            cells.append(escape(_reasons(s)))
        table.add_row(*cells)
    out.print(table)
    if len(results) > 1:
        declined = sum(1 for s in results if s.decision == spb.DECISION_DECLINE)
        out.print(f"{len(results)} applications: {len(results) - declined} approved, {declined} declined")


def _score_error(
    exc: grpc.RpcError, target: str, file: Path | None, batch: Sequence[_Row], start_at: int, as_json: bool
) -> NoReturn:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    hint = None
    m = _APP_INDEX.match(details)
    if file is not None and code == grpc.StatusCode.INVALID_ARGUMENT and m and int(m.group(1)) < len(batch):
        row = batch[int(m.group(1))]
        hint = f"applications[{m.group(1)}] is {file}, line {row.line} (entity {row.application.entity_id!r})"
    if start_at:
        scored = f"{start_at} applications were scored before this batch"
        err.print(f"note: {scored}" + (" (printed above)" if as_json else ""))
    _rpc_error(exc, target, hint)
