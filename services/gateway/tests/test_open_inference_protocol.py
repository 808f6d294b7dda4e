"""The gateway answers the KServe Open Inference Protocol v2 through the generated stubs."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.inference import grpc_predict_v2_pb2 as pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from finpredict.common.testing import ServiceProcess, start_service


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_service("gateway", tmp_path_factory.mktemp("gateway"))
    yield proc
    assert proc.stop() == 0, proc.logs()


@pytest.fixture
def stub(gateway: ServiceProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    with grpc.insecure_channel(gateway.target) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def test_server_live_and_ready(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live is True
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready is True


def test_server_metadata(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    meta = stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)
    assert meta.name == "finpredict"
    assert meta.version


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("ModelInfer", pb.ModelInferRequest(model_name="credit-risk")),
        ("ModelReady", pb.ModelReadyRequest(name="credit-risk")),
        ("ModelMetadata", pb.ModelMetadataRequest(name="credit-risk")),
    ],
)
def test_model_rpcs_say_they_are_not_available_yet(
    stub: pb_grpc.GRPCInferenceServiceStub, method: str, request_message: object
) -> None:
    with pytest.raises(grpc.RpcError) as err:
        getattr(stub, method)(request_message, timeout=5)
    assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "not available" in (err.value.details() or "")


def test_metrics_endpoint_counts_oip_calls(
    gateway: ServiceProcess, stub: pb_grpc.GRPCInferenceServiceStub
) -> None:
    stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
    url = f"http://127.0.0.1:{gateway.metrics_port}/metrics"
    body = urllib.request.urlopen(url, timeout=5).read().decode()
    assert (
        'finpredict_grpc_server_handled_total{grpc_code="OK",'
        'grpc_method="/inference.GRPCInferenceService/ServerLive",grpc_type="unary",service="gateway"}'
    ) in body


def test_bad_setting_fails_fast_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError) as err:
        start_service("gateway", tmp_path, env={"FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "soon"}, timeout=30)
    assert "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S='soon'" in str(err.value)
