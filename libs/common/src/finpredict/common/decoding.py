"""Requests whose bytes are not a protobuf message get ``INVALID_ARGUMENT``, on every method.

grpc deserializes a request before any handler runs and answers ``UNKNOWN`` when that fails.
:class:`DecodeErrorInterceptor` (the innermost interceptor of the shared server, so that
authentication still answers first) gives each method a deserializer that turns a
``DecodeError`` into an :class:`Undecodable` value, and a behavior that aborts the call with
``INVALID_ARGUMENT`` when it meets one: the request itself, or any message of a request stream.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from finpredict.common.interceptors import rebuild_handler

Context = grpc.aio.ServicerContext[Any, Any]


@dataclass(frozen=True)
class Undecodable:
    """What a request that does not decode deserializes to; ``message`` says why."""

    message: str


def tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """``deserializer``, answering :class:`Undecodable` instead of raising ``DecodeError``."""
    if deserializer is None:
        return None
    inner = deserializer

    def deserialize(data: bytes) -> Any:
        try:
            return inner(data)
        except DecodeError as exc:
            return Undecodable(f"the request is not a valid protobuf message: {exc}")

    return deserialize


async def _refuse(context: Context, request: Undecodable) -> None:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.message)


async def _checked(requests: AsyncIterator[Any], context: Context) -> AsyncIterator[Any]:
    async for request in requests:
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        yield request


def _guard(behavior: Any, request_streaming: bool) -> Any:
    async def request_of(request: Any, context: Context) -> Any:
        if request_streaming:
            return _checked(request, context)
        if isinstance(request, Undecodable):
            await _refuse(context, request)
        return request

    if inspect.isasyncgenfunction(behavior):

        async def gen(request: Any, context: Context) -> AsyncIterator[Any]:
            async for response in behavior(await request_of(request, context), context):
                yield response

        return gen

    async def call(request: Any, context: Context) -> Any:
        return await behavior(await request_of(request, context), context)

    return call


class DecodeErrorInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Answers ``INVALID_ARGUMENT`` (not grpc's ``UNKNOWN``) to requests that do not decode."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[unreachable]
        return rebuild_handler(
            handler,
            lambda behavior: _guard(behavior, handler.request_streaming),
            request_deserializer=tolerant(handler.request_deserializer),
        )
