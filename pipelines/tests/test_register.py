"""Registration against a real registry: model creation needs admin, a writer token suffices after."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.pipelines.common import PipelineError
from finpredict.pipelines.register import ensure_model
from finpredict.testkit.process import ServiceProcess, start_service

ADMIN = "admin-token-for-tests-01"
WRITER = "writer-token-for-tests-01"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    d: Path = tmp_path_factory.mktemp("registry-auth")
    svc = start_service(
        "registry",
        d,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(d / "data"),
            "FINPREDICT_REGISTRY_TOKENS": f"{ADMIN}=ops:admin,{WRITER}=pipeline:writer",
        },
    )
    yield svc
    svc.stop()


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_writer_token_cannot_create_a_model_but_can_use_an_existing_one(registry: ServiceProcess) -> None:
    with grpc.insecure_channel(registry.target) as ch:
        stub = registry_pb2_grpc.RegistryServiceStub(ch)
        with pytest.raises(
            PipelineError, match=r"model 'pd-model' does not exist .*PERMISSION_DENIED.*admin role"
        ):
            ensure_model(stub, "pd-model", auth(WRITER), 10, registry.target)
        ensure_model(stub, "pd-model", auth(ADMIN), 10, registry.target)  # creates it
        ensure_model(stub, "pd-model", auth(WRITER), 10, registry.target)  # exists: fine
        ensure_model(stub, "pd-model", auth(ADMIN), 10, registry.target)  # idempotent


def test_bad_token_is_reported(registry: ServiceProcess) -> None:
    with grpc.insecure_channel(registry.target) as ch:
        stub = registry_pb2_grpc.RegistryServiceStub(ch)
        with pytest.raises(PipelineError, match="GetModel failed: UNAUTHENTICATED"):
            ensure_model(stub, "pd-model", auth("not-a-known-token"), 10, registry.target)
