"""Signing in and out, and the admin actions on a rollout (pause, resume, abort, promote).

An action needs a signed-in viewer with the ``admin`` role (the console's token table), a
same-origin POST and the session's CSRF token; it is then sent to the gateway with the viewer's
own token, so the gateway authorises it again and records the viewer's subject in the rollout's
decisions. Without a token the buttons are not rendered and the endpoint answers 401.
"""

from __future__ import annotations

import logging

from aiohttp import web

from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.console import metrics
from finpredict.console.auth import Sessions, csrf_ok, same_origin
from finpredict.console.backends import BackendError
from finpredict.console.config import ConsoleSettings
from finpredict.console.pages import BACKENDS, SETTINGS, render_rollout
from finpredict.console.render import error_page, html, viewer_of

log = logging.getLogger("finpredict.console")

SESSIONS: web.AppKey[Sessions] = web.AppKey("sessions", Sessions)
COOKIE = "finpredict_console_session"
MAX_TOKEN = 2048  # the token is sealed into the session cookie, which browsers keep up to 4 KiB
MAX_REASON = 500
# action -> (RPC name, request type)
ACTIONS = {
    "pause": ("PauseRollout", ropb.PauseRolloutRequest),
    "resume": ("ResumeRollout", ropb.ResumeRolloutRequest),
    "abort": ("AbortRollout", ropb.AbortRolloutRequest),
    "promote": ("PromoteRollout", ropb.PromoteRolloutRequest),
}
routes = web.RouteTableDef()


def check_origin(request: web.Request) -> None:
    if not same_origin(request.host, request.headers.get("Origin"), request.headers.get("Referer")):
        raise web.HTTPForbidden(text="cross-site request refused")


def cookie_secure(settings: ConsoleSettings) -> bool:
    return settings.cookie_secure or settings.tls_cert_file is not None


@routes.get("/login")
async def login_form(request: web.Request) -> web.Response:
    return html(
        request, "login.html", title="Sign in", problems=[], next=_next(request.query.get("next", "/"))
    )


@routes.post("/login")
async def login(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    form = await request.post()
    token = str(form.get("token", ""))[:MAX_TOKEN].strip()
    target = _next(str(form.get("next", "/")))
    opened = request.app[SESSIONS].open(token)
    if opened is None:
        log.info("sign-in refused")  # never the token
        return html(
            request, "login.html", status=401, title="Sign in", problems=["unknown token"], next=target
        )
    sealed, viewer = opened
    log.info("signed in", extra={"subject": viewer.subject})
    response = web.HTTPSeeOther(target)
    response.set_cookie(
        COOKIE,
        sealed,
        httponly=True,
        samesite="Strict",
        secure=cookie_secure(request.app[SETTINGS]),
        path="/",
        max_age=int(request.app[SETTINGS].session_ttl_s),
    )
    return response


@routes.post("/logout")
async def logout(request: web.Request) -> web.StreamResponse:
    check_origin(request)
    form = await request.post()
    viewer = viewer_of(request)
    if viewer.signed_in and not csrf_ok(viewer, str(form.get("csrf", ""))):
        raise web.HTTPForbidden(text="CSRF token missing or wrong")
    response = web.HTTPSeeOther("/")  # the session is the cookie: deleting it signs out
    response.del_cookie(COOKIE, path="/")
    return response


@routes.post("/rollouts/{rollout_id}/{action}")
async def rollout_action(request: web.Request) -> web.StreamResponse:
    action = request.match_info["action"]
    rollout_id = request.match_info["rollout_id"]
    if action not in ACTIONS:
        raise web.HTTPNotFound(text=f"no action {action!r}")
    check_origin(request)
    viewer = viewer_of(request)
    if not viewer.signed_in:
        metrics.ADMIN_ACTIONS.labels(action, "refused").inc()
        return error_page(request, 401, "sign in with an admin token to change a rollout")
    if not viewer.is_admin:
        metrics.ADMIN_ACTIONS.labels(action, "refused").inc()
        return error_page(request, 403, f"{viewer.subject} does not have the admin role")
    form = await request.post()
    if not csrf_ok(viewer, str(form.get("csrf", ""))):
        metrics.ADMIN_ACTIONS.labels(action, "refused").inc()
        raise web.HTTPForbidden(text="CSRF token missing or wrong")
    reason = str(form.get("reason", ""))[:MAX_REASON].strip()
    method_name, request_type = ACTIONS[action]
    backends = request.app[BACKENDS]
    method = getattr(backends.rollouts, method_name)
    try:
        await backends.call(
            "gateway", method, request_type(rollout_id=rollout_id, reason=reason), token=viewer.token
        )
    except BackendError as exc:
        metrics.ADMIN_ACTIONS.labels(action, "failed").inc()
        log.warning(
            "rollout action failed",
            extra={"action": action, "rollout": rollout_id, "subject": viewer.subject},
        )
        return await render_rollout(request, notice=f"{action} failed: {exc}", status=409)
    metrics.ADMIN_ACTIONS.labels(action, "ok").inc()
    log.info("rollout action", extra={"action": action, "rollout": rollout_id, "subject": viewer.subject})
    return web.HTTPSeeOther(f"/rollouts/{rollout_id}")


def _next(target: str) -> str:
    """A local path to go back to after signing in (never another site)."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"
