"""Paths and URIs from requests never escape the stores.

* Registry: artifacts are addressed by their sha256 only; an ``artifact_uri`` must be an external
  scheme (never a local path or ``file://``), and an external URI, however it is spelled, is
  never read back as a local file.
* Monitor: a model name names a reference profile (``<profiles_dir>/<model>/<version>.bin``) and a
  log partition; names that could leave those folders are refused, and a profile planted outside
  the profiles folder is never loaded.

Each test also lists every file the service wrote: all of them are inside its own folders.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.demo import replay as rp
from finpredict.testkit.monitor import authed, monitor_env
from finpredict.testkit.process import ServiceProcess, start_service
from finpredict.testkit.security import call_code, download_bytes, files_under

TOKEN = "paths-admin-token-0123456789"
SECRET = b"planted outside the store: must never be served\n"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[tuple[ServiceProcess, Path]]:
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(SECRET)
    env = {
        "FINPREDICT_REGISTRY_DATA_DIR": str(tmp_path / "data"),
        "FINPREDICT_REGISTRY_TOKENS": f"{TOKEN}=a:admin",
    }
    proc = start_service("registry", tmp_path / "run", env=env)
    try:
        yield proc, tmp_path
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _register(
    stub: registry_pb2_grpc.RegistryServiceStub, head: rpb.VersionHeader, chunks: list[bytes]
) -> grpc.StatusCode:
    messages = [
        rpb.RegisterVersionRequest(header=head),
        *(rpb.RegisterVersionRequest(chunk=c) for c in chunks),
    ]
    return call_code(stub.RegisterVersion, messages, bearer_metadata(TOKEN))


def test_registry_refuses_local_artifact_uris_and_never_serves_outside_files(
    registry: tuple[ServiceProcess, Path],
) -> None:
    proc, root = registry
    secret_path = root / "outside" / "secret.txt"
    sha = hashlib.sha256(SECRET).hexdigest()
    md = bearer_metadata(TOKEN)
    with grpc.insecure_channel(proc.target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        stub.CreateModel(rpb.CreateModelRequest(name="paths"), metadata=md, timeout=10)
        local = [
            secret_path.as_uri(),
            str(secret_path),
            "../" * 12 + str(secret_path).lstrip("/"),
            "file://localhost" + str(secret_path),
            "FILE://" + str(secret_path),
            " file://" + str(secret_path),
            "s3:" + str(secret_path),  # not the s3:// scheme
        ]
        for uri in local:
            head = rpb.VersionHeader(model="paths", artifact_uri=uri, artifact_sha256=sha)
            assert _register(stub, head, []) == grpc.StatusCode.INVALID_ARGUMENT, uri
        for sha_value in ("../" * 10 + "etc/passwd", "/" + "a" * 63, "A" * 64, "g" * 64):
            head = rpb.VersionHeader(model="paths", artifact_sha256=sha_value)
            assert _register(stub, head, [b"bytes"]) == grpc.StatusCode.INVALID_ARGUMENT, sha_value
        external = [
            "s3://bucket/../../../../" + str(secret_path).lstrip("/"),
            "https://127.0.0.1/../../" + str(secret_path).lstrip("/"),
            "wandb-artifact://../../" + str(secret_path).lstrip("/"),
        ]
        for i, uri in enumerate(external, start=1):
            head = rpb.VersionHeader(model="paths", artifact_uri=uri, artifact_sha256=sha)
            assert _register(stub, head, []) == grpc.StatusCode.OK, uri
            download = rpb.DownloadArtifactRequest(model="paths", version=i)
            code, served = download_bytes(stub.DownloadArtifact, download, md)
            assert code == grpc.StatusCode.FAILED_PRECONDITION, uri
            assert SECRET not in served
    assert secret_path.read_bytes() == SECRET
    written = files_under(root / "data")
    assert written, "the registry wrote its database and store under its data dir"
    assert not [
        p for p in files_under(root) if p not in written and p.parent not in (root / "run", root / "outside")
    ]


@pytest.fixture(scope="module")
def profile_bytes() -> bytes:
    return bytes(rp.reference_profile(n_rows=1000).to_bytes())


def test_monitor_refuses_model_names_that_leave_its_folders(tmp_path: Path, profile_bytes: bytes) -> None:
    # a valid profile planted where a crafted model name would point, outside the profiles dir
    (tmp_path / "planted").mkdir()
    (tmp_path / "planted" / "1.bin").write_bytes(profile_bytes)
    (tmp_path / "profiles").mkdir()
    proc = start_service("monitor", tmp_path / "run", env=monitor_env(tmp_path))
    hostile = [
        "../planted",
        "../../" + str(tmp_path / "planted").lstrip("/"),
        str(tmp_path / "planted"),
        "a/../../planted",
        "model=x/version=1",
        "..",
        ".",
        "a" * 300,
    ]
    try:
        with grpc.insecure_channel(proc.target) as channel:
            stub = monitor_pb2_grpc.MonitorServiceStub(authed(channel))
            for i, name in enumerate(hostile):
                record = mpb.PredictionRecord(
                    request_id=f"r{i}",
                    model=types_pb2.ModelRef(name=name, version=1),
                    score=0.5,
                    threshold=0.5,
                )
                record.time.FromSeconds(1_740_000_000)
                resp = stub.IngestPredictions(
                    iter([mpb.IngestPredictionsRequest(records=[record])]), timeout=10
                )
                assert (resp.accepted, resp.rejected) == (0, 1), name
                assert resp.first_rejection.startswith("records[0].model.name"), resp.first_rejection
                report = mpb.GetDriftReportRequest(model=types_pb2.ModelRef(name=name, version=1), window=1)
                assert call_code(stub.GetDriftReport, report) == grpc.StatusCode.INVALID_ARGUMENT, name
                retrain = mpb.TriggerRetrainingRequest(model=name)
                assert call_code(stub.TriggerRetraining, retrain) == grpc.StatusCode.INVALID_ARGUMENT, name
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]
    assert "planted" not in proc.logs()  # the planted profile was never even looked at
    assert not list((tmp_path / "data" / "predictions").iterdir())
    outside = [p for p in files_under(tmp_path) if not p.is_relative_to(tmp_path / "data")]
    assert sorted(p.relative_to(tmp_path).parts[0] for p in outside) == ["planted", "run", "run"], outside
