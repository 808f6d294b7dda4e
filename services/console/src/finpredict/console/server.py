"""The console's HTTP server: the aiohttp application, HTTPS when configured, the ready file,
Prometheus metrics and a graceful drain, as every finpredict service has.

``/healthz`` (liveness) answers 200 while the process serves; ``/readyz`` answers 503 once draining
(after SIGTERM, for ``drain_delay_s``), so a load balancer stops sending new requests before the
server stops, and live pages end their event streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from importlib.resources import files

from aiohttp import web

from finpredict.common.auth import TokenSpecError, parse_tokens
from finpredict.common.config import ConfigError, env_var_name
from finpredict.common.metrics import start_metrics_server
from finpredict.common.telemetry import shutdown_tracing
from finpredict.console import actions, live, metrics, pages, render
from finpredict.console.auth import Sessions, parse_keys
from finpredict.console.backends import Backends
from finpredict.console.config import ConsoleSettings

log = logging.getLogger("finpredict.console")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def sessions_for(settings: ConsoleSettings) -> Sessions:
    """The sign-in table and session keys; :class:`ConfigError` naming the variable when ``tokens``
    or ``session_keys`` is malformed, or when tokens are set without a session key."""
    try:
        tokens = parse_tokens(settings.tokens.get_secret_value())
    except TokenSpecError as exc:
        raise ConfigError(f"{env_var_name(ConsoleSettings, 'tokens')}: {exc}") from None
    keys_var = env_var_name(ConsoleSettings, "session_keys")
    try:
        keys = parse_keys(settings.session_keys.get_secret_value())
    except ValueError as exc:
        raise ConfigError(f"{keys_var}: {exc}") from None
    if not tokens:
        log.warning(
            "no tokens configured: the console is read-only for everyone (set %s)",
            env_var_name(ConsoleSettings, "tokens"),
        )
    elif not keys:
        raise ConfigError(
            f"{keys_var} is required when {env_var_name(ConsoleSettings, 'tokens')} is set: each sign-in "
            "is sealed into its cookie with it (generate one with `openssl rand -base64 32`; give every "
            "replica the same keys)"
        )
    return Sessions(tokens, keys, settings.session_ttl_s)


@web.middleware
async def identify(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Who is asking: a bearer header, else the session cookie, else anonymous."""
    sessions = request.app[actions.SESSIONS]
    viewer = sessions.from_header(request.headers.get("Authorization", ""))
    if viewer is None:
        viewer = sessions.get(request.cookies.get(actions.COOKIE, ""))
    if viewer is not None:
        request["viewer"] = viewer
    return await handler(request)


@web.middleware
async def measure(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "other"
    started = time.perf_counter()
    code = 500
    try:
        response = await handler(request)
        code = response.status
        return response
    except web.HTTPException as exc:
        code = exc.status
        raise
    finally:
        metrics.REQUESTS_TOTAL.labels(route, str(code)).inc()
        if not route.endswith("/events"):
            metrics.REQUEST_SECONDS.labels(route).observe(time.perf_counter() - started)


def build_app(settings: ConsoleSettings, backends: Backends, sessions: Sessions) -> web.Application:
    app = web.Application(middlewares=[measure, identify], client_max_size=64 * 1024)
    app[pages.SETTINGS] = settings
    app[pages.BACKENDS] = backends
    app[actions.SESSIONS] = sessions
    app[render.TEMPLATES] = render.environment()
    app[pages.DRAINING] = asyncio.Event()
    app.add_routes(pages.routes)
    app.add_routes(actions.routes)
    app.add_routes(live.routes)
    app.router.add_static("/static", str(files("finpredict.console") / "static"), append_version=False)

    async def health(request: web.Request) -> web.Response:
        draining = request.app[pages.DRAINING].is_set()
        return web.Response(
            text="draining\n" if draining else "ok\n",
            status=503 if draining else 200,
            headers={"Cache-Control": "no-store"},
        )

    app.router.add_get("/readyz", health)
    return app


def ssl_context(settings: ConsoleSettings) -> ssl.SSLContext | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file is not None:
        ctx.load_verify_locations(settings.tls_client_ca_file)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def bound_port(site: web.TCPSite) -> int:
    """The port a started site listens on (the one picked when 0 was asked)."""
    server = site._server
    sockets = getattr(server, "sockets", None)
    if not sockets:
        raise RuntimeError("the console's HTTP server has no listening socket")
    return int(sockets[0].getsockname()[1])


async def serve(settings: ConsoleSettings) -> None:
    """Serves until SIGTERM/SIGINT, then drains: readiness 503 for ``drain_delay_s``, open
    requests get ``shutdown_grace_s``."""
    sessions = sessions_for(settings)
    backends = Backends.connect(settings)
    app = build_app(settings, backends, sessions)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=settings.shutdown_grace_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, ssl_context=ssl_context(settings))
    await site.start()
    port = bound_port(site)
    metrics_port = (
        start_metrics_server(settings.host, settings.metrics_port) if settings.metrics_port >= 0 else -1
    )
    ready = {
        "service": "console",
        "pid": os.getpid(),
        "host": settings.host,
        "port": port,
        "metrics_port": metrics_port,
        "tls": settings.tls_cert_file is not None,
        "url": f"{'https' if settings.tls_cert_file else 'http'}://{settings.host}:{port}",
    }
    if settings.ready_file is not None:
        tmp = settings.ready_file.with_suffix(settings.ready_file.suffix + ".tmp")
        tmp.write_text(json.dumps(ready))
        tmp.replace(settings.ready_file)  # atomic: readers never see a half-written file
    log.info("serving", extra=ready)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("draining")
    app[pages.DRAINING].set()
    await asyncio.sleep(settings.drain_delay_s)  # the documented drain delay
    await runner.cleanup()
    await backends.close()
    shutdown_tracing()
    log.info("stopped")
