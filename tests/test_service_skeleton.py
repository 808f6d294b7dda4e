"""Every service starts from one command, serves health and reflection, and drains gracefully.

Reflection resolves methods (``package.Service.Method``, what grpcurl and ghz ask first) as well
as services, and bytes that are not a protobuf message get INVALID_ARGUMENT, on every service.

Each service is started as its own process (``python -m finpredict.<service>``) on an
ephemeral loopback port, exactly as a user or Kubernetes would start it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from finpredict.testkit.process import start_service, wait_for

# service -> gRPC services it must list through reflection (besides health and reflection)
SERVICES = {
    "gateway": {"inference.GRPCInferenceService"},
    "registry": set(),
    "model-server": set(),
    "monitor": set(),
}
ALWAYS = {"grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"}
# service -> a method symbol of its own and the file reflection must answer for it
OWN_METHOD = {
    "gateway": ("finpredict.scoring.v1.ScoringService.Score", "finpredict/scoring/v1/scoring.proto"),
    "registry": ("finpredict.registry.v1.RegistryService.GetModel", "finpredict/registry/v1/registry.proto"),
    "monitor": ("finpredict.monitor.v1.MonitorService.ListAlerts", "finpredict/monitor/v1/monitor.proto"),
    # the control port serves only health and reflection (predictions go to Ray Serve's ingress)
    "model-server": (
        "grpc.reflection.v1alpha.ServerReflection.ServerReflectionInfo",
        "grpc_reflection/v1alpha/reflection.proto",
    ),
}
# The model server reports SERVING only once its Ray Serve app runs (a local Ray, cold): allow it longer.
START_TIMEOUT_S = {"model-server": 240.0}


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_starts_serves_health_and_reflection(service: str, tmp_path: Path) -> None:
    proc = start_service(service, tmp_path, timeout=START_TIMEOUT_S.get(service, 60.0))
    try:
        assert proc.health() == health_pb2.HealthCheckResponse.SERVING
        with grpc.insecure_channel(proc.target) as channel:
            listed = set(ProtoReflectionDescriptorDatabase(channel).get_services())
        assert ALWAYS | SERVICES[service] <= listed, listed
        # Every application service also reports SERVING by name.
        for name in listed - ALWAYS:
            assert proc.health(name) == health_pb2.HealthCheckResponse.SERVING, name
        _assert_reflection_resolves_methods(proc.target, listed, OWN_METHOD[service])
        _assert_garbage_is_invalid_argument(proc.target)
        assert proc.health() == health_pb2.HealthCheckResponse.SERVING
    finally:
        assert proc.stop() == 0, proc.logs()


def _file_of(channel: grpc.Channel, symbol: str) -> str:
    """The file the server names for ``symbol`` (a fresh client: its cache never answers)."""
    return str(ProtoReflectionDescriptorDatabase(channel).FindFileContainingSymbol(symbol).name)


def _assert_reflection_resolves_methods(target: str, listed: set[str], own: tuple[str, str]) -> None:
    with grpc.insecure_channel(target) as channel:
        symbol, file = own
        assert _file_of(channel, symbol) == file
        assert _file_of(channel, "grpc.health.v1.Health.Check") == "grpc_health/v1/health.proto"
        # ... and every method of every listed service, as a tool resolving it by name would.
        pool = descriptor_pool.DescriptorPool(ProtoReflectionDescriptorDatabase(channel))
        for name in listed:
            service = pool.FindServiceByName(name)
            for method in service.methods:
                assert _file_of(channel, method.full_name) == service.file.name, method.full_name
        with pytest.raises(KeyError):
            _file_of(channel, "grpc.health.v1.Health.NoSuchMethod")


def _assert_garbage_is_invalid_argument(target: str) -> None:
    """Bytes that are not a HealthCheckRequest: INVALID_ARGUMENT (grpc alone says UNKNOWN)."""
    with grpc.insecure_channel(target) as channel:
        check = channel.unary_unary(
            "/grpc.health.v1.Health/Check",
            request_serializer=lambda b: b,
            response_deserializer=health_pb2.HealthCheckResponse.FromString,
        )
        with pytest.raises(grpc.RpcError) as err:
            check(b"\xff\xff\xff\xff", timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value  # type: ignore[attr-defined]
    assert "not a valid protobuf message" in err.value.details()  # type: ignore[attr-defined]


class _Stream:
    """A bidirectional reflection stream driven message by message from the test."""

    def __init__(self, channel: grpc.Channel) -> None:
        self._requests: queue.Queue[reflection_pb2.ServerReflectionRequest | None] = queue.Queue()
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        self._responses = stub.ServerReflectionInfo(self._iter(), timeout=60)

    def _iter(self) -> Iterator[reflection_pb2.ServerReflectionRequest]:
        while (item := self._requests.get()) is not None:
            yield item

    def ask(self, request: reflection_pb2.ServerReflectionRequest) -> reflection_pb2.ServerReflectionResponse:
        self._requests.put(request)
        return next(self._responses)

    def close(self) -> None:
        self._requests.put(None)
        # The server ends the stream with OK once the client half-closes.
        for _ in self._responses:
            pass


def _unavailable(target: str) -> bool:
    with grpc.insecure_channel(target) as channel:
        try:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError as err:
            return bool(err.code() == grpc.StatusCode.UNAVAILABLE)
    return False


def _health_status(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
        )


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_sigterm_finishes_in_flight_rpc_before_exit(service: str, tmp_path: Path) -> None:
    prefix = f"FINPREDICT_{service.replace('-', '_').upper()}_"
    proc = start_service(
        service,
        tmp_path,
        env={prefix + "DRAIN_DELAY_S": "1.0", prefix + "SHUTDOWN_GRACE_S": "20"},
        timeout=START_TIMEOUT_S.get(service, 60.0),
    )
    channel = grpc.insecure_channel(proc.target)
    try:
        stream = _Stream(channel)
        first = stream.ask(reflection_pb2.ServerReflectionRequest(list_services=""))
        assert first.list_services_response.service, "in-flight stream answered"

        proc.terminate()
        # 1. drain delay: health says NOT_SERVING while the server still answers.
        wait_for(
            lambda: _health_status(proc.target) == health_pb2.HealthCheckResponse.NOT_SERVING,
            15,
            "health NOT_SERVING after SIGTERM",
        )
        # 2. then the server stops accepting new RPCs ...
        wait_for(lambda: _unavailable(proc.target), 15, "new RPCs refused while draining")
        assert proc.proc.poll() is None, "process must wait for the in-flight RPC"
        # 3. ... but the in-flight RPC still gets its answers and completes normally.
        second = stream.ask(
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="grpc.health.v1.Health")
        )
        assert second.file_descriptor_response.file_descriptor_proto
        stream.close()
        assert proc.wait(timeout=20) == 0, proc.logs()
    finally:
        channel.close()
        proc.stop()
    logs = proc.logs()
    assert '"event": "draining"' in logs, logs
    assert '"event": "stopped"' in logs, logs


def test_stop_closes_streams_that_outlive_the_grace_period(tmp_path: Path) -> None:
    """A stream that never ends does not keep the process alive past the grace period."""
    proc = start_service("monitor", tmp_path, env={"FINPREDICT_MONITOR_SHUTDOWN_GRACE_S": "0.5"})
    channel = grpc.insecure_channel(proc.target)
    errors: list[grpc.StatusCode] = []
    try:
        stream = _Stream(channel)
        stream.ask(reflection_pb2.ServerReflectionRequest(list_services=""))

        def keep_reading() -> None:
            try:
                stream.ask(reflection_pb2.ServerReflectionRequest(list_services=""))
                next(stream._responses)
            except grpc.RpcError as err:
                errors.append(err.code())

        reader = threading.Thread(target=keep_reading, daemon=True)
        proc.terminate()
        assert proc.wait(timeout=20) == 0, proc.logs()
        reader.start()
        reader.join(timeout=10)
        assert errors, "the stream was ended by the server"
    finally:
        channel.close()
        proc.stop()
