"""Server-side HTML: Jinja2 templates (autoescaped) and the objects every page shares.

The pages need no JavaScript build: the only script is ``static/live.js`` (a few lines of
vanilla JavaScript listening to server-sent events), and the Content-Security-Policy allows
scripts and styles from the console itself only.
"""

from __future__ import annotations

from typing import Any

import jinja2
from aiohttp import web

from finpredict.console import views
from finpredict.console.auth import ANONYMOUS, Viewer

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
NAV = [("/", "Models"), ("/rollouts", "Rollouts"), ("/alerts", "Alerts"), ("/decisions", "Decisions")]
TEMPLATES: web.AppKey[jinja2.Environment] = web.AppKey("templates", jinja2.Environment)


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("finpredict.console", "templates"),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.globals.update(
        nav=NAV,
        when=views.when,
        number=views.number,
        rollout_state=views.rollout_state,
        psi_class=views.psi_class,
        actions=views.actions,
        step_cells=views.step_cells,
        thresholds=views.thresholds,
        decision_figures=views.decision_figures,
        extension=views.EXTENSION_POINTS,
        arm_figures=views.ARM_FIGURES,
    )
    return env


def viewer_of(request: web.Request) -> Viewer:
    viewer = request.get("viewer", ANONYMOUS)
    assert isinstance(viewer, Viewer)
    return viewer


def html(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page rendered with ``context`` plus the viewer and the current path (``problems``, the
    notices of services that did not answer, default to none)."""
    context.setdefault("problems", [])
    body = fragment(request, template, **context)
    return web.Response(text=body, status=status, content_type="text/html", headers=SECURITY_HEADERS)


def fragment(request: web.Request, template: str, **context: Any) -> str:
    """A template rendered for this request's viewer (pages and live fragments alike)."""
    env = request.app[TEMPLATES]
    viewer = viewer_of(request)
    return env.get_template(template).render(viewer=viewer, path=request.path, **context)


def error_page(request: web.Request, status: int, message: str) -> web.Response:
    return html(request, "error.html", status=status, title=f"Error {status}", message=message)
