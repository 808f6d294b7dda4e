"""``finpredict models ...``: the model registry from the command line.

The registry address comes from ``--target`` or ``FINPREDICT_REGISTRY_TARGET`` (default
``127.0.0.1:50052``), the bearer token from ``--token`` or ``FINPREDICT_TOKEN`` (the client
settings every command line shares, :class:`~finpredict.common.config.ClientSettings`).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common import addresses
from finpredict.common.auth import bearer_metadata
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings

TARGET_ENV = env_var_name(ClientSettings, "registry_target")
TOKEN_ENV = env_var_name(ClientSettings, "token")
MAX_VERSION = 2**63 - 1  # versions are int64 on the wire

app = typer.Typer(
    help="Model registry: list, show, lineage, promote, rollback, history, policy.", no_args_is_help=True
)
out = Console()
err = Console(stderr=True)

_HINTS = {
    grpc.StatusCode.UNAUTHENTICATED: f"set a valid token with --token or {TOKEN_ENV}",
    grpc.StatusCode.PERMISSION_DENIED: (
        "this needs a token with another role (admin: alias moves, policies; validator: gate results)"
    ),
    grpc.StatusCode.UNAVAILABLE: f"is the registry running at the target? (--target or {TARGET_ENV})",
    grpc.StatusCode.ABORTED: "the alias moved meanwhile: check `finpredict models history` and retry",
}


@dataclass
class _Conn:
    target: str
    token: str


@app.callback()
def _options(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help=f"Registry address host:port (default: {TARGET_ENV}, else {addresses.REGISTRY_ADDRESS}).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option("--token", help=f"Bearer token (default: {TOKEN_ENV}).", show_default=False)
    ] = None,
) -> None:
    """Model registry: list, show, lineage, promote, rollback, history, policy."""
    try:
        settings = load_settings(ClientSettings)
    except ConfigError as exc:
        err.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from None
    ctx.obj = _Conn(
        settings.registry_target if target is None else target,
        settings.token.get_secret_value() if token is None else token,
    )


@contextmanager
def _stub(ctx: typer.Context) -> Iterator[tuple[registry_pb2_grpc.RegistryServiceStub, Any]]:
    conn: _Conn = ctx.obj
    if not conn.token:
        err.print(f"[red]error:[/red] no token: pass --token or set {TOKEN_ENV}")
        raise typer.Exit(2)
    channel = grpc.insecure_channel(conn.target)
    try:
        yield registry_pb2_grpc.RegistryServiceStub(channel), bearer_metadata(conn.token)
    except grpc.RpcError as exc:
        code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
        err.print(f"[red]error:[/red] {code.name}: {exc.details()}")  # type: ignore[attr-defined]
        if code in _HINTS:
            err.print(f"hint: {_HINTS[code]}")
        raise typer.Exit(1) from None
    finally:
        channel.close()


def _time(ts: Timestamp) -> str:
    return dt.datetime.fromtimestamp(ts.seconds, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _gates(v: pb.ModelVersion) -> str:
    if not v.gate_results:
        return "[yellow]none[/yellow]"
    failing = [g.name for g in v.gate_results if not g.passed]
    return "[green]passed[/green]" if not failing else f"[red]failed: {', '.join(failing)}[/red]"


def _version_label(v: int) -> str:
    return str(v) if v else "-"


@app.command("list")
def list_(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="List this model's versions (else every model).")] = "",
    limit: Annotated[int, typer.Option(help="At most this many rows.", min=1, max=500)] = 50,
) -> None:
    """List models, or the versions of one model (newest first)."""
    with _stub(ctx) as (stub, md):
        if not model:
            models = stub.ListModels(pb.ListModelsRequest(page_size=limit), metadata=md, timeout=30).models
            table = Table("model", "latest", "aliases", "created", "by", "description", title="models")
            for m in models:
                aliases = ", ".join(f"{k}→{v}" for k, v in sorted(m.aliases.items()))
                table.add_row(
                    m.name, str(m.latest_version), aliases, _time(m.created_at), m.created_by, m.description
                )
            out.print(table)
            return
        resp = stub.ListVersions(
            pb.ListVersionsRequest(model=model, page_size=limit), metadata=md, timeout=30
        )
        table = Table(
            "version", "status", "aliases", "gates", "metrics", "sha256", "created", "by", title=model
        )
        for v in resp.versions:
            metrics = ", ".join(f"{k}={val:.4g}" for k, val in sorted(v.metrics.items()))
            status = pb.VersionStatus.Name(v.status).removeprefix("VERSION_STATUS_").lower()
            table.add_row(
                str(v.version),
                status,
                ", ".join(v.aliases),
                _gates(v),
                metrics,
                v.artifact.sha256[:12],
                _time(v.created_at),
                v.created_by,
            )
        out.print(table)


@app.command()
def show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        int, typer.Argument(help="Version number (or use --alias).", min=0, max=MAX_VERSION)
    ] = 0,
    alias: Annotated[str, typer.Option(help="Show the version this alias points at.")] = "",
) -> None:
    """Show one version: artifact, metrics, gates, aliases."""
    if bool(version) == bool(alias):
        err.print("[red]error:[/red] give exactly one of VERSION or --alias")
        raise typer.Exit(2)
    req = (
        pb.GetVersionRequest(model=model, version=version)
        if version
        else pb.GetVersionRequest(model=model, alias=alias)
    )
    with _stub(ctx) as (stub, md):
        v = stub.GetVersion(req, metadata=md, timeout=30).version
    table = Table("field", "value", title=f"{v.model} v{v.version}", show_header=False)
    status = pb.VersionStatus.Name(v.status).removeprefix("VERSION_STATUS_").lower()
    for key, value in [
        ("status", status),
        ("aliases", ", ".join(v.aliases) or "-"),
        ("created", f"{_time(v.created_at)} by {v.created_by}"),
        ("description", v.description),
        ("artifact", f"{v.artifact.format} {v.artifact.size_bytes} bytes"),
        ("sha256", v.artifact.sha256),
        ("uri", v.artifact.uri),
        ("threshold", f"{v.threshold:g}"),
        ("gates", _gates(v)),
        ("tags", ", ".join(f"{k}={val}" for k, val in sorted(v.tags.items())) or "-"),
        ("features", str(len(v.feature_schema.features))),
        ("git commit", v.lineage.git_commit or "-"),
        ("W&B link", v.lineage.wandb_link_status or "-"),
    ]:
        table.add_row(key, value)
    out.print(table)
    if v.metrics:
        metrics = Table("metric", "value", title="metrics")
        for k, val in sorted(v.metrics.items()):
            metrics.add_row(k, f"{val:.6g}")
        out.print(metrics)
    if v.gate_results:
        gates = Table("gate", "value", "threshold", "result", title="gates")
        for g in v.gate_results:
            op = ">=" if g.comparator == 1 else "<="
            result = "[green]pass[/green]" if g.passed else "[red]FAIL[/red]"
            gates.add_row(g.name, f"{g.value:.6g}", f"{op} {g.threshold:.6g}", result)
        out.print(gates)


def _training_data(d: pb.TrainingData) -> str:
    """One line: the source and, for production data, the window, counts and snapshot md5."""
    if not d.source:
        return "-"
    if d.source != "production":
        read = f", {d.snapshot_path} (md5 {d.snapshot_md5})" if d.snapshot_path else ""
        return f"{d.source}, {d.rows} rows{read}"
    return (
        f"production [{_time(d.window_start)}, {_time(d.window_end)}): {d.rows} rows, "
        f"{d.excluded_unmatured} unmatured and {d.excluded_unlabelled} unlabelled left out, "
        f"label coverage {d.label_coverage:.1%}, {d.snapshot_path} (md5 {d.snapshot_md5})"
    )


@app.command()
def lineage(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version number.", min=1, max=MAX_VERSION)],
) -> None:
    """Where a version came from: code, data, params, W&B run, trigger, parents."""
    with _stub(ctx) as (stub, md):
        resp = stub.GetLineage(pb.GetLineageRequest(model=model, version=version), metadata=md, timeout=30)
    lin = resp.lineage
    table = Table("field", "value", title=f"lineage of {model} v{version}", show_header=False)
    params = json_format.MessageToDict(lin.params) if lin.HasField("params") else {}
    for key, value in [
        ("git commit", lin.git_commit or "-"),
        ("dvc.lock sha256", lin.dvc_lock_sha256 or "-"),
        ("params", ", ".join(f"{k}={val}" for k, val in sorted(params.items())) or "-"),
        ("W&B run", lin.wandb_run_path or lin.wandb_run_id or "-"),
        ("W&B link", lin.wandb_link_status or "-"),
        ("trigger", lin.trigger or "-"),
        ("training data", _training_data(lin.training_data)),
        ("parents", ", ".join(f"{p.name} v{p.version}" for p in lin.parents) or "-"),
        ("artifact sha256", resp.artifact_sha256),
        ("registered", f"{_time(resp.created_at)} by {resp.created_by}"),
    ]:
        table.add_row(key, value)
    out.print(table)
    if lin.data_md5:
        data = Table("data", "md5", title="training data (DVC)")
        for path, md5 in sorted(lin.data_md5.items()):
            data.add_row(path, md5)
        out.print(data)


def _print_event(e: pb.AliasEvent) -> None:
    kind = pb.AliasEventKind.Name(e.kind).removeprefix("ALIAS_EVENT_KIND_").lower()
    out.print(
        f"{kind}: {e.model} [bold]{e.alias}[/bold] {_version_label(e.from_version)} → "
        f"{_version_label(e.to_version)} (event {e.event_id}, by {e.actor})"
    )


@app.command()
def promote(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[int, typer.Argument(help="Version to point the alias at.", min=1, max=MAX_VERSION)],
    alias: Annotated[str, typer.Option(help="Alias to move.")] = "production",
    expect: Annotated[
        int | None,
        typer.Option(
            help="Only move if the alias currently points here (0: not set).", min=0, max=MAX_VERSION
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Point an alias (default: production) at a version; production needs what the model's
    promotion policy requires (`finpredict models policy show MODEL --version N`)."""
    req = pb.SetAliasRequest(model=model, alias=alias, version=version, reason=reason)
    if expect is not None:
        req.expected_version = expect
    with _stub(ctx) as (stub, md):
        _print_event(stub.SetAlias(req, metadata=md, timeout=30).event)


