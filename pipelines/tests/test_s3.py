"""The pipeline on S3 (moto's server on loopback): it registers its model into a registry whose
artifacts live in a bucket, and its DVC remote is a bucket too (``dvc-s3``): ``dvc push``, then
``dvc pull`` into an empty cache brings back the same bytes."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator

import grpc
import pytest
import yaml

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.testkit.pipeline import PipelineRepo, make_repo, use_s3_remote
from finpredict.testkit.process import ServiceProcess, start_service
from finpredict.testkit.s3 import S3Server

TOKEN = "pipeline-s3-token-0001"
MODEL = "credit-default"
ROWS = 5000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def artifacts_bucket(s3: S3Server) -> str:
    return s3.create_bucket("artifacts")


@pytest.fixture(scope="module")
def registry(
    s3: S3Server, artifacts_bucket: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    d = tmp_path_factory.mktemp("registry")
    svc = start_service(
        "registry",
        d,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(d / "data"),
            "FINPREDICT_REGISTRY_TOKENS": f"{TOKEN}=pipeline:admin",
            **s3.registry_env(artifacts_bucket, "models"),
        },
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, registry: ServiceProcess) -> PipelineRepo:
    return make_repo(
        tmp_path_factory.mktemp("pipeline-s3") / "repo",
        rows=ROWS,
        extra_env={"FINPREDICT_REGISTRY_TARGET": registry.target, "FINPREDICT_REGISTRY_TOKEN": TOKEN},
    )


def tracked_files(repo: PipelineRepo) -> dict[str, str]:
    """sha256 of every file under the outputs ``dvc.yaml`` caches (those a remote holds)."""
    stages = yaml.safe_load((repo.path / "dvc.yaml").read_text())["stages"]
    out: dict[str, str] = {}
    for stage in stages.values():
        for entry in stage.get("outs", []):
            if isinstance(entry, dict):
                [(path, opts)] = entry.items()
                if opts.get("cache") is False:
                    continue
            else:
                path = entry
            root = repo.path / path
            for f in [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file()):
                out[str(f.relative_to(repo.path))] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def download(registry: ServiceProcess, version: int) -> bytes:
    with grpc.insecure_channel(registry.target) as ch:
        stub = registry_pb2_grpc.RegistryServiceStub(ch)
        chunks = stub.DownloadArtifact(
            registry_pb2.DownloadArtifactRequest(model=MODEL, version=version),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=30,
        )
        return b"".join(msg.chunk for msg in chunks)


def test_the_pipeline_registers_into_s3_and_its_data_round_trips_through_an_s3_remote(
    repo: PipelineRepo, registry: ServiceProcess, s3: S3Server, artifacts_bucket: str
) -> None:
    dvc_bucket = s3.create_bucket("dvc")
    use_s3_remote(repo, s3, dvc_bucket)
    res = repo.dvc("repro")
    assert res.rc == 0, res.out
    assert "register" in res.stages_run

    # the model went through the registry into the artifacts bucket, and comes back whole
    reg = repo.read_json("reports/registration.json")
    sha = repo.read_json("models/model/manifest.json")["sha256"]
    assert reg["artifact_sha256"] == sha
    assert f"models/sha256/{sha[:2]}/{sha}" in s3.keys(artifacts_bucket, "models/")
    model_bytes = (repo.path / "models/model/model.ubj").read_bytes()
    assert download(registry, reg["version"]) == model_bytes

    # the data and the model go to the DVC remote on S3 and come back from it
    before = tracked_files(repo)
    assert {"data/raw/loans.parquet", "models/model/model.ubj"} <= before.keys()
    push = repo.dvc("push")
    assert push.rc == 0, push.out
    cache = repo.path / ".dvc" / "cache" / "files" / "md5"
    cached = {str(p.relative_to(cache)) for p in cache.rglob("*") if p.is_file()}
    remote = {k.removeprefix("dvc/files/md5/") for k in s3.keys(dvc_bucket, "dvc/files/md5/")}
    assert cached
    assert cached == remote
    shutil.rmtree(repo.path / ".dvc" / "cache")
    for rel in before:
        (repo.path / rel).unlink()
    pull = repo.dvc("pull")
    assert pull.rc == 0, pull.out
    assert tracked_files(repo) == before
