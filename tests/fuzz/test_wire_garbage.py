"""Bytes that are not a protobuf message at all (a broken or hostile client) sent to the registry,
the monitor and the gateway: the server survives and answers INVALID_ARGUMENT with a message.

grpc's own deserializer would answer UNKNOWN; the shared server skeleton (libs/common,
``finpredict.common.decoding``) turns a request that does not decode into INVALID_ARGUMENT.
tests/test_service_skeleton.py checks the same on every service's health check, the model
server's control port included. (Ray Serve's gRPC ingress is Ray's proxy, not ours.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from finpredict.api.inference import grpc_predict_v2_pb2 as oip_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.scoring.v1 import scoring_pb2
from finpredict.common.auth import bearer_metadata
from finpredict.testkit.process import ServiceProcess, start_service

TOKEN = "garbage-admin-token-0123456789"
GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 11]
TARGETS = {
    "registry": ("/finpredict.registry.v1.RegistryService/GetModel", registry_pb2.GetModelResponse),
    "monitor": ("/finpredict.monitor.v1.MonitorService/ListAlerts", monitor_pb2.ListAlertsResponse),
    "gateway": ("/finpredict.scoring.v1.ScoringService/Score", scoring_pb2.ScoreResponse),
}
# Another method per service, to show the answer does not depend on the method.
OTHER_TARGETS = {
    "registry": ("/finpredict.registry.v1.RegistryService/ListModels", registry_pb2.ListModelsResponse),
    "monitor": ("/finpredict.monitor.v1.MonitorService/GetDriftReport", monitor_pb2.GetDriftReportResponse),
    "gateway": ("/inference.GRPCInferenceService/ModelInfer", oip_pb2.ModelInferResponse),
}


@pytest.fixture(scope="module", params=sorted(TARGETS))
def service(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    name: str = request.param
    tmp: Path = tmp_path_factory.mktemp(f"garbage-{name}")
    prefix = f"FINPREDICT_{name.upper()}_"
    proc = start_service(
        name,
        tmp,
        env={f"{prefix}DATA_DIR": str(tmp / "data"), f"{prefix}TOKENS": f"{TOKEN}=fuzzer:admin"},
    )
    try:
        yield proc
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _send(
    proc: ServiceProcess, garbage: bytes, targets: dict[str, tuple[str, Any]] = TARGETS
) -> grpc.RpcError:
    path, response = targets[proc.name]
    with grpc.insecure_channel(proc.target) as channel:
        rpc = channel.unary_unary(
            path, request_serializer=lambda b: b, response_deserializer=response.FromString
        )
        with pytest.raises(grpc.RpcError) as exc:
            rpc(garbage, metadata=bearer_metadata(TOKEN), timeout=10)
    return exc.value


def test_garbage_requests_are_invalid_argument_and_leave_the_server_serving(service: ServiceProcess) -> None:
    for garbage in GARBAGE:
        for targets in (TARGETS, OTHER_TARGETS):
            err = _send(service, garbage, targets)
            assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err  # type: ignore[attr-defined]
            assert "not a valid protobuf message" in err.details(), err  # type: ignore[attr-defined]
    assert service.health() == health_pb2.HealthCheckResponse.SERVING


# Client-streaming methods (garbage as the stream's first message).
STREAM_TARGETS = {
    "registry": (
        "/finpredict.registry.v1.RegistryService/RegisterVersion",
        registry_pb2.RegisterVersionResponse,
    ),
    "monitor": (
        "/finpredict.monitor.v1.MonitorService/IngestPredictions",
        monitor_pb2.IngestPredictionsResponse,
    ),
}


@pytest.mark.parametrize("service", sorted(STREAM_TARGETS), indirect=True)
def test_garbage_in_a_client_stream_is_invalid_argument(service: ServiceProcess) -> None:
    path, response = STREAM_TARGETS[service.name]
    with grpc.insecure_channel(service.target) as channel:
        rpc = channel.stream_unary(
            path, request_serializer=lambda b: b, response_deserializer=response.FromString
        )
        with pytest.raises(grpc.RpcError) as exc:
            rpc(iter([GARBAGE[0]]), metadata=bearer_metadata(TOKEN), timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value  # type: ignore[attr-defined]
    assert service.health() == health_pb2.HealthCheckResponse.SERVING


def test_garbage_without_a_token_is_unauthenticated(service: ServiceProcess) -> None:
    """Authentication answers first: a caller without a token learns nothing about decoding."""
    path, response = TARGETS[service.name]
    with grpc.insecure_channel(service.target) as channel:
        rpc = channel.unary_unary(
            path, request_serializer=lambda b: b, response_deserializer=response.FromString
        )
        with pytest.raises(grpc.RpcError) as exc:
            rpc(GARBAGE[0], timeout=10)
    assert exc.value.code() == grpc.StatusCode.UNAUTHENTICATED, exc.value  # type: ignore[attr-defined]
