"""Bearer-token authentication and role-based authorisation for gRPC services.

Tokens come from the environment, never from the repository. A service reads one variable
(for the registry ``FINPREDICT_REGISTRY_TOKENS``) in one of two formats:

* compact: ``"<token>=<subject>:<role>[|<role>...],<token>=<subject>:<role>"``, e.g.
  ``"s3cr3t-a=alice:admin,s3cr3t-r=bob:reader"``;
* JSON (when the value starts with ``{``):
  ``{"s3cr3t-a": {"subject": "alice", "roles": ["admin"]}}``.

:class:`BearerAuthInterceptor` takes the parsed tokens and a map of full RPC method name
(``/pkg.Service/Method``) to the role it needs. Calls carry ``authorization: Bearer <token>``.

* health (``grpc.health.v1``) and server reflection are always open;
* a missing, malformed or unknown token gets ``UNAUTHENTICATED``;
* a known token without the needed role gets ``PERMISSION_DENIED``;
* a method missing from the map needs ``default_role`` (``admin``): new RPCs are closed until
  someone decides otherwise (secure by default);
* roles imply others through ``role_implies`` (by default ``admin`` ⊇ ``writer`` ⊇ ``reader``).

The authenticated :class:`Principal` is available to the handler through
:func:`current_principal` (a context variable), so audit rows can record who did what.
Tokens are compared by their sha256 digest and never logged.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import hmac
import inspect
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import grpc

from finpredict.common.interceptors import rebuild_handler

log = logging.getLogger("finpredict.auth")

ADMIN = "admin"
WRITER = "writer"
READER = "reader"
DEFAULT_ROLE_IMPLIES: Mapping[str, frozenset[str]] = {
    ADMIN: frozenset({WRITER, READER}),
    WRITER: frozenset({READER}),
}
OPEN_SERVICE_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)
_VALID_NAME = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.@")


@dataclass(frozen=True)
class Principal:
    """Who made a call: the token's subject and its roles."""

    subject: str
    roles: frozenset[str]


_principal_var: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "finpredict_principal", default=None
)


def current_principal() -> Principal | None:
    """The principal of the RPC being handled (None outside an authenticated call)."""
    return _principal_var.get()


def current_subject(default: str = "anonymous") -> str:
    """The subject of the RPC being handled, for audit rows."""
    principal = _principal_var.get()
    return principal.subject if principal is not None else default


class TokenSpecError(ValueError):
    """The token variable is malformed; the message never contains a token."""


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def _check_name(kind: str, value: str, index: int) -> str:
    if not value or not set(value) <= _VALID_NAME:
        raise TokenSpecError(f"entry {index}: {kind} must be non-empty and use [A-Za-z0-9_.@-]")
    return value


