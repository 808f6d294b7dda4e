"""Live pages: a rollout's step, weights, metrics and decisions pushed as server-sent events.

``GET /rollouts/{id}/events`` polls the gateway every ``live_interval_s`` and sends an event
``rollout`` (JSON: the re-rendered live part of the page, state, step and weight) whenever it
changed, a comment every ``HEARTBEAT_S`` otherwise (so proxies keep the stream open), and an
event ``end`` once the rollout is promoted, rolled back or aborted. ``static/live.js`` swaps the
fragment into the page; the fragment is rendered by the same template as the page, for the same
viewer (admin buttons only for admins).
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import web

from finpredict.console import metrics, views
from finpredict.console.backends import BackendError
from finpredict.console.pages import DRAINING, SETTINGS, reads
from finpredict.console.render import fragment

HEARTBEAT_S = 15.0
routes = web.RouteTableDef()


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


@routes.get("/rollouts/{rollout_id}/events")
async def rollout_events(request: web.Request) -> web.StreamResponse:
    rollout_id = request.match_info["rollout_id"]
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
                r = await reads(request).rollout(rollout_id=rollout_id)
                ended = r.state in views.TERMINAL_STATES
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
