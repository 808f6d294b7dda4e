"""The observability interceptor: trace continuation, request ids, metrics with exemplars."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from prometheus_client import REGISTRY
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from finpredict.common.interceptors import REQUEST_ID_KEY, TRACE_ID_KEY, ObservabilityInterceptor
from finpredict.common.telemetry import configure_tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE_ID}-00f067aa0ba902b7-01"
HEALTH_CHECK = "/grpc.health.v1.Health/Check"


@pytest.fixture
async def health_target() -> AsyncIterator[str]:
    configure_tracing("test")
    server = grpc.aio.server(interceptors=[ObservabilityInterceptor("unit")])
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}"
    await server.stop(None)


def _sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_continues_the_callers_trace_and_echoes_request_id(health_target: str) -> None:
    async with grpc.aio.insecure_channel(health_target) as channel:
        call = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(),
            metadata=(("traceparent", TRACEPARENT), (REQUEST_ID_KEY, "req-42")),
        )
        await call
        trailers = dict(await call.trailing_metadata())
    assert trailers[TRACE_ID_KEY] == TRACE_ID
    assert trailers[REQUEST_ID_KEY] == "req-42"


async def test_generates_request_and_trace_ids_when_absent(health_target: str) -> None:
    async with grpc.aio.insecure_channel(health_target) as channel:
        call = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        await call
        trailers = dict(await call.trailing_metadata())
    assert len(trailers[REQUEST_ID_KEY]) == 32
    assert len(trailers[TRACE_ID_KEY]) == 32
    assert int(trailers[TRACE_ID_KEY], 16) != 0


async def test_counts_by_status_code_and_records_exemplar(health_target: str) -> None:
    ok_before = _sample(
        "finpredict_grpc_server_handled_total",
        service="unit",
        grpc_method=HEALTH_CHECK,
        grpc_type="unary",
        grpc_code="OK",
    )
    nf_before = _sample(
        "finpredict_grpc_server_handled_total",
        service="unit",
        grpc_method=HEALTH_CHECK,
        grpc_type="unary",
        grpc_code="NOT_FOUND",
    )
    async with grpc.aio.insecure_channel(health_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        await stub.Check(health_pb2.HealthCheckRequest(), metadata=(("traceparent", TRACEPARENT),))
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert (
        _sample(
            "finpredict_grpc_server_handled_total",
            service="unit",
            grpc_method=HEALTH_CHECK,
            grpc_type="unary",
            grpc_code="OK",
        )
        == ok_before + 1
    )
    assert (
        _sample(
            "finpredict_grpc_server_handled_total",
            service="unit",
            grpc_method=HEALTH_CHECK,
            grpc_type="unary",
            grpc_code="NOT_FOUND",
        )
        == nf_before + 1
    )
    exposition = openmetrics_latest(REGISTRY).decode()
    bucket_lines = [
        line
        for line in exposition.splitlines()
        if line.startswith("finpredict_grpc_server_handling_seconds_bucket")
        and 'service="unit"' in line
        and 'grpc_type="unary"' in line
        and 'grpc_code="OK"' in line
    ]
    assert any(f'trace_id="{TRACE_ID}"' in line for line in bucket_lines), bucket_lines
