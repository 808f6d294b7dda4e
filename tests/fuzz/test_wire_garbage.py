"""Bytes that are not a protobuf message at all (a broken or hostile client) sent to the registry
and the monitor: the server survives and answers with a status and a message.

The status is UNKNOWN today: grpc's own deserializer fails before any finpredict code runs. The
fix belongs in libs/common (the ObservabilityInterceptor, which already rebuilds every handler,
can wrap ``request_deserializer`` and answer INVALID_ARGUMENT); the strict xfail below turns red
as soon as it is done, so the marker gets removed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.common.auth import bearer_metadata
from finpredict.common.testing import ServiceProcess, start_service

TOKEN = "garbage-admin-token-0123456789"
GARBAGE = [b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f", b"\x08" + b"\xff" * 11]
TARGETS = {
    "registry": ("/finpredict.registry.v1.RegistryService/GetModel", registry_pb2.GetModelResponse),
    "monitor": ("/finpredict.monitor.v1.MonitorService/ListAlerts", monitor_pb2.ListAlertsResponse),
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


def _send(proc: ServiceProcess, garbage: bytes) -> grpc.RpcError:
    path, response = TARGETS[proc.name]
    with grpc.insecure_channel(proc.target) as channel:
        rpc = channel.unary_unary(
            path, request_serializer=lambda b: b, response_deserializer=response.FromString
        )
        with pytest.raises(grpc.RpcError) as exc:
            rpc(garbage, metadata=bearer_metadata(TOKEN), timeout=10)
    return exc.value


def test_garbage_requests_get_a_status_and_leave_the_server_serving(service: ServiceProcess) -> None:
    for garbage in GARBAGE:
        err = _send(service, garbage)
        assert err.code() != grpc.StatusCode.OK  # type: ignore[attr-defined]
        assert err.details()  # type: ignore[attr-defined]
    assert service.health() == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.xfail(
    strict=True,
    reason="grpc's deserializer fails before the service code: UNKNOWN (fix in libs/common, see module doc)",
)
def test_garbage_requests_are_invalid_argument(service: ServiceProcess) -> None:
    err = _send(service, GARBAGE[0])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err  # type: ignore[attr-defined]
