"""``finpredict experiments list | compare``: the training runs of a model, listed and compared.

A run is a version the pipeline registered (a run that reused an earlier one registered
nothing: see :mod:`finpredict.pipelines.runs`), named by its W&B run id, or ``v<N>`` when it was
not tracked; ``compare`` also takes a version number (``3`` or ``v3``). Everything shown comes
from the registry: the version's lineage (params, the DVC md5 of every data input, git commit,
run fingerprint, W&B run path, trigger), its ``code_version`` tag, metrics and gate results.

The registry is the one ``finpredict train`` registers into: ``--target`` if given; else
``FINPREDICT_REGISTRY_TARGET`` when it answers its health check; else the local training registry
(data in ``<run dir>/train-registry``), started for the command and stopped afterwards, as
``finpredict train`` does. The token is ``--token``, else ``FINPREDICT_TOKEN``, else
``FINPREDICT_REGISTRY_TOKEN`` (a started registry gets a fresh one).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Annotated, Any

import grpc
import typer
from google.protobuf import json_format

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.config import ClientSettings, ConfigError, load_settings
from finpredict.pipelines import runs
from finpredict.pipelines.cli import pipeline_registry
from finpredict.pipelines.config import PipelineSettings
from finpredict.stack.settings import StackSettings

DEFAULT_MODEL = "credit-default"  # register.model of params.yaml

app = typer.Typer(help="Training runs: list them, compare two side by side.", no_args_is_help=True)


class ExperimentsError(Exception):
    """A clear error for the command line (unknown run, registry unreachable, ...). Exit status 2."""


@dataclass
class _Options:
    target: str | None
    token: str | None
    model: str


@dataclass(frozen=True)
class Run:
    """One registered training run, flattened for display."""

    run_id: str
    version: int
    created: str
    trigger: str
    git_commit: str
    code_version: str
    fingerprint: str
    wandb_run_path: str
    gates_passed: bool
    params: dict[str, Any]
    metrics: dict[str, float]
    gates: dict[str, dict[str, Any]]
    data_md5: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as ``section.key`` -> value."""
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def _number(value: Any) -> Any:
    """Struct numbers are floats: whole ones back to int (max_depth 4, not 4.0)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def to_run(v: registry_pb2.ModelVersion) -> Run:
    lin = v.lineage
    params = {k: _number(x) for k, x in flatten(json_format.MessageToDict(lin.params)).items()}
    return Run(
        run_id=runs.run_id(v),
        version=v.version,
        created=v.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"),
        trigger=lin.trigger,
        git_commit=lin.git_commit,
        code_version=v.tags.get(runs.CODE_VERSION_TAG, ""),
        fingerprint=lin.fingerprint or v.tags.get(runs.FINGERPRINT_TAG, ""),
        wandb_run_path=lin.wandb_run_path,
        gates_passed=v.gates_passed,
        params=params,
        metrics=dict(v.metrics),
        gates={g.name: {"value": g.value, "passed": g.passed} for g in v.gate_results},
        data_md5=dict(lin.data_md5),
    )


def fetch_runs(
    stub: registry_pb2_grpc.RegistryServiceStub, metadata: Any, model: str, target: str
) -> list[Run]:
    """Every version of ``model``, newest first."""
    found: list[Run] = []
    token = ""
    while True:
        try:
            resp = stub.ListVersions(
                registry_pb2.ListVersionsRequest(model=model, page_size=500, page_token=token),
                metadata=metadata,
                timeout=30,
            )
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            if code == grpc.StatusCode.NOT_FOUND:
                raise ExperimentsError(f"model {model!r} has no runs in the registry at {target}") from None
            raise ExperimentsError(
                f"registry {target}: ListVersions failed: {code.name}: {exc.details()}"  # type: ignore[attr-defined]
            ) from None
        found.extend(to_run(v) for v in resp.versions)
        token = resp.next_page_token
        if not token:
            return found


def find(all_runs: list[Run], ref: str, model: str) -> Run:
    """A run by W&B run id, or by version (``3`` / ``v3``); an unknown one is an error naming it."""
    for r in all_runs:
        if r.run_id == ref:
            return r
    number = ref.removeprefix("v")
    if number.isdigit():
        for r in all_runs:
            if r.version == int(number):
                return r
    known = ", ".join(r.run_id for r in all_runs[:10]) or "none"
    raise ExperimentsError(f"unknown run {ref!r} of model {model!r} (known runs, newest first: {known})")


def _say(line: str) -> None:
    print(line, file=sys.stderr)  # stdout is the table or the JSON


@contextmanager
def _registry(opts: _Options) -> Iterator[tuple[registry_pb2_grpc.RegistryServiceStub, Any, str]]:
    """A stub on the registry ``finpredict train`` uses (see the module docstring)."""
    try:
        client, pipeline = load_settings(ClientSettings), load_settings(PipelineSettings)
        stack = load_settings(StackSettings) if opts.target is None else None
    except ConfigError as exc:
        raise ExperimentsError(str(exc)) from None
    token = opts.token or client.token.get_secret_value() or pipeline.registry_token.get_secret_value()
    with ExitStack() as scope:
        if stack is None:
            target = str(opts.target)
        else:
            configured = client.registry_target if "registry_target" in client.model_fields_set else ""
            try:
                target, started_token = scope.enter_context(
                    pipeline_registry(stack, configured, say=_say, prefix="[experiments]")
                )
            except RuntimeError as exc:  # the local registry did not start
                raise ExperimentsError(str(exc)) from None
            token = started_token or token
        channel = scope.enter_context(grpc.insecure_channel(target))
        yield registry_pb2_grpc.RegistryServiceStub(channel), bearer_metadata(token) if token else (), target


def _load(ctx: typer.Context) -> tuple[_Options, list[Run]]:
    opts: _Options = ctx.obj
    with _registry(opts) as (stub, md, target):
        return opts, fetch_runs(stub, md, opts.model, target)


def _fail(exc: Exception) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(2)


@app.callback()
def _options(
    ctx: typer.Context,
    target: Annotated[
        str | None,
        typer.Option(
            "--target",
            help="Registry address host:port (default: FINPREDICT_REGISTRY_TARGET when it answers, else "
            "the local training registry, started for the command).",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None,
        typer.Option(
            "--token",
            help="Bearer token (default: FINPREDICT_TOKEN, else FINPREDICT_REGISTRY_TOKEN).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[str, typer.Option("--model", help="The model whose runs to show.")] = DEFAULT_MODEL,
) -> None:
    """Training runs: list them, compare two side by side."""
    ctx.obj = _Options(target, token, model)


def _short(text: str, n: int = 12) -> str:
    return text[:n] if text else "-"


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | dict):
        return json.dumps(value)
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [header, *rows]
    ]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def changed_params(older: Run | None, newer: Run) -> list[str]:
    """``key=value`` of the params ``newer`` set differently from ``older``."""
    if older is None:
        return []
    keys = sorted(set(older.params) | set(newer.params))
    return [f"{k}={_fmt(newer.params.get(k))}" for k in keys if older.params.get(k) != newer.params.get(k)]


@app.command("list")
def list_(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of the table.")] = False,
) -> None:
    """List the model's runs, newest first: trigger, code, data, AUC, gates, what changed, W&B run."""
    from finpredict.pipelines.common import RAW_DATA  # (polars: imported only when listing)

    try:
        opts, found = _load(ctx)
    except ExperimentsError as exc:
        raise _fail(exc) from None
    if as_json:
        typer.echo(json.dumps([r.to_dict() for r in found], indent=2, sort_keys=True))
        return
    if not found:
        typer.echo(f"no runs of {opts.model}")
        return
    rows = []
    for i, r in enumerate(found):
        older = found[i + 1] if i + 1 < len(found) else None
        data = r.data_md5.get(str(RAW_DATA), "")[:12]
        auc = r.metrics.get("auc_roc")
        rows.append(
            [
                r.run_id,
                str(r.version),
                r.created,
                r.trigger or "-",
                _short(r.git_commit),
                _short(r.code_version),
                data or "-",
                "-" if auc is None else f"{auc:.4f}",
                "passed" if r.gates_passed else "failed",
                " ".join(changed_params(older, r)) or "-",
                r.wandb_run_path or "-",
            ]
        )
    header = ["run", "version", "created", "trigger", "git", "code", "snapshot md5", "auc_roc", "gates"]
    typer.echo(f"runs of {opts.model} (newest first; 'changed': params that differ from the run below)")
    typer.echo(_table([*header, "changed", "W&B run"], rows))


