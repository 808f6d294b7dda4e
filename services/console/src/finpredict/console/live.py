"""Live pages: a rollout's step, weights, metrics and decisions, and an experiment's per-arm
statistics, pushed as server-sent events.

``GET /rollouts/{id}/events`` polls the gateway every ``live_interval_s`` and sends an event
``rollout`` (JSON: the re-rendered live part of the page, state, step and weight) whenever it
changed, a comment every ``HEARTBEAT_S`` otherwise (so proxies keep the stream open), and an
event ``end`` once the rollout is promoted, rolled back or aborted. ``static/live.js`` swaps the
fragment into the page; the fragment is rendered by the same template as the page, for the same
viewer (admin buttons only for admins). ``GET /experiments/{id}/events`` does the same for an
experiment (event ``experiment``) until it is stopped.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from finpredict.console import metrics, views
from finpredict.console.backends import BackendError
from finpredict.console.pages import DRAINING, SETTINGS, reads
from finpredict.console.render import fragment

HEARTBEAT_S = 15.0
routes = web.RouteTableDef()


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


async def poll_stream(
    request: web.Request, poll: Callable[[], Awaitable[tuple[bytes, bool]]]
) -> web.StreamResponse:
    """Server-sent events from ``poll()`` (the event and whether the thing ended) every
    ``live_interval_s``: each event when it changed, heartbeats otherwise, ``problem`` when a
    service fails and ``end`` once it ended."""
    interval = request.app[SETTINGS].live_interval_s
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-store", "X-Accel-Buffering": "no"}
    )
    await response.prepare(request)
    metrics.LIVE_STREAMS.inc()
    last: bytes = b""
    last_sent = time.monotonic()
    try:
        while True:
            ended = False
            try:
                event, ended = await poll()
            except BackendError as exc:
                event = sse("problem", {"message": str(exc)})
            if event != last:
                await response.write(event)
                last, last_sent = event, time.monotonic()
            elif time.monotonic() - last_sent >= HEARTBEAT_S:
                await response.write(b": heartbeat\n\n")
                last_sent = time.monotonic()
            if ended:
                await response.write(sse("end", {}))
                break
            if request.app[DRAINING].is_set():  # shutting down: the browser reconnects elsewhere
                break
            await asyncio.sleep(interval)  # the polling period of a live page
    except ConnectionResetError:  # the browser went away
        pass
    return response


@routes.get("/rollouts/{rollout_id}/events")
async def rollout_events(request: web.Request) -> web.StreamResponse:
    rollout_id = request.match_info["rollout_id"]

    async def poll() -> tuple[bytes, bool]:
        r = await reads(request).rollout(rollout_id=rollout_id)
        event = sse(
            "rollout",
            {
                "html": fragment(request, "_rollout_live.html", r=r),
                "state": views.rollout_state(r.state),
                "step_index": r.step_index,
                "weight": r.weight,
                "decisions": len(r.decisions),
            },
        )
        return event, r.state in views.TERMINAL_STATES

    return await poll_stream(request, poll)


@routes.get("/experiments/{experiment_id}/events")
async def experiment_events(request: web.Request) -> web.StreamResponse:
    experiment_id = request.match_info["experiment_id"]

    async def poll() -> tuple[bytes, bool]:
        x = views.experiment_view(await reads(request).experiment(experiment_id=experiment_id))
        event = sse("experiment", {"html": fragment(request, "_experiment_live.html", x=x)})
        return event, not x.running

    return await poll_stream(request, poll)