@app.command()
def rollback(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Alias to roll back.")] = "production",
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Move an alias back to its previous target."""
    req = pb.RollbackAliasRequest(model=model, alias=alias, reason=reason)
    with _stub(ctx) as (stub, md):
        _print_event(stub.RollbackAlias(req, metadata=md, timeout=30).event)


@app.command()
def history(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Option(help="Only moves of this alias.")] = "",
    limit: Annotated[int, typer.Option(help="Show the newest this many rows.", min=1)] = 50,
) -> None:
    """The audit log of a model: alias moves and admin actions, oldest first."""
    rows: list[pb.AuditEntry] = []
    with _stub(ctx) as (stub, md):
        token = ""
        while True:
            resp = stub.ListAuditLog(
                pb.ListAuditLogRequest(model=model, page_size=1000, page_token=token), metadata=md, timeout=30
            )
            rows.extend(e for e in resp.entries if not alias or e.alias == alias)
            token = resp.next_page_token
            if not token:
                break
    table = Table(
        "id", "time", "action", "alias", "from", "to", "version", "who", "why", title=f"history of {model}"
    )
    for e in rows[-limit:]:
        table.add_row(
            str(e.id),
            _time(e.time),
            e.action,
            e.alias or "-",
            _version_label(e.from_version) if e.alias else "",
            _version_label(e.to_version) if e.alias else "",
            _version_label(e.version),
            e.actor,
            e.reason,
        )
    out.print(table)


# ----- promotion policy --------------------------------------------------------------------------

policy_app = typer.Typer(
    help="A model's promotion policy: the gates and lineage `production` requires.", no_args_is_help=True
)
app.add_typer(policy_app, name="policy")

_LINEAGE = {
    "git_commit": pb.LINEAGE_REQUIREMENT_GIT_COMMIT,
    "data_md5": pb.LINEAGE_REQUIREMENT_DATA_MD5,
    "dvc_lock_sha256": pb.LINEAGE_REQUIREMENT_DVC_LOCK_SHA256,
    "reference_profile": pb.LINEAGE_REQUIREMENT_REFERENCE_PROFILE,
}
_LINEAGE_NAME = {v: k for k, v in _LINEAGE.items()}


def _parse_gate(text: str) -> pb.PolicyGate:
    """``name>=threshold`` or ``name<=threshold``."""
    for op, comparator in ((">=", 1), ("<=", 2)):
        name, sep, value = text.partition(op)
        if sep:
            try:
                return pb.PolicyGate(name=name.strip(), comparator=comparator, threshold=float(value))  # type: ignore[arg-type]
            except ValueError:
                break
    raise typer.BadParameter(f"{text!r}: expected NAME>=THRESHOLD or NAME<=THRESHOLD", param_hint="--gate")


def _print_policy(model: str, p: pb.PromotionPolicy) -> None:
    origin = "the registry's default" if p.is_default else f"set {_time(p.updated_at)} by {p.updated_by}"
    # who set it on a line of its own: a table title wraps with the terminal's width
    out.print(f"promotion policy of {model}: {origin}", soft_wrap=True)
    table = Table("gate", "rule")
    for g in p.gates:
        table.add_row(g.name, f"{'>=' if g.comparator == 1 else '<='} {g.threshold:g}")
    out.print(table)
    required = ", ".join(_LINEAGE_NAME.get(r, str(r)) for r in p.required_lineage)
    out.print(f"required lineage: {required or 'none'}")
    out.print(f"hand-off: {escape(_hand_off_line(p.hand_off))}", soft_wrap=True)


def _hand_off_line(h: pb.HandOff) -> str:
    if h.mode != pb.HAND_OFF_MODE_CANARY:
        return "off (an operator starts each rollout)"
    steps = ", ".join(f"{s:g}%" for s in h.steps) or "the gateway's default steps"
    interval = h.analysis_interval.ToTimedelta().total_seconds()
    limits = ", ".join(f"{f.name} {v:g}" for f, v in h.thresholds.ListFields()) or "the gateway's defaults"
    every = f"{interval:g} s" if interval else "the gateway's default"
    requests = h.min_requests_per_step or "the gateway's default"
    return (
        f"canary: a version after v{h.after_version} that satisfies this policy enters a canary by "
        f"itself (steps {steps}; analysis every {every}; requests per variant per step: {requests}; "
        f"limits: {limits})"
    )


_HAND_OFF = {"off": pb.HAND_OFF_MODE_OFF, "canary": pb.HAND_OFF_MODE_CANARY}


def _hand_off(
    mode: str | None, steps: str, interval_s: float, min_requests: int, limits: list[str]
) -> pb.HandOff | None:
    """The hand-off the options name (None: keep the current one)."""
    if mode is None:
        if steps or interval_s or min_requests or limits:
            raise typer.BadParameter("the canary settings go with --hand-off canary", param_hint="--hand-off")
        return None
    if mode not in _HAND_OFF:
        raise typer.BadParameter(f"{mode!r}: expected one of {', '.join(_HAND_OFF)}", param_hint="--hand-off")
    h = pb.HandOff(mode=_HAND_OFF[mode], min_requests_per_step=min_requests)  # type: ignore[arg-type]
    try:
        h.steps.extend(float(x.strip().removesuffix("%")) for x in steps.split(",") if x.strip())
    except ValueError:
        raise typer.BadParameter(
            f"{steps!r}: expected percentages like 1,5,25,100", param_hint="--canary-steps"
        ) from None
    if interval_s:
        h.analysis_interval.FromNanoseconds(round(interval_s * 1e9))
    fields = {f.name for f in h.thresholds.DESCRIPTOR.fields}
    for text in limits:
        name, sep, value = text.partition("=")
        if not sep or name.strip() not in fields:
            raise typer.BadParameter(
                f"{text!r}: expected NAME=VALUE with NAME one of {', '.join(sorted(fields))}",
                param_hint="--canary-limit",
            )
        try:
            setattr(h.thresholds, name.strip(), float(value))
        except ValueError:
            raise typer.BadParameter(
                f"{text!r}: {value!r} is not a number", param_hint="--canary-limit"
            ) from None
    return h


@policy_app.command("show")
def policy_show(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    version: Annotated[
        int, typer.Option(help="Also check this version against the policy.", min=0, max=MAX_VERSION)
    ] = 0,
) -> None:
    """Show the promotion policy (and whether a version satisfies it)."""
    with _stub(ctx) as (stub, md):
        resp = stub.GetPolicy(pb.GetPolicyRequest(model=model, version=version), metadata=md, timeout=30)
    _print_policy(model, resp.policy)
    if version:
        if resp.check.promotable:
            out.print(f"version {version}: [green]may become production[/green]")
        else:
            out.print(f"version {version}: [red]may not become production[/red]")
            for problem in resp.check.problems:
                out.print(f"  - {escape(problem)}")


@policy_app.command("set")
def policy_set(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="Model name.")],
    gate: Annotated[
        list[str] | None,
        typer.Option(
            "--gate", help="A required gate, NAME>=THRESHOLD or NAME<=THRESHOLD (repeat; default: keep)."
        ),
    ] = None,
    require: Annotated[
        list[str] | None,
        typer.Option(
            "--require",
            help=f"Required lineage, one of {', '.join(_LINEAGE)} (repeat; default: keep).",
        ),
    ] = None,
    no_lineage: Annotated[bool, typer.Option("--no-lineage", help="Require no lineage.")] = False,
    hand_off: Annotated[
        str | None,
        typer.Option(
            "--hand-off",
            help="off, or canary: a version registered from now on that satisfies the policy enters a "
            "canary rollout by itself, started by the gateway (default: keep).",
            show_default=False,
        ),
    ] = None,
    canary_steps: Annotated[
        str, typer.Option(help="With --hand-off canary: canary weights in percent (default: the gateway's).")
    ] = "",
    canary_interval_s: Annotated[
        float, typer.Option(help="With --hand-off canary: analysis interval in seconds.", min=0)
    ] = 0.0,
    canary_min_requests: Annotated[
        int, typer.Option(help="With --hand-off canary: requests per variant per step.", min=0)
    ] = 0,
    canary_limit: Annotated[
        list[str] | None,
        typer.Option(
            "--canary-limit",
            help="With --hand-off canary: a rollout limit, NAME=VALUE (e.g. max_p99_latency_ms=80; repeat).",
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (kept in the audit log).")] = "",
) -> None:
    """Replace parts of the promotion policy (admin; audited). Unnamed parts are kept."""
    handing = _hand_off(hand_off, canary_steps, canary_interval_s, canary_min_requests, canary_limit or [])
    gates = [_parse_gate(g) for g in gate or []]
    unknown = [r for r in require or [] if r not in _LINEAGE]
    if unknown:
        raise typer.BadParameter(f"unknown lineage {', '.join(unknown)}", param_hint="--require")
    if no_lineage and require:
        raise typer.BadParameter("give either --require or --no-lineage", param_hint="--no-lineage")
    with _stub(ctx) as (stub, md):
        current = stub.GetPolicy(pb.GetPolicyRequest(model=model), metadata=md, timeout=30).policy
        policy = pb.PromotionPolicy(
            gates=gates or current.gates,
            required_lineage=(
                [] if no_lineage else [_LINEAGE[r] for r in require] if require else current.required_lineage
            ),
            hand_off=handing or current.hand_off,
        )
        resp = stub.SetPolicy(
            pb.SetPolicyRequest(model=model, policy=policy, reason=reason), metadata=md, timeout=30
        )
    _print_policy(model, resp.policy)
    out.print(f"recorded as audit event {resp.entry.id}")