def comparison(a: Run, b: Run) -> dict[str, Any]:
    """Two runs side by side: which params, metrics, data and code differ."""
    params = {
        k: {"a": a.params.get(k), "b": b.params.get(k), "differs": a.params.get(k) != b.params.get(k)}
        for k in sorted(set(a.params) | set(b.params))
    }
    metrics = {
        k: {
            "a": a.metrics.get(k),
            "b": b.metrics.get(k),
            "delta": b.metrics[k] - a.metrics[k] if k in a.metrics and k in b.metrics else None,
        }
        for k in sorted(set(a.metrics) | set(b.metrics))
    }
    data = {
        k: {"a": a.data_md5.get(k), "b": b.data_md5.get(k), "differs": a.data_md5.get(k) != b.data_md5.get(k)}
        for k in sorted(set(a.data_md5) | set(b.data_md5))
    }
    code = {
        k: {"a": getattr(a, k), "b": getattr(b, k), "differs": getattr(a, k) != getattr(b, k)}
        for k in ("git_commit", "code_version", "fingerprint")
    }
    return {
        "runs": [a.to_dict(), b.to_dict()],
        "differing_params": [k for k, p in params.items() if p["differs"]],
        "params": params,
        "metrics": metrics,
        "data_md5": data,
        "code": code,
    }


