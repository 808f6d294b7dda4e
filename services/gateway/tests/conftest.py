"""The gateway's integration fixtures: a real registry, Ray with the model-server app, a real
monitor, and the gateway, all on loopback; one of each for the module that uses them."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2] / "model-server" / "tests"))  # serving_testkit

from gateway_testkit import (
    REGISTRY_TOKENS,
    REPLICA_TOKEN,
    GatewayClient,
    Stack,
    monitor_process,
    pass_gates,
    start_gateway,
    train,
)
from serving_testkit import Registry, ray_cluster, start_model_server, unique

from finpredict.common.testing import start_service
from finpredict.common.testing_monitoring import OtlpTraceReceiver, free_port


@pytest.fixture(scope="module")
def traces() -> Iterator[OtlpTraceReceiver]:
    """An OTLP endpoint every service of the stack exports its spans to."""
    receiver = OtlpTraceReceiver()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, traces: OtlpTraceReceiver) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("gw")
    # Every hop exports its spans (batched every 200 ms) to the test's OTLP receiver.
    otlp = {
        f"FINPREDICT_{svc}_OTLP_ENDPOINT": traces.endpoint for svc in ("REGISTRY", "MODEL_SERVER", "GATEWAY")
    }
    otlp["OTEL_BSP_SCHEDULE_DELAY"] = "200"
    reg_proc = start_service(
        "registry",
        tmp / "registry",
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "registry" / "data"),
            "FINPREDICT_REGISTRY_TOKENS": REGISTRY_TOKENS,
            "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
            "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "1",
            "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.5",
            **otlp,
        },
    )
    registry = Registry(reg_proc)
    try:
        model = unique("credit")
        registry.create_model(model)
        versions = {
            "v1": registry.register(model, train(seed=1, rounds=20), threshold=0.5),
            "v2": registry.register(model, train(seed=1, rounds=22), threshold=0.5),
            "bad": registry.register(model, train(seed=2, rounds=20, positive_share=0.9), threshold=0.5),
        }
        for version in versions.values():
            pass_gates(registry, model, version)
        registry.set_alias(model, "production", versions["v1"])
        with ray_cluster({"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": REPLICA_TOKEN, **otlp}) as ray:
            (tmp / "model-server").mkdir()
            ms_proc, serve_port = start_model_server(tmp / "model-server", ray, registry)
            monitor_port = free_port()
            monitor = monitor_process(tmp / "monitor", monitor_port)
            gateway_port = free_port()
            gateway = start_gateway(
                tmp,
                registry.target,
                serve_port,
                f"127.0.0.1:{monitor_port}",
                port=gateway_port,
                FINPREDICT_GATEWAY_LOG_BUFFER_RECORDS="2000",
                **otlp,
            )
            client = GatewayClient(gateway.target)
            s = Stack(
                registry,
                ray,
                serve_port,
                monitor,
                monitor_port,
                tmp / "monitor",
                gateway,
                gateway_port,
                tmp,
                client,
                model,
                versions,
            )
            try:
                yield s
            finally:
                client.close()
                s.gateway.stop(timeout=30)
                s.monitor.stop(timeout=30)
                ms_proc.stop(timeout=60)
    finally:
        registry.close()
        reg_proc.stop()