def parse_tokens(spec: str) -> dict[bytes, Principal]:
    """Parses a token spec (compact or JSON) into sha256(token) -> principal."""
    spec = spec.strip()
    if not spec:
        return {}
    entries: list[tuple[str, str, list[str]]] = []
    if spec.startswith("{"):
        try:
            doc = json.loads(spec)
        except json.JSONDecodeError as exc:
            raise TokenSpecError(f"invalid JSON at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(doc, dict):
            raise TokenSpecError("JSON must be an object of token -> {subject, roles}")
        for i, (token, value) in enumerate(doc.items()):
            if not isinstance(value, dict) or not isinstance(value.get("subject"), str):
                raise TokenSpecError(f"entry {i}: expected {{'subject': str, 'roles': [str, ...]}}")
            roles = value.get("roles")
            if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
                raise TokenSpecError(f"entry {i}: 'roles' must be a list of strings")
            entries.append((str(token), value["subject"], roles))
    else:
        for i, item in enumerate(spec.split(",")):
            token, sep, rest = item.strip().partition("=")
            subject, sep2, roles_text = rest.partition(":")
            if not sep or not sep2:
                raise TokenSpecError(f"entry {i}: expected <token>=<subject>:<role>[|<role>...]")
            entries.append((token.strip(), subject.strip(), [r.strip() for r in roles_text.split("|")]))
    out: dict[bytes, Principal] = {}
    for i, (token, subject, roles) in enumerate(entries):
        if len(token) < 8:
            raise TokenSpecError(f"entry {i}: token must be at least 8 characters")
        _check_name("subject", subject, i)
        if not roles:
            raise TokenSpecError(f"entry {i}: at least one role is required")
        for role in roles:
            _check_name("role", role, i)
        digest = _digest(token)
        if digest in out:
            raise TokenSpecError(f"entry {i}: duplicate token")
        out[digest] = Principal(subject, frozenset(roles))
    return out


def bearer_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata that authenticates with ``token``."""
    return (("authorization", f"Bearer {token}"),)


class BearerClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[type-arg]
    grpc.StreamStreamClientInterceptor,  # type: ignore[type-arg]
):
    """Adds ``authorization: Bearer <token>`` to every call of a blocking channel
    (``grpc.intercept_channel(channel, BearerClientInterceptor(token))``)."""

    def __init__(self, token: str) -> None:
        self.metadata = bearer_metadata(token)

    def _details(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), *self.metadata])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, details: Any, request_iterator: Any) -> Any:
        return continuation(self._details(details), request_iterator)


class BearerAuthInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticates every call by bearer token and checks the role its method needs."""

    def __init__(
        self,
        tokens: Mapping[bytes, Principal],
        method_roles: Mapping[str, str],
        *,
        default_role: str = ADMIN,
        role_implies: Mapping[str, Iterable[str]] = DEFAULT_ROLE_IMPLIES,
        open_prefixes: Iterable[str] = OPEN_SERVICE_PREFIXES,
    ) -> None:
        self._tokens = dict(tokens)
        self._method_roles = dict(method_roles)
        self._default_role = default_role
        self._implies = {k: frozenset(v) for k, v in role_implies.items()}
        self._open = tuple(open_prefixes)

    def effective_roles(self, roles: Iterable[str]) -> frozenset[str]:
        """Roles plus every role they imply (transitively)."""
        out: set[str] = set()
        todo = list(roles)
        while todo:
            role = todo.pop()
            if role not in out:
                out.add(role)
                todo.extend(self._implies.get(role, ()))
        return frozenset(out)

    def required_role(self, method: str) -> str | None:
        """The role ``method`` needs, or None when it is open."""
        if method.startswith(self._open):
            return None
        return self._method_roles.get(method, self._default_role)

    def authenticate(self, metadata: Any) -> Principal | None:
        """The principal of the call's bearer token, or None."""
        header = ""
        for key, value in metadata or ():
            if key.lower() == "authorization":
                header = value.decode() if isinstance(value, bytes) else str(value)
                break
        scheme, _, token = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        digest = _digest(token.strip())
        for known, principal in self._tokens.items():  # constant time per entry
            if hmac.compare_digest(known, digest):
                return principal
        return None

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[unreachable]
        method = handler_call_details.method
        needed = self.required_role(method)
        if needed is None:
            return handler
        principal = self.authenticate(handler_call_details.invocation_metadata)
        if principal is None:
            log.info("unauthenticated call", extra={"grpc_method": method})
            return _refusal(handler, grpc.StatusCode.UNAUTHENTICATED, "missing or unknown bearer token")
        if needed not in self.effective_roles(principal.roles):
            log.info(
                "permission denied",
                extra={"grpc_method": method, "subject": principal.subject, "required_role": needed},
            )
            return _refusal(
                handler,
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.rsplit('/', 1)[-1]} needs the {needed!r} role; {principal.subject!r} lacks it",
            )
        return _with_principal(handler, principal)


def _refusal(
    handler: grpc.RpcMethodHandler[Any, Any], code: grpc.StatusCode, message: str
) -> grpc.RpcMethodHandler[Any, Any]:
    def make(behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior) or handler.response_streaming:

            async def refuse_stream(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
                await context.abort(code, message)
                yield  # pragma: no cover - makes this an async generator

            return refuse_stream

        async def refuse(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            await context.abort(code, message)

        return refuse

    return rebuild_handler(handler, make)


def _with_principal(
    handler: grpc.RpcMethodHandler[Any, Any], principal: Principal
) -> grpc.RpcMethodHandler[Any, Any]:
    def make(behavior: Any) -> Any:
        if inspect.isasyncgenfunction(behavior):

            async def gen(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Any]:
                token = _principal_var.set(principal)
                try:
                    async for item in behavior(request, context):
                        yield item
                finally:
                    with contextlib.suppress(ValueError):  # finalised in another context
                        _principal_var.reset(token)

            return gen

        async def call(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            token = _principal_var.set(principal)
            try:
                return await behavior(request, context)
            finally:
                _principal_var.reset(token)

        return call

    return rebuild_handler(handler, make)
