"""``finpredict score``: score one application (``--features``) or a file of them (``--file``)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer
from rich.markup import escape
from rich.table import Table

from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.gateway.cli._common import (
    TargetOption,
    TokenOption,
    connection,
    err,
    open_channel,
    out,
    rpc_error,
    to_dict,
    usage,
)
from finpredict.gateway.cli.applications import (
    ENTITY_KEY,
    InputError,
    Row,
    application_from_object,
    read_applications,
)

BATCH_ROWS = 500  # applications per ScoreBatch call

_VARIANTS = {
    spb.VARIANT_STABLE: "stable",
    spb.VARIANT_CANARY: "canary",
    spb.VARIANT_EXPERIMENT: "experiment",
}


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
    target: TargetOption = None,
    token: TokenOption = None,
) -> None:
    """Score applications: one with --entity-id and --features, or a file with --file.

    File input: numbers become numeric features, strings categories, empty or null values
    missing ones. Files are checked completely before anything is sent.
    """
    if bool(features) == (file is not None):
        usage("give exactly one of --features (with --entity-id) or --file")
    explain = explain or top_k is not None
    if file is not None:
        if entity_id:
            usage("--entity-id goes with --features; a --file has an entity_id per application")
        try:
            rows = read_applications(file)
        except InputError as exc:
            usage(str(exc))
    else:
        try:
            doc = json.loads(features)
        except json.JSONDecodeError as exc:
            usage(f"--features: not valid JSON: {exc.msg} (column {exc.colno})")
        if not entity_id and not (isinstance(doc, dict) and ENTITY_KEY in doc):
            usage(f"--entity-id: required with --features (or an {ENTITY_KEY} key in the JSON)")
        try:
            app = application_from_object(
                doc, lambda key: "--features" + (f", key {key!r}" if key else ""), entity_id
            )
        except InputError as exc:
            usage(str(exc))
        rows = [Row(app, 0)]

    results: list[spb.Score] = []
    conn = connection(target, token)
    with open_channel(conn) as (channel, md):
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
                    typer.echo(json.dumps(to_dict(s)))
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
    exc: grpc.RpcError, target: str, file: Path | None, batch: Sequence[Row], start_at: int, as_json: bool
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
    rpc_error(exc, target, hint)
