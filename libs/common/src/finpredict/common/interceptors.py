"""Server and client interceptors: tracing, Prometheus metrics, request ids, structured logs.

One server interceptor wraps every handler kind (unary and streaming, generator or
``context.write`` style) so that each RPC gets a server span continuing the caller's trace,
a latency observation with the trace id as exemplar, a request id in the log context and in
trailing metadata, and one log line when it fails.
"""

from __future__ import annotations

import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from finpredict.common.logging import request_id_var
from finpredict.common.metrics import (
    GRPC_SERVER_HANDLED_TOTAL,
    GRPC_SERVER_HANDLING_SECONDS,
    GRPC_SERVER_STARTED_TOTAL,
)
from finpredict.common.telemetry import current_trace_id, extract_context, inject_metadata

log = logging.getLogger("finpredict.grpc")
REQUEST_ID_KEY = "x-request-id"
TRACE_ID_KEY = "x-trace-id"
# Codes that mean "the server is broken" rather than "the caller asked for something wrong".
_SERVER_FAULTS = {grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS}
# (request streaming, response streaming) -> the grpc_type label
_GRPC_TYPES = {
    (False, False): "unary",
    (False, True): "server_stream",
    (True, False): "client_stream",
    (True, True): "bidi_stream",
}


def _metadata_value(metadata: Any, key: str) -> str:
    for k, v in metadata or ():
        if k == key:
            return v.decode() if isinstance(v, bytes) else str(v)
    return ""


