"""Training on Ray: ``train.backend: ray`` runs the train stage as XGBoost's collective over a
two-node Ray cluster on loopback (``ray start --head`` plus ``ray start --address``, one CPU each)
and registers, in a real registry, a version whose gates pass, with the lineage fields of a local
run of the same pipeline.

One sequence: the whole pipeline runs locally first (``dvc repro``, version 1), then
``train.backend`` flips to ``ray``, the cluster starts, ``dvc repro train`` trains on it and the
stages after train run as usual (version 2).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from finpredict.api.registry.v1 import registry_pb2
from finpredict.testkit.pipeline import PipelineRepo, make_repo
from finpredict.testkit.registry import ADMIN_TOKEN, Registry, running_registry
from finpredict.testkit.serving import ray_cluster

MODEL = "credit-default"
ROWS = 5000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry("sqlite", tmp_path_factory.mktemp("registry"), None) as reg:
        yield reg


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, registry: Registry) -> PipelineRepo:
    return make_repo(
        tmp_path_factory.mktemp("pipeline") / "repo",
        rows=ROWS,
        extra_env={
            "FINPREDICT_REGISTRY_TARGET": registry.target,
            "FINPREDICT_REGISTRY_TOKEN": ADMIN_TOKEN,
            "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0",
        },
    )


def registered(registry: Registry, version: int) -> tuple[Any, Any]:
    """The version and its lineage, as the registry returns them."""
    client = registry.client()
    try:
        got = client.GetVersion(registry_pb2.GetVersionRequest(model=MODEL, version=version)).version
        lineage = client.GetLineage(registry_pb2.GetLineageRequest(model=MODEL, version=version))
    finally:
        client.close()
    return got, lineage.lineage


def repro(repo: PipelineRepo, stages: list[str], *targets: str) -> None:
    res = repo.dvc("repro", *targets, timeout=300)
    assert res.rc == 0, res.out
    assert res.stages_run == stages


def outcome(repo: PipelineRepo) -> dict[str, Any]:
    assert repo.read_json("reports/gates.json")["passed"] is True
    return {
        "registration": repo.read_json("reports/registration.json"),
        "training": repo.read_json("models/model/manifest.json")["training"],
        "metrics": repo.read_json("reports/metrics.json"),
    }


def test_distributed_training_registers_with_the_lineage_of_a_local_run(
    repo: PipelineRepo, registry: Registry
) -> None:
    repro(repo, ["ingest", "validate", "features", "train", "evaluate", "profile", "register"])
    local = outcome(repo)
    assert local["training"]["backend"] == "local"

    params = repo.params()
    params["train"]["backend"] = "ray"
    repo.set_params(params)
    # The cluster is up for the train stage only: its idle processes would weigh on the
    # compute gate of the evaluate stage on a small machine.
    with ray_cluster({}, num_cpus=1, workers=1, worker_cpus=1) as cluster:
        repo.env["FINPREDICT_TRAIN_RAY_ADDRESS"] = cluster.address
        repro(repo, ["train"], "train")
    repro(repo, ["evaluate", "profile", "register"])
    distributed = outcome(repo)

    training = distributed["training"]
    assert training["backend"] == "ray"
    assert training["ray"]["workers"] == 2
    assert training["ray"]["nodes"] == 2  # one worker on the head, one on the worker node
    shards = training["ray"]["shards"]
    assert len({s["node"] for s in shards}) == 2
    assert sum(s["train_rows"] for s in shards) == local["training"]["train_rows"] == training["train_rows"]
    assert sum(s["valid_rows"] for s in shards) == local["training"]["valid_rows"]
    assert all(s["train_rows"] > 0 for s in shards)
    # the same data and params but for the backend: a model of the same quality
    assert abs(distributed["metrics"]["auc_roc"] - local["metrics"]["auc_roc"]) < 0.02

    v_local, lin_local = registered(registry, local["registration"]["version"])
    v_ray, lin_ray = registered(registry, distributed["registration"]["version"])
    assert v_ray.version == v_local.version + 1
    assert v_ray.gates_passed
    assert v_local.gates_passed
    assert {g.name for g in v_ray.gate_results} == {g.name for g in v_local.gate_results}
    assert all(g.passed for g in v_ray.gate_results)
    assert v_ray.artifact.sha256 == repo.read_json("models/model/manifest.json")["sha256"]
    assert v_ray.artifact.sha256 != v_local.artifact.sha256

    def fields(lineage: Any) -> set[str]:
        return {field.name for field, _ in lineage.ListFields()}

    assert fields(lin_ray) == fields(lin_local)
    assert {"git_commit", "data_md5", "dvc_lock_sha256", "params", "wandb_run_id", "trigger"} <= fields(
        lin_ray
    )
    assert dict(lin_ray.data_md5) == dict(lin_local.data_md5)  # the same snapshot and features
    assert lin_ray.git_commit == lin_local.git_commit
    assert lin_ray.trigger == lin_local.trigger
    assert lin_ray.params["train"]["backend"] == "ray"
    assert lin_local.params["train"]["backend"] == "local"
    assert lin_ray.wandb_run_id
    assert lin_ray.wandb_run_id != lin_local.wandb_run_id
    assert lin_ray.wandb_run_id == repo.read_json("reports/wandb.json")["run_id"]
    assert lin_ray.dvc_lock_sha256 != lin_local.dvc_lock_sha256
