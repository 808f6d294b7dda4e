"""Typed errors of the scoring client: one exception per gRPC status a caller handles differently.

Every error is a :class:`ScoringError` carrying the gRPC status ``code``, the server's
``message``, the ``request_id`` the call was sent with and how many ``attempts`` were made.
``INVALID_ARGUMENT`` becomes :class:`InvalidRequestError`, which also names the request ``field`` the
gateway refused (``applications[3].features["utilisation"]``, ``outcomes[2].observed_at``), the
``feature`` and, for batches, the ``index`` of the application (or outcome) in the caller's list.
"""

from __future__ import annotations

import re

import grpc

# ``applications[3].features["utilisation"]: 1.7 is above ...`` / ``model: required``
_FIELD_RE = re.compile(r'^((?:[A-Za-z_]\w*)(?:\.[A-Za-z_]\w*|\[\d+\]|\["[^"]*"\])*): ')
_INDEX_RE = re.compile(r"^(applications|outcomes|feedback)\[(\d+)\]")
_FEATURE_RE = re.compile(r'\.features\["([^"]*)"\]')


class ScoringError(Exception):
    """A scoring call failed; ``code`` is the gRPC status, ``message`` the server's text."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        request_id: str = "",
        attempts: int = 1,
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        self.attempts = attempts


class InvalidRequestError(ScoringError):
    """The gateway refused the request (``INVALID_ARGUMENT``); never retried.

    ``field`` is the path the server named (``None`` when its message names none); in a batch
    it is rewritten to the application's index in the caller's whole list, not in the chunk.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        request_id: str = "",
        attempts: int = 1,
        index_offset: int = 0,
    ) -> None:
        match = _FIELD_RE.match(message)
        field = match.group(1) if match else None
        index: int | None = None
        if field is not None:
            found = _INDEX_RE.match(field)
            if found:
                index = int(found.group(2)) + index_offset
                field = f"{found.group(1)}[{index}]" + field[found.end() :]
                message = field + message[match.end(1) :] if match else message
        super().__init__(code, message, request_id=request_id, attempts=attempts)
        self.field = field
        self.index = index
        feature = _FEATURE_RE.search(field) if field else None
        self.feature = feature.group(1) if feature else None


class AuthenticationError(ScoringError):
    """No token, or the gateway did not accept it (``UNAUTHENTICATED``)."""


class PermissionDeniedError(ScoringError):
    """The token is valid but lacks the role the call needs (``PERMISSION_DENIED``)."""


class ModelNotFoundError(ScoringError):
    """The model (or its serving alias) does not exist (``NOT_FOUND``)."""


class UnavailableError(ScoringError):
    """The gateway stayed unavailable or overloaded through every retry
    (``UNAVAILABLE`` / ``RESOURCE_EXHAUSTED``)."""


class DeadlineExceededError(ScoringError):
    """The call's overall deadline (all attempts and back-offs together) passed."""


_BY_CODE: dict[grpc.StatusCode, type[ScoringError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequestError,
    grpc.StatusCode.UNAUTHENTICATED: AuthenticationError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: ModelNotFoundError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceededError,
}


def error_for(
    code: grpc.StatusCode,
    message: str,
    *,
    request_id: str = "",
    attempts: int = 1,
    index_offset: int = 0,
) -> ScoringError:
    """The typed error for a gRPC status (``index_offset``: where a batch chunk starts)."""
    cls = _BY_CODE.get(code, ScoringError)
    if cls is InvalidRequestError:
        return InvalidRequestError(
            code, message, request_id=request_id, attempts=attempts, index_offset=index_offset
        )
    return cls(code, message, request_id=request_id, attempts=attempts)
