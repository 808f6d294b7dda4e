"""Sign-ins live in their cookies, not in a console process: on a running stack, a person signs in
on one console and pauses a rollout through another with the same session key (the gateway
records the person); a restarted console still honours the cookie; a tampered cookie, an expired
one and one sealed under a key rotated out are anonymous, and their actions are refused; a console
with tokens but no session key refuses to start, naming the variable."""

from __future__ import annotations

import http.client
import re
import time
import urllib.parse
from collections.abc import Iterator
from http.cookies import SimpleCookie
from pathlib import Path

import pytest

from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.common.auth import parse_tokens
from finpredict.console.actions import COOKIE
from finpredict.console.auth import SEALED_PREFIX, Sessions, new_key, parse_keys
from finpredict.testkit.cli import ADMIN_TOKEN, GATEWAY_TOKENS
from finpredict.testkit.console import (
    OPERATOR_SUBJECT,
    SESSION_KEY,
    ConsoleStack,
    console_stack,
    start_console,
)
from finpredict.testkit.process import ServiceExitedError, ServiceProcess

pytestmark = pytest.mark.timeout(240)
WHO = re.compile(r'id="who" data-subject="([^"]*)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ConsoleStack]:
    with console_stack(tmp_path_factory.mktemp("sessions")) as s:
        yield s


def console(stack: ConsoleStack, work: Path, **extra: str) -> ServiceProcess:
    """Another console replica on the same services (the same session key unless ``extra`` says)."""
    return start_console(
        work, stack.registry.target, stack.gateway.target, stack.monitor.target, None, **extra
    )


@pytest.fixture(scope="module")
def replica(stack: ConsoleStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = console(stack, tmp_path_factory.mktemp("replica"))
    yield proc
    proc.stop()


def call(
    proc: ServiceProcess, method: str, path: str, cookie: str = "", form: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """(status, body, Set-Cookie) of one request to ``proc``, as its own page's form would send it."""
    conn = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=30)
    headers = {"Origin": f"http://127.0.0.1:{proc.port}"}
    if cookie:
        headers["Cookie"] = f"{COOKIE}={cookie}"
    body = None
    if form is not None:
        body = urllib.parse.urlencode(form)
        headers["Content-Type"] = "application/x-www-form-urlencoded"
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), resp.getheader("Set-Cookie") or ""
    finally:
        conn.close()


def sign_in(proc: ServiceProcess, token: str = ADMIN_TOKEN) -> str:
    status, _, set_cookie = call(proc, "POST", "/login", form={"token": token, "next": "/"})
    assert status == 303
    return SimpleCookie(set_cookie)[COOKIE].value


def who(proc: ServiceProcess, cookie: str) -> str:
    """The subject ``proc``'s pages name for ``cookie`` (empty: anonymous)."""
    status, body, _ = call(proc, "GET", "/login", cookie)
    assert status == 200
    match = WHO.search(body)
    assert match is not None
    return match.group(1)


def fresh_rollout(stack: ConsoleStack) -> str:
    """A rollout that stays at its first step until an action moves it."""
    model = stack.create_model("console-sess")
    v1 = stack.register(model, "manual")
    stack.set_alias(model, "production", v1, "first release")
    v2 = stack.register(model, "schedule", parent=v1)
    return stack.start_rollout(model, v2, [5, 100], min_requests=1_000_000).id


def pause(proc: ServiceProcess, rollout_id: str, cookie: str) -> int:
    """Pauses from ``proc``'s rollout page, with the CSRF token it renders for ``cookie``."""
    status, page, _ = call(proc, "GET", f"/rollouts/{rollout_id}", cookie)
    assert status == 200
    csrf = CSRF.search(page)
    form = {"csrf": csrf.group(1) if csrf else "", "reason": "session test"}
    return call(proc, "POST", f"/rollouts/{rollout_id}/pause", cookie, form)[0]


def sealed_at(at: float, keys: str = SESSION_KEY) -> str:
    """A session for the operator sealed at ``at`` under ``keys``, as a console would have."""
    sessions = Sessions(parse_tokens(GATEWAY_TOKENS), parse_keys(keys), ttl_s=8 * 3600, clock=lambda: at)
    opened = sessions.open(ADMIN_TOKEN)
    assert opened is not None
    return opened[0]


def test_signed_in_on_one_replica_an_admin_acts_through_another(
    stack: ConsoleStack, replica: ServiceProcess
) -> None:
    cookie = sign_in(stack.console)
    assert cookie.startswith(SEALED_PREFIX)
    assert ADMIN_TOKEN not in cookie
    assert who(replica, cookie) == OPERATOR_SUBJECT
    rollout_id = fresh_rollout(stack)
    assert pause(replica, rollout_id, cookie) == 303
    paused = stack.rollout(rollout_id)
    assert paused.state == ropb.ROLLOUT_STATE_PAUSED
    (decision,) = [d for d in paused.decisions if d.verdict == "pause"]
    assert OPERATOR_SUBJECT in decision.reason  # the gateway audited the person's own token
    # signing out on the replica deletes the cookie (the browser forgets it)
    status, _, set_cookie = call(replica, "POST", "/logout", cookie, {"csrf": "x"})
    assert status == 403  # a wrong CSRF token is refused here too
    status, page, _ = call(replica, "GET", "/login", cookie)
    csrf = CSRF.search(page)
    assert csrf is not None
    status, _, set_cookie = call(replica, "POST", "/logout", cookie, {"csrf": csrf.group(1)})
    assert status == 303
    assert SimpleCookie(set_cookie)[COOKIE]["max-age"] == "0"


def test_a_restarted_console_honours_the_cookie(stack: ConsoleStack, tmp_path: Path) -> None:
    first = console(stack, tmp_path / "console")
    try:
        cookie = sign_in(first)
        assert who(first, cookie) == OPERATOR_SUBJECT
    finally:
        first.stop()
    restarted = console(stack, tmp_path / "console")
    try:
        assert who(restarted, cookie) == OPERATOR_SUBJECT
    finally:
        restarted.stop()


def test_tampered_and_expired_cookies_are_anonymous_and_refused(
    stack: ConsoleStack, replica: ServiceProcess
) -> None:
    cookie = sign_in(stack.console)
    body = cookie.removeprefix(SEALED_PREFIX)
    i = len(body) // 2
    tampered = SEALED_PREFIX + body[:i] + ("A" if body[i] != "A" else "B") + body[i + 1 :]
    now = time.time()
    expired = sealed_at(now - 8 * 3600 - 60)  # the default session_ttl_s is 8 hours
    assert who(replica, sealed_at(now - 60)) == OPERATOR_SUBJECT  # the same recipe, in time
    rollout_id = fresh_rollout(stack)
    for refused in (tampered, expired):
        assert who(replica, refused) == ""
        assert pause(replica, rollout_id, refused) == 401
    after = stack.rollout(rollout_id)
    assert after.state == ropb.ROLLOUT_STATE_PROGRESSING
    assert not [d for d in after.decisions if d.verdict not in ("start", "wait")]


def test_a_cookie_sealed_with_a_rotated_out_key_is_refused(stack: ConsoleStack, tmp_path: Path) -> None:
    old_cookie = sign_in(stack.console)  # sealed with SESSION_KEY
    key = new_key()
    rotating = console(stack, tmp_path / "rotating", FINPREDICT_CONSOLE_SESSION_KEYS=f"{key},{SESSION_KEY}")
    try:
        assert who(rotating, old_cookie) == OPERATOR_SUBJECT  # still signed in during the rotation
        new_cookie = sign_in(rotating)  # sealed with the new key
    finally:
        rotating.stop()
    rotated = console(stack, tmp_path / "rotated", FINPREDICT_CONSOLE_SESSION_KEYS=key)
    try:
        assert who(rotated, new_cookie) == OPERATOR_SUBJECT
        assert who(rotated, old_cookie) == ""
        rollout_id = fresh_rollout(stack)
        assert pause(rotated, rollout_id, old_cookie) == 401
        assert stack.rollout(rollout_id).state == ropb.ROLLOUT_STATE_PROGRESSING
    finally:
        rotated.stop()
    assert who(stack.console, new_cookie) == ""  # a console without the new key


def test_without_a_session_key_a_console_with_tokens_refuses_to_start(tmp_path: Path) -> None:
    with pytest.raises(ServiceExitedError, match="FINPREDICT_CONSOLE_SESSION_KEYS is required") as failed:
        start_console(
            tmp_path, "127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:1", FINPREDICT_CONSOLE_SESSION_KEYS=""
        )
    assert ADMIN_TOKEN not in str(failed.value)