class _Call:
    """Book-keeping of one RPC: span, timer, request id, outcome."""

    def __init__(self, service: str, method: str, grpc_type: str, metadata: Any) -> None:
        self.service = service
        self.method = method
        self.grpc_type = grpc_type
        self.metadata = metadata
        self.code = grpc.StatusCode.OK

    def __enter__(self) -> _Call:
        rpc_service, _, rpc_method = self.method.lstrip("/").rpartition("/")
        self._span_cm = trace.get_tracer("finpredict.grpc").start_as_current_span(
            self.method.lstrip("/"),
            context=extract_context(self.metadata),  # type: ignore[arg-type]
            kind=SpanKind.SERVER,
            attributes={"rpc.system": "grpc", "rpc.service": rpc_service, "rpc.method": rpc_method},
        )
        self.span = self._span_cm.__enter__()
        rid = _metadata_value(self.metadata, REQUEST_ID_KEY) or uuid.uuid4().hex
        self.request_id = rid
        self._rid_token = request_id_var.set(rid)
        self.trace_id = current_trace_id()
        self._t0 = time.perf_counter()
        GRPC_SERVER_STARTED_TOTAL.labels(self.service, self.method, self.grpc_type).inc()
        return self

    def set_trailers(self, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        context.set_trailing_metadata(((REQUEST_ID_KEY, self.request_id), (TRACE_ID_KEY, self.trace_id)))

    def finish(self, context: grpc.aio.ServicerContext[Any, Any], exc: BaseException | None) -> None:
        code = context.code()
        if isinstance(code, grpc.StatusCode):
            self.code = code
        elif exc is not None and not isinstance(exc, grpc.aio.AbortError):
            self.code = grpc.StatusCode.CANCELLED if _is_cancel(exc) else grpc.StatusCode.UNKNOWN

    def __exit__(self, *exc_info: object) -> None:
        elapsed = time.perf_counter() - self._t0
        code = self.code.name
        exemplar = {"trace_id": self.trace_id} if self.trace_id else None
        GRPC_SERVER_HANDLING_SECONDS.labels(self.service, self.method, self.grpc_type, code).observe(
            elapsed, exemplar
        )
        GRPC_SERVER_HANDLED_TOTAL.labels(self.service, self.method, self.grpc_type, code).inc()
        self.span.set_attribute("rpc.grpc.status_code", self.code.value[0])
        if self.code in _SERVER_FAULTS:
            self.span.set_status(Status(StatusCode.ERROR, code))
            log.warning(
                "rpc failed",
                extra={
                    "grpc_method": self.method,
                    "grpc_code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        else:
            log.debug(
                "rpc done",
                extra={
                    "grpc_method": self.method,
                    "grpc_code": code,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        request_id_var.reset(self._rid_token)
        self._span_cm.__exit__(None, None, None)


_HANDLER_KINDS = (
    ("unary_unary", grpc.unary_unary_rpc_method_handler),
    ("unary_stream", grpc.unary_stream_rpc_method_handler),
    ("stream_unary", grpc.stream_unary_rpc_method_handler),
    ("stream_stream", grpc.stream_stream_rpc_method_handler),
)


def rebuild_handler(
    handler: grpc.RpcMethodHandler[Any, Any],
    make: Callable[[Any], Any],
    request_deserializer: Callable[[bytes], Any] | None = None,
) -> grpc.RpcMethodHandler[Any, Any]:
    """The same kind of handler with ``make(behavior)`` as its behavior (and, when given, another
    request deserializer); what a server interceptor returns to wrap a method."""
    for attr, factory in _HANDLER_KINDS:
        behavior = getattr(handler, attr)
        if behavior is not None:
            return factory(  # type: ignore[no-any-return]
                make(behavior),
                request_deserializer=request_deserializer or handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


def _is_cancel(exc: BaseException) -> bool:
    import asyncio

    return isinstance(exc, asyncio.CancelledError)


class ObservabilityInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Traces, times, counts and logs every RPC of a service."""

    def __init__(self, service: str) -> None:
        self.service = service

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None  # type: ignore[unreachable]
        method = handler_call_details.method
        metadata = handler_call_details.invocation_metadata
        grpc_type = _GRPC_TYPES[(handler.request_streaming, handler.response_streaming)]
        return rebuild_handler(handler, lambda behavior: self._wrap(behavior, method, grpc_type, metadata))

    def _wrap(self, behavior: Any, method: str, grpc_type: str, metadata: Any) -> Any:
        service = self.service
        if inspect.isasyncgenfunction(behavior):

            async def gen_wrapper(
                request: Any, context: grpc.aio.ServicerContext[Any, Any]
            ) -> AsyncIterator[Any]:
                with _Call(service, method, grpc_type, metadata) as call:
                    call.set_trailers(context)
                    exc: BaseException | None = None
                    try:
                        async for response in behavior(request, context):
                            yield response
                    except BaseException as e:
                        exc = e
                        raise
                    finally:
                        call.finish(context, exc)

            return gen_wrapper

        async def wrapper(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            with _Call(service, method, grpc_type, metadata) as call:
                call.set_trailers(context)
                exc: BaseException | None = None
                try:
                    return await behavior(request, context)
                except BaseException as e:
                    exc = e
                    if not isinstance(e, grpc.aio.AbortError | grpc.RpcError) and not _is_cancel(e):
                        log.exception("unhandled error in %s", method)
                    raise
                finally:
                    call.finish(context, exc)

        return wrapper


def outgoing_metadata(metadata: Any = ()) -> list[tuple[str, Any]]:
    """``metadata`` plus the current request id and trace context: what the client interceptors
    add to every call, for a caller on a channel without them (``create_channel(propagate=False)``,
    where the interceptors' per-call cost matters)."""
    out = [(k, v) for k, v in (metadata or ())]
    rid = request_id_var.get()
    if rid and not any(k == REQUEST_ID_KEY for k, _ in out):
        out.append((REQUEST_ID_KEY, rid))
    return inject_metadata(out)


class _ClientMetadata:
    """Adds the current trace context and request id to an outgoing call's metadata."""

    @staticmethod
    def _details(details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            method=details.method,
            timeout=details.timeout,
            metadata=grpc.aio.Metadata(*outgoing_metadata(details.metadata)),
            credentials=details.credentials,
            wait_for_ready=details.wait_for_ready,
        )


# grpc.aio files an interceptor under the first call kind it implements, so each kind needs an
# interceptor object of its own (one object implementing all four would only see unary calls).
class _UnaryUnary(_ClientMetadata, grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _UnaryStream(_ClientMetadata, grpc.aio.UnaryStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return await continuation(self._details(client_call_details), request)


class _StreamUnary(_ClientMetadata, grpc.aio.StreamUnaryClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class _StreamStream(_ClientMetadata, grpc.aio.StreamStreamClientInterceptor):  # type: ignore[type-arg]
    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    """Interceptors every outgoing channel of a finpredict service uses."""
    return [_UnaryUnary(), _UnaryStream(), _StreamUnary(), _StreamStream()]  # type: ignore[list-item]
