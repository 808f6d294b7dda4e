"""``finpredict rollout shadow``: mirror a share of a model's traffic to another version."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.gateway.cli._common import out, rollout_service, usage


def shadow(
    ctx: typer.Context,
    model: Annotated[str, typer.Option("--model", "-m", help="Model name.")],
    version: Annotated[int, typer.Option("--version", "-v", help="Version to mirror to; 0 stops.", min=0)],
    percent: Annotated[float, typer.Option(help="Share of traffic mirrored, in percent.")] = 100.0,
) -> None:
    """Mirror a share of a model's traffic to VERSION asynchronously (admin); --version 0 stops."""
    if version and not 0 < percent <= 100:
        usage(f"--percent: {percent:g} is outside (0, 100]")
    with rollout_service(ctx) as (stub, md):
        resp = stub.SetShadow(
            pb.SetShadowRequest(model=model, version=version, percent=percent if version else 0),
            metadata=md,
            timeout=30,
        )
    if resp.version:
        out.print(f"shadow: mirroring {resp.percent:g}% of {escape(model)} traffic to v{resp.version}")
    else:
        out.print(f"shadow: off for {escape(model)}")
