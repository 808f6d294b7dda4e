"""``finpredict review list | export``: the monitor's review queue from the command line.

The queue holds the edge cases of a time range (:mod:`finpredict.monitor.review`): requests the
gateway's validation refused, canary fallbacks, and served scores inside the review band around
the decision threshold. Both commands call the monitor's ``ListReviewCases`` (a ``reader`` token).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import grpc
import polars as pl
import typer
from google.protobuf.timestamp_pb2 import Timestamp
from rich.table import Table

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as pb_grpc
from finpredict.monitor.cli import Target, Token, _channel, _utc, console
from finpredict.monitor.review import KIND_VALUES, MAX_LIMIT, REVIEW_COLUMNS

app = typer.Typer(
    help="The review queue: refused requests, canary fallbacks, scores near the threshold.",
    no_args_is_help=True,
)

Start = Annotated[
    datetime | None,
    typer.Option("--from", help="Range start (UTC; default: a day before --to).", show_default=False),
]
End = Annotated[
    datetime | None,
    typer.Option("--to", help="Range end (UTC, excluded; default: the monitor's clock).", show_default=False),
]
Model = Annotated[str, typer.Option(help="Only this model's cases (default: every model).")]
Kinds = Annotated[
    list[str] | None,
    typer.Option(
        "--kind",
        help=f"Only this kind ({', '.join(KIND_VALUES)}); repeatable (default: every kind).",
        show_default=False,
    ),
]


def _stamp(t: datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(_utc(t))
    return ts


def _fetch(
    target: str | None,
    token: str | None,
    model: str,
    start: datetime | None,
    end: datetime | None,
    kinds: list[str] | None,
    limit: int,
) -> pb.ListReviewCasesResponse:
    unknown = [k for k in kinds or () if k not in KIND_VALUES]
    if unknown:
        raise typer.BadParameter(f"{unknown[0]!r}: one of {', '.join(KIND_VALUES)}", param_hint="--kind")
    request = pb.ListReviewCasesRequest(
        model=model,
        kinds=[KIND_VALUES[k] for k in kinds or ()],
        limit=limit,
    )
    if start is not None:
        request.start.CopyFrom(_stamp(start))
    if end is not None:
        request.end.CopyFrom(_stamp(end))
    with _channel(target, token) as channel:
        try:
            return pb_grpc.MonitorServiceStub(channel).ListReviewCases(request, timeout=60)
        except grpc.RpcError as exc:
            code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
            typer.echo(f"error: {code.name}: {exc.details()}", err=True)  # type: ignore[attr-defined]
            raise typer.Exit(1) from None


def _rows(resp: pb.ListReviewCasesResponse) -> list[dict[str, Any]]:
    refused = pb.REVIEW_KIND_REFUSED
    return [
        {
            "kind": pb.ReviewKind.Name(c.kind).removeprefix("REVIEW_KIND_").lower(),
            "request_id": c.request_id,
            "entity_id": c.entity_id,
            "model": c.model.name,
            "version": c.model.version,
            "variant": c.variant,
            "score": None if c.kind == refused else c.score,
            "threshold": None if c.kind == refused else c.threshold,
            "time": c.time.ToDatetime(tzinfo=UTC).isoformat(),
            "detail": c.detail,
        }
        for c in resp.cases
    ]


@app.command("list")
def list_(
    model: Model = "",
    start: Start = None,
    end: End = None,
    kind: Kinds = None,
    limit: Annotated[int, typer.Option(help="Most cases shown (newest first).", min=1, max=MAX_LIMIT)] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per case.")] = False,
    target: Target = None,
    token: Token = None,
) -> None:
    """List the review queue's cases of a time range, newest first."""
    resp = _fetch(target, token, model, start, end, kind, limit)
    rows = _rows(resp)
    if as_json:
        for row in rows:
            typer.echo(json.dumps(row))
        return
    table = Table("time", "kind", "model", "variant", "request", "entity", "score", "detail")
    for row in rows:
        score = "" if row["score"] is None else f"{row['score']:.4f} / {row['threshold']:.4f}"
        table.add_row(
            row["time"],
            row["kind"],
            f"{row['model']} v{row['version']}",
            row["variant"],
            row["request_id"],
            row["entity_id"],
            score,
            row["detail"],
        )
    console.print(table)
    more = " (more matched: narrow the range or raise --limit)" if resp.truncated else ""
    console.print(
        f"{len(rows)} cases; review band ±{resp.review_band:g} around the threshold{more}", markup=False
    )


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="File to write: .csv, .parquet or .jsonl.")],
    model: Model = "",
    start: Start = None,
    end: End = None,
    kind: Kinds = None,
    limit: Annotated[
        int, typer.Option(help="Most cases written (newest first).", min=1, max=MAX_LIMIT)
    ] = MAX_LIMIT,
    target: Target = None,
    token: Token = None,
) -> None:
    """Export the review queue's cases of a time range to a file (for a case tool or a notebook)."""
    if out.suffix not in (".csv", ".parquet", ".jsonl"):
        raise typer.BadParameter("must end in .csv, .parquet or .jsonl", param_hint="--out")
    resp = _fetch(target, token, model, start, end, kind, limit)
    schema = {**REVIEW_COLUMNS, "time": pl.String()}
    frame = pl.DataFrame(_rows(resp), schema=schema, orient="row")
    try:
        if out.suffix == ".csv":
            frame.write_csv(out)
        elif out.suffix == ".parquet":
            frame.write_parquet(out)
        else:
            frame.write_ndjson(out)
    except OSError as exc:
        raise typer.BadParameter(f"cannot write {out} ({exc.strerror})", param_hint="--out") from None
    more = " (more matched than --limit)" if resp.truncated else ""
    console.print(f"wrote {len(frame)} cases to {out}{more}", markup=False)
