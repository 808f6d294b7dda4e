"""Spans leave a service over OTLP when an endpoint is configured, continuing the caller's trace."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.inference import grpc_predict_v2_pb2 as pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from finpredict.testkit.monitoring import OtlpTraceReceiver
from finpredict.testkit.process import start_service, wait_for

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
PARENT_SPAN = "b7ad6b7169203331"


@pytest.fixture
def receiver() -> Iterator[OtlpTraceReceiver]:
    r = OtlpTraceReceiver()
    yield r
    r.stop()


def test_gateway_exports_server_spans_over_otlp(tmp_path: Path, receiver: OtlpTraceReceiver) -> None:
    proc = start_service(
        "gateway",
        tmp_path,
        env={"FINPREDICT_GATEWAY_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"},
    )
    try:
        with grpc.insecure_channel(proc.target) as channel:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
                pb.ServerLiveRequest(),
                metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),),
                timeout=5,
            )
        spans = wait_for(lambda: receiver.spans_of(TRACE_ID), 30, "the gateway's span at the OTLP receiver")
    finally:
        assert proc.stop() == 0, proc.logs()
    (span,) = spans
    assert span["service"] == "finpredict-gateway"
    assert span["name"] == "inference.GRPCInferenceService/ServerLive"
    assert span["parent_span_id"] == PARENT_SPAN, "the server span continues the caller's span"
    assert span["attributes"]["rpc.grpc.status_code"] == 0


def test_without_endpoint_nothing_is_exported(tmp_path: Path, receiver: OtlpTraceReceiver) -> None:
    proc = start_service("gateway", tmp_path)
    with grpc.insecure_channel(proc.target) as channel:
        pb_grpc.GRPCInferenceServiceStub(channel).ServerLive(
            pb.ServerLiveRequest(), metadata=(("traceparent", f"00-{TRACE_ID}-{PARENT_SPAN}-01"),), timeout=5
        )
    assert proc.stop() == 0, proc.logs()  # a drain flushes pending spans: none may arrive after it
    assert receiver.spans_of(TRACE_ID) == []
