"""One Ray, one real registry and one model server deployed on that Ray, for the module that uses
them (`test_serve_app.py`): torn down before other modules run, so no two Rays of ours overlap.
The registry and the replicas export their spans to one OTLP receiver of the test process. The
registry keeps its artifacts in an S3 bucket (moto's server on loopback): every model the
replicas load comes out of S3."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from finpredict.testkit.monitoring import OtlpTraceReceiver
from finpredict.testkit.process import start_service
from finpredict.testkit.s3 import S3Server
from finpredict.testkit.serving import (
    READER_TOKEN,
    TOKENS,
    ModelServerClient,
    RayCluster,
    Registry,
    Served,
    ray_cluster,
    start_model_server,
)


@pytest.fixture(scope="module")
def otlp() -> Iterator[OtlpTraceReceiver]:
    receiver = OtlpTraceReceiver()
    try:
        yield receiver
    finally:
        receiver.stop()


@pytest.fixture(scope="module")
def artifacts_bucket(s3: S3Server) -> str:
    return s3.create_bucket("model-server")


@pytest.fixture(scope="module")
def registry(
    tmp_path_factory: pytest.TempPathFactory, otlp: OtlpTraceReceiver, s3: S3Server, artifacts_bucket: str
) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("ms-registry")
    proc = start_service(
        "registry",
        tmp,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "data"),
            "FINPREDICT_REGISTRY_TOKENS": TOKENS,
            "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
            "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "1",
            "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.5",
            "FINPREDICT_REGISTRY_OTLP_ENDPOINT": otlp.endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "100",
            **s3.registry_env(artifacts_bucket),
        },
    )
    reg = Registry(proc)
    try:
        yield reg
    finally:
        reg.close()
        proc.stop()


@pytest.fixture(scope="module")
def ray(registry: Registry, otlp: OtlpTraceReceiver) -> Iterator[RayCluster]:
    # Replicas inherit the environment of `ray start`: that is how they get the registry token
    # and the OTLP endpoint of their spans.
    env = {
        "FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": READER_TOKEN,
        "FINPREDICT_MODEL_SERVER_OTLP_ENDPOINT": otlp.endpoint,
    }
    with ray_cluster(env) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def served(ray: RayCluster, registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("ms-server")
    proc, grpc_port = start_model_server(tmp, ray, registry)
    client = ModelServerClient(f"127.0.0.1:{grpc_port}")
    try:
        yield Served(proc, client, ray, registry)
    finally:
        client.close()
        proc.stop(timeout=60)
