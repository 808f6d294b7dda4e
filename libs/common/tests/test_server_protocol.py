"""The shared server skeleton, in process: undecodable requests get INVALID_ARGUMENT on every
kind of method (after authentication), and reflection resolves method symbols."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from prometheus_client import REGISTRY

from finpredict.common.auth import BearerAuthInterceptor, bearer_metadata, parse_tokens
from finpredict.common.config import ServiceSettings
from finpredict.common.server import ServiceRunner

TOKEN = "unit-reader-token-0123456789"
HEALTH = "/grpc.health.v1.Health"
REFLECTION = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
GARBAGE = b"\xff\xff\xff\xff"


@pytest.fixture
async def target() -> AsyncIterator[str]:
    """The skeleton with health closed to callers without a token (reflection stays open)."""
    settings = ServiceSettings(metrics_port=-1, shutdown_grace_s=0)
    auth = BearerAuthInterceptor(
        parse_tokens(f"{TOKEN}=unit:reader"), {}, default_role="reader", open_prefixes=("/grpc.reflection.",)
    )
    runner = ServiceRunner("unit-protocol", settings, bindings=[], interceptors=[auth])
    port = await runner.start()
    yield f"127.0.0.1:{port}"
    await runner.drain()


def _raw(channel: grpc.aio.Channel, path: str, kind: str) -> object:
    factory = getattr(channel, kind)
    return factory(path, request_serializer=lambda b: b, response_deserializer=lambda b: b)


async def _status(call: grpc.aio.Call) -> tuple[grpc.StatusCode, str]:
    """The call's final status (it waits for the end of the call, responses unread)."""
    return await call.code(), await call.details()


def _handled(code: str) -> float:
    labels = {"service": "unit-protocol", "grpc_method": f"{HEALTH}/Check", "grpc_type": "unary"}
    return (
        REGISTRY.get_sample_value("finpredict_grpc_server_handled_total", {**labels, "grpc_code": code})
        or 0.0
    )


async def test_undecodable_requests_are_invalid_argument_on_every_kind_of_method(target: str) -> None:
    md = bearer_metadata(TOKEN)
    before = _handled("INVALID_ARGUMENT")
    async with grpc.aio.insecure_channel(target) as channel:
        unary = _raw(channel, f"{HEALTH}/Check", "unary_unary")(GARBAGE, metadata=md, timeout=10)  # type: ignore[operator]
        server_stream = _raw(channel, f"{HEALTH}/Watch", "unary_stream")(GARBAGE, metadata=md, timeout=10)  # type: ignore[operator]
        bidi = _raw(channel, REFLECTION, "stream_stream")(iter([GARBAGE]), metadata=md, timeout=10)  # type: ignore[operator]
        for call in (unary, server_stream, bidi):
            code, details = await _status(call)
            assert code == grpc.StatusCode.INVALID_ARGUMENT, details
            assert "not a valid protobuf message" in details
        # ... and the server goes on serving well-formed requests.
        ok = await _raw(channel, f"{HEALTH}/Check", "unary_unary")(  # type: ignore[operator]
            health_pb2.HealthCheckRequest().SerializeToString(), metadata=md, timeout=10
        )
    assert health_pb2.HealthCheckResponse.FromString(ok).status == health_pb2.HealthCheckResponse.SERVING
    assert _handled("INVALID_ARGUMENT") == before + 1
    assert _handled("UNKNOWN") == 0


async def test_a_stream_is_served_until_its_undecodable_message(target: str) -> None:
    good = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    async with grpc.aio.insecure_channel(target) as channel:
        call = _raw(channel, REFLECTION, "stream_stream")(  # type: ignore[operator]
            iter([good, GARBAGE, good]), metadata=bearer_metadata(TOKEN), timeout=10
        )
        first = reflection_pb2.ServerReflectionResponse.FromString(await call.read())
        assert first.list_services_response.service
        code, details = await _status(call)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details


async def test_authentication_answers_before_decoding(target: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        call = _raw(channel, f"{HEALTH}/Check", "unary_unary")(GARBAGE, timeout=10)  # type: ignore[operator]
        code, details = await _status(call)
    assert code == grpc.StatusCode.UNAUTHENTICATED, details


def _resolve(target: str, symbol: str) -> str:
    """The file reflection names for ``symbol`` (what grpcurl and ghz ask before calling a method)."""
    with grpc.insecure_channel(target) as channel:
        db = ProtoReflectionDescriptorDatabase(channel)
        return str(db.FindFileContainingSymbol(symbol).name)


@pytest.mark.parametrize(
    ("symbol", "file"),
    [
        ("grpc.health.v1.Health.Check", "grpc_health/v1/health.proto"),
        ("grpc.health.v1.Health.Watch", "grpc_health/v1/health.proto"),
        ("grpc.health.v1.Health", "grpc_health/v1/health.proto"),
        ("grpc.health.v1.HealthCheckRequest.service", "grpc_health/v1/health.proto"),
        (
            "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
            "grpc_reflection/v1alpha/reflection.proto",
        ),
    ],
)
async def test_reflection_resolves_methods_services_and_fields(target: str, symbol: str, file: str) -> None:
    assert await asyncio.to_thread(_resolve, target, symbol) == file


@pytest.mark.parametrize(
    "symbol", ["grpc.health.v1.Health.NoSuchMethod", "grpc.health.v1.NoSuchService.Check", "Check", ""]
)
async def test_reflection_does_not_invent_symbols(target: str, symbol: str) -> None:
    with pytest.raises(KeyError):
        await asyncio.to_thread(_resolve, target, symbol)


async def test_a_reflection_client_finds_a_method_by_its_full_name(target: str) -> None:
    def method_input() -> str:
        with grpc.insecure_channel(target) as channel:
            pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
            return str(pool.FindMethodByName("grpc.health.v1.Health.Check").input_type.full_name)

    assert await asyncio.to_thread(method_input) == "grpc.health.v1.HealthCheckRequest"