def _mark(differs: bool) -> str:
    return "*" if differs else ""


@app.command()
def compare(
    ctx: typer.Context,
    run_a: Annotated[str, typer.Argument(help="A run: W&B run id, or version (3 or v3).")],
    run_b: Annotated[str, typer.Argument(help="The other run.")],
    all_params: Annotated[
        bool, typer.Option("--all", help="Every param, not only those that differ.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON document instead of tables.")] = False,
) -> None:
    """Compare two runs: params (differing ones marked *), metrics with deltas, data md5s, code, gates."""
    try:
        opts, found = _load(ctx)
        a, b = find(found, run_a, opts.model), find(found, run_b, opts.model)
    except ExperimentsError as exc:
        raise _fail(exc) from None
    doc = comparison(a, b)
    if as_json:
        typer.echo(json.dumps(doc, indent=2, sort_keys=True, default=str))
        return
    info = [
        ["version", str(a.version), str(b.version)],
        ["created", a.created, b.created],
        ["trigger", a.trigger or "-", b.trigger or "-"],
        ["gates", "passed" if a.gates_passed else "failed", "passed" if b.gates_passed else "failed"],
        ["W&B run", a.wandb_run_path or "-", b.wandb_run_path or "-"],
    ]
    typer.echo(
        f"{opts.model}: run A {a.run_id} (version {a.version}) vs run B {b.run_id} (version {b.version})"
    )
    typer.echo(_table(["", f"A: {a.run_id}", f"B: {b.run_id}"], info))
    differing = doc["differing_params"]
    typer.echo(f"\nparams that differ: {', '.join(differing) or 'none'}")
    shown = [(k, p) for k, p in doc["params"].items() if all_params or p["differs"]]
    if shown:
        typer.echo(
            _table(
                ["", "param", "A", "B"],
                [[_mark(p["differs"]), k, _fmt(p["a"]), _fmt(p["b"])] for k, p in shown],
            )
        )
    rows = [
        [k, _fmt(m["a"]), _fmt(m["b"]), "-" if m["delta"] is None else f"{m['delta']:+.6g}"]
        for k, m in doc["metrics"].items()
    ]
    typer.echo("\nmetrics (delta = B - A)")
    typer.echo(_table(["metric", "A", "B", "delta"], rows))
    gate_rows = []
    for name in sorted(set(a.gates) | set(b.gates)):
        cells = []
        for r in (a, b):
            g = r.gates.get(name)
            cells.append("-" if g is None else f"{g['value']:.6g} {'PASS' if g['passed'] else 'FAIL'}")
        gate_rows.append([name, *cells])
    if gate_rows:
        typer.echo("\ngates")
        typer.echo(_table(["gate", "A", "B"], gate_rows))
    typer.echo("\ndata (DVC md5)")
    typer.echo(
        _table(
            ["", "path", "A", "B"],
            [[_mark(d["differs"]), k, d["a"] or "-", d["b"] or "-"] for k, d in doc["data_md5"].items()],
        )
    )
    typer.echo("\ncode")
    typer.echo(
        _table(
            ["", "", "A", "B"],
            [[_mark(c["differs"]), k, c["a"] or "-", c["b"] or "-"] for k, c in doc["code"].items()],
        )
    )
