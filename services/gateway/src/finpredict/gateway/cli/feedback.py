"""``finpredict feedback record``: an analyst's verdict on a scored decision.

The verdict (``confirmed``, ``disputed``, or ``overridden`` with an optional corrected label) goes
to the gateway's ``RecordFeedback`` and from there to the monitor, where an override's corrected
label becomes the training label of the next production snapshot. The token's subject is
recorded as the actor. Recording the same feedback again is safe: it comes back as a duplicate.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated

import grpc
import typer

from finpredict.api.common.v1 import types_pb2
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.common.feedback import VERDICT_VALUES, feedback_problem
from finpredict.gateway.cli._common import (
    TargetOption,
    TokenOption,
    connection,
    open_channel,
    out,
    rpc_error,
    usage,
)

LABELS = {"defaulted": True, "repaid": False}
FLAGS = {
    "request_id": "--request-id",
    "verdict": "--verdict",
    "corrected_label": "--label",
    "reason": "--reason",
}


def group() -> None:
    """Analyst feedback on scored decisions (overrides with a corrected label train the next model)."""


def record(
    request_id: Annotated[
        str,
        typer.Option("--request-id", help="The request id the score was answered with.", show_default=False),
    ],
    verdict: Annotated[
        str,
        typer.Option(help=f"The verdict: {' | '.join(VERDICT_VALUES)}.", show_default=False),
    ],
    label: Annotated[
        str | None,
        typer.Option(
            help="The corrected label, with --verdict overridden: defaulted or repaid (the next "
            "training snapshot uses it instead of the outcome).",
            show_default=False,
        ),
    ] = None,
    reason: Annotated[str, typer.Option(help="Why (free text).")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as a JSON object.")] = False,
    target: TargetOption = None,
    token: TokenOption = None,
) -> None:
    """Record an analyst's verdict on a scored decision (needs a token with the writer role)."""
    if verdict not in VERDICT_VALUES:
        usage(f"--verdict: one of {', '.join(VERDICT_VALUES)} (got {verdict!r})")
    if label is not None and label not in LABELS:
        usage(f"--label: defaulted or repaid (got {label!r})")
    fb = types_pb2.Feedback(request_id=request_id, verdict=VERDICT_VALUES[verdict], reason=reason)
    if label is not None:
        fb.corrected_label = LABELS[label]
    # the services' own check, its field named as the flag that set it
    problem = feedback_problem("feedback", fb, datetime.now(UTC))
    if problem is not None:
        field, _, detail = problem.partition(": ")
        usage(f"{FLAGS.get(field.removeprefix('feedback.'), field)}: {detail}")
    conn = connection(target, token)
    with open_channel(conn) as (channel, md):
        try:
            got = scoring_pb2_grpc.ScoringServiceStub(channel).RecordFeedback(
                spb.RecordFeedbackRequest(feedback=[fb]), metadata=md, timeout=30
            )
        except grpc.RpcError as exc:
            hint = None
            if exc.code() == grpc.StatusCode.PERMISSION_DENIED:  # type: ignore[attr-defined]
                hint = "recording feedback needs a gateway token with the writer role (a scoring token is "
                hint += "a reader)"
            rpc_error(exc, conn.target, hint)
    if as_json:
        summary = {"recorded": got.recorded, "duplicates": got.duplicates, "unknown": got.unknown}
        typer.echo(json.dumps({"request_id": request_id, "verdict": verdict, "label": label, **summary}))
        return
    if got.duplicates:
        text = f"{verdict} for {request_id}: already recorded (a repeat of its latest feedback)"
    else:
        text = f"recorded {verdict}" + (f" ({label})" if label else "") + f" for {request_id}"
        if got.unknown:
            text += " (the monitor has not logged this request yet: check the request id)"
    out.print(text, soft_wrap=True, markup=False)
