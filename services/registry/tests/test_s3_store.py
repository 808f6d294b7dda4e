"""The registry on an S3 artifact store (moto's server on loopback): uploads, multipart uploads of
large artifacts, checksums on every read (a changed object is refused DATA_LOSS), and an S3 that
stops answering or refuses connections (UNAVAILABLE within seconds, never a hang)."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.common.config import ConfigError
from finpredict.registry.config import RegistrySettings, S3Location
from finpredict.testkit.proxy import DelayProxy
from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    Client,
    Registry,
    code_of,
    create_model,
    details_of,
    header,
    register,
    running_registry,
    sha256,
)
from finpredict.testkit.s3 import S3Server

MIB = 1024 * 1024
FAST_FAILURE = {  # a silent S3 fails each attempt after a second, twice
    "FINPREDICT_REGISTRY_S3_CONNECT_TIMEOUT_S": "1",
    "FINPREDICT_REGISTRY_S3_READ_TIMEOUT_S": "1",
    "FINPREDICT_REGISTRY_S3_MAX_ATTEMPTS": "2",
}
MULTIPART = {  # the smallest part S3 accepts
    "FINPREDICT_REGISTRY_S3_MULTIPART_THRESHOLD_BYTES": str(5 * MIB),
    "FINPREDICT_REGISTRY_S3_MULTIPART_CHUNK_BYTES": str(5 * MIB),
}


@pytest.fixture(scope="module")
def registry(s3: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("registry-s3")
    with running_registry("s3", tmp, None, s3, **MULTIPART, **FAST_FAILURE) as reg:
        yield reg


@pytest.fixture
def admin(registry: Registry) -> Iterator[Client]:
    client = registry.client(ADMIN_TOKEN)
    yield client
    client.close()


def download(client: Client, model: str, version: int) -> bytes:
    return b"".join(
        msg.chunk for msg in client.DownloadArtifact(pb.DownloadArtifactRequest(model=model, version=version))
    )


def spooled(registry: Registry) -> list[Path]:
    return list(registry.upload_dir.glob("*"))


def test_artifacts_are_stored_in_the_bucket_by_digest_and_served_back(
    registry: Registry, admin: Client, s3: S3Server
) -> None:
    model = create_model(admin, "s3")
    data = bytes(range(256)) * 1000
    v1 = register(admin, model, data, artifact_sha256=sha256(data))
    bucket, key = registry.s3_key(sha256(data))
    assert key == f"artifacts/sha256/{sha256(data)[:2]}/{sha256(data)}"
    assert (v1.artifact.sha256, v1.artifact.size_bytes) == (sha256(data), len(data))
    assert v1.artifact.uri == f"s3://{bucket}/{key}"
    head = s3.client().head_object(Bucket=bucket, Key=key)
    assert head["ContentLength"] == len(data)
    assert head["Metadata"] == {"sha256": sha256(data)}
    assert download(admin, model, v1.version) == data

    v2 = register(admin, model, data)  # the same bytes again: the same object
    assert v2.artifact.uri == v1.artifact.uri
    assert download(admin, model, v2.version) == data
    assert s3.keys(bucket, "artifacts/").count(key) == 1
    assert spooled(registry) == []  # the local spool files are gone once S3 has the bytes


def test_a_large_artifact_goes_up_in_parts_and_comes_back_whole(
    registry: Registry, admin: Client, s3: S3Server
) -> None:
    model = create_model(admin, "s3big")
    data = random.Random(23).randbytes(12 * MIB)
    v = register(admin, model, data)
    bucket, key = registry.s3_key(v.artifact.sha256)
    etag = s3.client().head_object(Bucket=bucket, Key=key)["ETag"]
    assert etag.strip('"').endswith("-3")  # a multipart upload of 5 + 5 + 2 MiB
    assert download(admin, model, v.version) == data
    assert spooled(registry) == []


def test_a_changed_object_is_refused_with_data_loss_and_served_again_once_repaired(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "s3corrupt")
    data = b"model bytes " * 5000
    v = register(admin, model, data)
    damaged = bytearray(data)
    damaged[1000] ^= 0xFF
    for bad in (bytes(damaged), data[:-1], data + b"!"):  # a flipped bit, truncated, extended
        registry.write_blob(v.artifact.sha256, bad)
        with pytest.raises(grpc.RpcError) as exc:
            download(admin, model, v.version)
        assert code_of(exc) == grpc.StatusCode.DATA_LOSS
        assert "corrupted" in details_of(exc)
        assert v.artifact.sha256 in details_of(exc)
        assert f"{model} version {v.version}" in details_of(exc)
    registry.write_blob(v.artifact.sha256, data)
    assert download(admin, model, v.version) == data


def test_a_missing_object_is_data_loss(registry: Registry, admin: Client, s3: S3Server) -> None:
    model = create_model(admin, "s3gone")
    v = register(admin, model, b"soon deleted")
    bucket, key = registry.s3_key(v.artifact.sha256)
    s3.client().delete_object(Bucket=bucket, Key=key)
    with pytest.raises(grpc.RpcError) as exc:
        download(admin, model, v.version)
    assert code_of(exc) == grpc.StatusCode.DATA_LOSS
    assert "missing" in details_of(exc)


def test_an_artifact_registered_by_uri_elsewhere_in_the_bucket_is_not_served(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "s3uri")
    bucket, _ = registry.s3_key("0" * 64)
    head = header(model, artifact_uri=f"s3://{bucket}/elsewhere/m.ubj", artifact_sha256="c" * 64)
    v = admin.RegisterVersion(iter([pb.RegisterVersionRequest(header=head)])).version
    with pytest.raises(grpc.RpcError) as exc:
        download(admin, model, v.version)
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION


def _unavailable_within(call: Callable[[], object], seconds: float) -> str:
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as exc:
        call()
    elapsed = time.monotonic() - started
    assert code_of(exc) == grpc.StatusCode.UNAVAILABLE, details_of(exc)
    assert elapsed < seconds, f"took {elapsed:.1f}s"
    return details_of(exc)


def test_a_silent_or_unreachable_s3_gives_unavailable_within_seconds(s3: S3Server, tmp_path: Path) -> None:
    proxy = DelayProxy(s3.port).start()
    proxy_running = True
    endpoint = {"FINPREDICT_REGISTRY_S3_ENDPOINT_URL": f"http://{proxy.target}"}
    try:
        with running_registry("s3", tmp_path, None, s3, **endpoint, **FAST_FAILURE) as reg:
            admin = reg.client(ADMIN_TOKEN)
            try:
                model = create_model(admin, "outage")
                data = b"before the outage " * 1000
                v = register(admin, model, data)

                proxy.response_delay_s = 3600.0  # S3 accepts connections and never answers
                detail = _unavailable_within(lambda: download(admin, model, v.version), 10)
                assert "artifact store is unavailable" in detail
                _unavailable_within(lambda: register(admin, model, b"during the outage"), 10)
                assert spooled(reg) == []
                # metadata does not need S3
                assert admin.GetVersion(pb.GetVersionRequest(model=model, version=v.version)).version
                proxy.response_delay_s = 0.0
                assert download(admin, model, v.version) == data  # S3 is back: so is the artifact

                proxy.stop()  # now nothing listens: connections are refused
                proxy_running = False
                _unavailable_within(lambda: download(admin, model, v.version), 10)
                _unavailable_within(lambda: register(admin, model, b"refused"), 10)
            finally:
                admin.close()
    finally:
        if proxy_running:
            proxy.stop()


def test_store_settings_refuse_bad_s3_locations() -> None:
    assert S3Location.parse("s3://models") == S3Location("models", "")
    assert S3Location.parse("s3://models/a/b/") == S3Location("models", "a/b/")
    for bad in ("s3://Bad_Bucket/x", "s3://models/../x", "s3://models/a//b", "s3://"):
        with pytest.raises(ConfigError, match="FINPREDICT_REGISTRY_ARTIFACT_STORE"):
            RegistrySettings(artifact_store=bad).validate_extra()
    with pytest.raises(ConfigError, match="FINPREDICT_REGISTRY_ARTIFACT_STORE"):
        RegistrySettings(artifact_store="gs://models").validate_extra()
