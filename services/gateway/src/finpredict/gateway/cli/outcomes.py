"""``finpredict outcomes record FILE``: report what became of scored applications.

The outcomes (did the customer default?) go to the gateway's ``RecordOutcomes`` in calls of
:data:`BATCH_OUTCOMES`, and from there to the monitor, which measures live accuracy with them.
Recording is idempotent by request id (the first outcome of a request wins), so running the
command again after a failure is safe: what was recorded comes back as duplicates.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, NoReturn

import grpc
import typer

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
    usage,
)
from finpredict.gateway.cli.applications import InputError
from finpredict.gateway.cli.outcomes_file import OutcomeRow, read_outcomes

BATCH_OUTCOMES = 500  # outcomes per RecordOutcomes call

_OUTCOME_INDEX = re.compile(r"^outcomes\[(\d+)\]")


def group() -> None:
    """Outcomes (ground truth) of scored applications, for the monitor's accuracy."""


def record(
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE",
            help="A .csv or .parquet file: request_id, defaulted (0/1/true/false), "
            "optionally observed_at (ISO 8601) and entity_id.",
            show_default=False,
        ),
    ],
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as a JSON object.")] = False,
    target: TargetOption = None,
    token: TokenOption = None,
) -> None:
    """Record the outcomes of scored applications (needs a token with the writer role).

    The whole file is checked before anything is sent. Prints how many outcomes matched their
    logged prediction, how many wait for one (the monitor has not logged it yet) and how many
    were duplicates of outcomes already recorded.
    """
    try:
        rows = read_outcomes(file)
    except InputError as exc:
        usage(str(exc))
    matched = unmatched = duplicates = 0
    conn = connection(target, token)
    with open_channel(conn) as (channel, md):
        stub = scoring_pb2_grpc.ScoringServiceStub(channel)
        for start_at in range(0, len(rows), BATCH_OUTCOMES):
            batch = rows[start_at : start_at + BATCH_OUTCOMES]
            request = spb.RecordOutcomesRequest(outcomes=[r.outcome for r in batch])
            try:
                got = stub.RecordOutcomes(request, metadata=md, timeout=60)
            except grpc.RpcError as exc:
                _record_error(exc, conn.target, file, batch, start_at)
            matched += got.matched
            unmatched += got.unmatched
            duplicates += got.duplicates
    if as_json:
        summary = {
            "outcomes": len(rows),
            "matched": matched,
            "unmatched": unmatched,
            "duplicates": duplicates,
        }
        typer.echo(json.dumps({"file": str(file), **summary}))
        return
    out.print(
        f"recorded {len(rows)} outcomes from {file}: {matched} matched, "
        f"{unmatched} waiting for their prediction, {duplicates} duplicates (already recorded)",
        soft_wrap=True,
        markup=False,
    )


def _record_error(
    exc: grpc.RpcError, target: str, file: Path, batch: Sequence[OutcomeRow], start_at: int
) -> NoReturn:
    code: grpc.StatusCode = exc.code()  # type: ignore[attr-defined]
    details: str = exc.details() or ""  # type: ignore[attr-defined]
    hint = None
    m = _OUTCOME_INDEX.match(details)
    if code == grpc.StatusCode.INVALID_ARGUMENT and m and int(m.group(1)) < len(batch):
        row = batch[int(m.group(1))]
        hint = f"outcomes[{m.group(1)}] is {file}, {row.where} (request {row.outcome.request_id!r})"
    elif code == grpc.StatusCode.PERMISSION_DENIED:
        hint = "recording outcomes needs a gateway token with the writer role (a scoring token is a reader)"
    if start_at:
        err.print(
            f"note: the first {start_at} outcomes were recorded; running the command again is safe "
            "(they come back as duplicates)",
            soft_wrap=True,
            markup=False,
        )
    rpc_error(exc, target, hint)
