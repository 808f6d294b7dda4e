"""Who is looking: anyone (read-only), or a person signed in with a token.

Signing in (``POST /login``) checks the token against the console's token table (the same format
as every service's, :func:`finpredict.common.auth.parse_tokens`). The session then lives in the
browser alone, sealed: an ``HttpOnly``, ``SameSite=Strict`` cookie (``Secure`` over TLS) holding
the person's token, subject and roles, the time it was sealed and a random CSRF secret, encrypted
and authenticated with AES-256-GCM under the console's session key. No process keeps anything, so
every replica holding the same keys reads a session another one opened, and a restart signs no
one out. The token inside is passed on to the gateway with each admin action (the gateway then
audits the person's subject) and is never rendered or logged.

A cookie is honoured for ``ttl_s`` from its own authenticated seal time, and only while its token
is still in the table (with the roles both the cookie and the table grant); a tampered cookie, an
expired one or one sealed under a key no longer configured is anonymous. Keys rotate: the first
seals, every listed key opens. Signing out deletes the cookie; a copy taken before stays valid
until it expires, as the token in it does until it leaves the table.

A script may send ``Authorization: Bearer <token>`` with each request instead (browsers never add
that header on their own, so it needs no CSRF token).

Cross-site request forgery: every POST must come from the console's own pages (its ``Origin``,
or ``Referer``, names this host when the browser sends one), and an action of a signed-in session
carries that session's random CSRF token, compared in constant time.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from finpredict.common.auth import ADMIN, Principal

KEY_BYTES = 32  # AES-256
NONCE_BYTES = 12
SEALED_PREFIX = "v1."  # the cookie format's version
AAD = b"finpredict-console-session/v1"  # binds a sealed session to this use of the key
MAX_COOKIE = 4000  # browsers keep 4 KiB per cookie, its name and attributes included
CLOCK_SKEW_S = 60.0  # how far ahead of this replica's clock another's seal time may be


@dataclass(frozen=True)
class Viewer:
    """The person behind a request; ``subject`` is empty for an anonymous one."""

    subject: str = ""
    roles: frozenset[str] = frozenset()
    token: str = field(default="", repr=False)
    csrf: str = field(default="", repr=False)  # the session's; empty with a bearer header
    via_header: bool = False

    @property
    def signed_in(self) -> bool:
        return bool(self.subject)

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.roles


ANONYMOUS = Viewer()


def parse_keys(spec: str) -> list[bytes]:
    """The session keys of ``spec``: comma-separated, each :data:`KEY_BYTES` random bytes in
    base64 (standard or URL-safe alphabet, padding optional). :class:`ValueError` names a bad
    key by its position, never its value."""
    keys = []
    for i, part in enumerate(p.strip() for p in spec.split(",") if p.strip()):
        b64 = part.replace("-", "+").replace("_", "/")
        try:
            key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError(f"key {i + 1} is not base64") from None
        if len(key) != KEY_BYTES:
            raise ValueError(
                f"key {i + 1} is {len(key)} bytes, not {KEY_BYTES} "
                "(generate one with `openssl rand -base64 32`)"
            )
        keys.append(key)
    return keys


def new_key() -> str:
    """A fresh session key as the setting takes it: :data:`KEY_BYTES` random bytes, URL-safe base64."""
    return base64.urlsafe_b64encode(secrets.token_bytes(KEY_BYTES)).decode().rstrip("=")


class Sessions:
    """Sign-ins sealed into their cookies under ``keys`` (the first seals, each opens), honoured
    for ``ttl_s`` from their seal time by ``clock`` (wall-clock seconds: other replicas and
    restarts read the same cookies)."""

    def __init__(
        self,
        tokens: Mapping[bytes, Principal],
        keys: Sequence[bytes],
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if tokens and not keys:
            raise ValueError("signing in needs a session key")
        self._tokens = dict(tokens)
        self._ciphers = [AESGCM(key) for key in keys]
        self._ttl = ttl_s
        self._clock = clock

    def principal(self, token: str) -> Principal | None:
        """Whose ``token`` is (None when unknown)."""
        if not token:
            return None
        return self._tokens.get(hashlib.sha256(token.encode()).digest())

    def from_header(self, authorization: str) -> Viewer | None:
        """The viewer of an ``Authorization: Bearer`` header (None when absent or unknown)."""
        scheme, _, token = authorization.partition(" ")
        principal = self.principal(token.strip()) if scheme.lower() == "bearer" else None
        if principal is None:
            return None
        return Viewer(principal.subject, principal.roles, token.strip(), "", via_header=True)

    def open(self, token: str) -> tuple[str, Viewer] | None:
        """A new session for ``token``: its sealed cookie value and viewer (None when the token
        is unknown, or too long to fit a cookie)."""
        principal = self.principal(token)
        if principal is None:
            return None
        viewer = Viewer(principal.subject, principal.roles, token, secrets.token_urlsafe(32))
        payload = {
            "sub": viewer.subject,
            "roles": sorted(viewer.roles),
            "tok": token,
            "csrf": viewer.csrf,
            "iat": self._clock(),
        }
        nonce = secrets.token_bytes(NONCE_BYTES)
        sealed = nonce + self._ciphers[0].encrypt(nonce, json.dumps(payload).encode(), AAD)
        cookie = SEALED_PREFIX + base64.urlsafe_b64encode(sealed).decode().rstrip("=")
        return (cookie, viewer) if len(cookie) <= MAX_COOKIE else None

    def get(self, cookie: str) -> Viewer | None:
        """The viewer of a sealed session cookie (None when it is not one of ours, was tampered
        with, has expired, or its token has left the table)."""
        payload = self._unseal(cookie)
        if payload is None:
            return None
        subject, roles, token, csrf, issued = (payload.get(k) for k in ("sub", "roles", "tok", "csrf", "iat"))
        if not (
            isinstance(subject, str)
            and isinstance(roles, list)
            and isinstance(token, str)
            and isinstance(csrf, str)
            and isinstance(issued, int | float)
        ):
            return None
        if not -CLOCK_SKEW_S <= self._clock() - issued < self._ttl:
            return None
        principal = self.principal(token)
        if principal is None or principal.subject != subject:
            return None  # revoked (or given to someone else) since it was sealed
        return Viewer(subject, principal.roles & frozenset(map(str, roles)), token, csrf)

    def _unseal(self, cookie: str) -> dict[str, Any] | None:
        if not cookie.startswith(SEALED_PREFIX) or len(cookie) > MAX_COOKIE:
            return None
        b64 = cookie.removeprefix(SEALED_PREFIX)
        try:
            sealed = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4))
        except (binascii.Error, ValueError):
            return None
        nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
        for cipher in self._ciphers:
            try:
                plain = cipher.decrypt(nonce, ciphertext, AAD)
            except (InvalidTag, ValueError):
                continue
            try:
                payload = json.loads(plain)
            except ValueError:
                return None
            return payload if isinstance(payload, dict) else None
        return None


def csrf_ok(viewer: Viewer, submitted: str) -> bool:
    """Whether a form's CSRF token is the session's (a bearer-header request needs none)."""
    if viewer.via_header:
        return True
    return bool(viewer.csrf) and hmac.compare_digest(viewer.csrf.encode(), submitted.encode())


def same_origin(host: str, origin: str | None, referer: str | None) -> bool:
    """Whether a POST comes from this host's pages: its ``Origin`` (else ``Referer``) names
    ``host`` (host[:port]); a request with neither (not a browser form) passes this check."""
    source = origin if origin and origin != "null" else referer
    if origin == "null":
        return False
    if not source:
        return True
    return urlsplit(source).netloc == host
