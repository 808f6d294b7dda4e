"""End to end: the project's dvc.yaml in a temporary git + DVC repo, a real registry, W&B offline.

One repository goes through the whole story in order (first run, cache, tracking, an identical
re-run that reuses the first run, param change, the two runs compared, weak model, corrupted
snapshot); each step starts from the state the earlier ones left, so the
steps are one test (tests run in any order) and each step is a function of its own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import polars as pl
import pytest
import yaml
from google.protobuf import json_format
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.cli.__main__ import build_app
from finpredict.features import records_to_matrix
from finpredict.pipelines.artifact import load_model
from finpredict.testkit import wandb_log
from finpredict.testkit.pipeline import PipelineRepo, make_repo
from finpredict.testkit.process import ServiceProcess, start_service

TOKEN = "pipeline-test-token-0001"
MODEL = "credit-default"
ROWS = 5000

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    d = tmp_path_factory.mktemp("registry")
    svc = start_service(
        "registry",
        d,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(d / "data"),
            "FINPREDICT_REGISTRY_TOKENS": f"{TOKEN}=pipeline:admin",
        },
    )
    yield svc
    svc.stop()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory, registry: ServiceProcess) -> PipelineRepo:
    return make_repo(
        tmp_path_factory.mktemp("pipeline") / "repo",
        rows=ROWS,
        extra_env={"FINPREDICT_REGISTRY_TARGET": registry.target, "FINPREDICT_REGISTRY_TOKEN": TOKEN},
    )


def _stub(registry: ServiceProcess) -> tuple[grpc.Channel, Any]:
    ch = grpc.insecure_channel(registry.target)
    return ch, registry_pb2_grpc.RegistryServiceStub(ch)


def versions(registry: ServiceProcess) -> list[Any]:
    ch, stub = _stub(registry)
    with ch:
        try:
            resp = stub.ListVersions(
                registry_pb2.ListVersionsRequest(model=MODEL),
                metadata=(("authorization", f"Bearer {TOKEN}"),),
                timeout=10,
            )
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return []
            raise
    return list(resp.versions)


def lineage(registry: ServiceProcess, version: int) -> Any:
    ch, stub = _stub(registry)
    with ch:
        return stub.GetLineage(
            registry_pb2.GetLineageRequest(model=MODEL, version=version),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=10,
        )


def lock_md5(repo: PipelineRepo, stage: str, path: str) -> str:
    lock = yaml.safe_load((repo.path / "dvc.lock").read_text())
    for entry in lock["stages"][stage]["outs"]:
        if entry["path"] == path:
            return str(entry["md5"])
    raise AssertionError(f"{path} not in dvc.lock stage {stage}")


def _first_run_trains_passes_gates_and_registers(repo: PipelineRepo, registry: ServiceProcess) -> None:
    res = repo.dvc("repro")
    assert res.rc == 0, res.out
    assert res.stages_run == ["ingest", "validate", "features", "train", "evaluate", "profile", "register"]
    gates = repo.read_json("reports/gates.json")
    assert gates["passed"] is True
    assert {g["name"] for g in gates["gates"]} == {
        "auc_roc",
        "ece",
        "compute_p99_ms",
        "demographic_parity_diff",
    }
    reg = repo.read_json("reports/registration.json")
    [version] = versions(registry)
    assert version.version == reg["version"]
    assert version.gates_passed
    assert version.artifact.sha256 == repo.read_json("models/model/manifest.json")["sha256"]
    profile = (repo.path / "models/reference_profile.bin").read_bytes()
    assert version.reference_profile == profile
    assert version.reference_profile_sha256 == hashlib.sha256(profile).hexdigest()
    lin = lineage(registry, version.version)
    assert lin.lineage.data_md5["data/raw/loans.parquet"] == lock_md5(
        repo, "ingest", "data/raw/loans.parquet"
    )
    assert lin.lineage.data_md5["data/features"] == lock_md5(repo, "features", "data/features")
    head = repo.git("rev-parse", "HEAD").out.strip()
    assert lin.lineage.git_commit == head
    assert lin.lineage.wandb_run_id == repo.read_json("reports/wandb.json")["run_id"]
    assert lin.lineage.params["train"]["max_depth"] == repo.params()["train"]["max_depth"]
    assert len(lin.lineage.dvc_lock_sha256) == 64
    # what the pipeline registers satisfies the registry's default promotion policy
    ch, stub = _stub(registry)
    with ch:
        check = stub.GetPolicy(
            registry_pb2.GetPolicyRequest(model=MODEL, version=version.version),
            metadata=(("authorization", f"Bearer {TOKEN}"),),
            timeout=10,
        )
    assert check.policy.is_default
    assert (check.check.promotable, list(check.check.problems)) == (True, [])
    # the snapshot and model reach the local DVC remote
    push = repo.dvc("push")
    assert push.rc == 0, push.out
    assert any((repo.path / "remote").rglob("*"))


def _second_run_does_no_work(repo: PipelineRepo, registry: ServiceProcess) -> None:
    before = len(versions(registry))
    res = repo.dvc("repro")
    assert res.rc == 0, res.out
    assert res.stages_run == []
    assert len(versions(registry)) == before


def _same_rows_same_features_in_training_and_serving(repo: PipelineRepo) -> None:
    ds_cols = repo.read_json("models/model/manifest.json")["model_features"]
    trained = pl.read_parquet(repo.path / "data/features/test.parquet").select(ds_cols).to_numpy()
    inputs = pl.read_parquet(repo.path / "data/features/test_inputs.parquet").to_dicts()
    served = records_to_matrix(inputs)  # what the model server does with request dicts
    np.testing.assert_array_equal(served, trained.astype(np.float32))
    for i in (0, len(inputs) // 2, len(inputs) - 1):  # one row at a time, as in serving
        np.testing.assert_array_equal(records_to_matrix([inputs[i]])[0], trained[i].astype(np.float32))


def _wandb_offline_run_holds_metrics_plots_model_and_gates_agree(repo: PipelineRepo) -> None:
    info = repo.read_json("reports/wandb.json")
    assert info["mode"] == "offline"
    run_dir = Path(info["run_dir"])
    assert run_dir.is_dir()
    assert run_dir.is_relative_to(repo.path / "wandb")
    [run_file] = list(run_dir.glob("run-*.wandb"))
    summary = wandb_log.summary(run_file)
    tables = {p.name.split("_table")[0] for p in (run_dir / "files" / "media" / "table").glob("*.table.json")}
    assert {"roc", "calibration", "confusion_matrix"} <= tables
    config = wandb_log.config(run_file)
    assert config["data_md5"]["data/raw/loans.parquet"] == lock_md5(repo, "ingest", "data/raw/loans.parquet")
    assert config["git_commit"] == repo.git("rev-parse", "HEAD").out.strip()
    assert config["params"] == repo.params()
    model_arts = [a for a in wandb_log.artifacts(run_file) if a.type == "model"]
    assert len(model_arts) == 1
    staged = {e.path: Path(e.local_path) for e in model_arts[0].manifest.contents}
    manifest = repo.read_json("models/model/manifest.json")
    assert hashlib.sha256(staged["model.ubj"].read_bytes()).hexdigest() == manifest["sha256"]

    # independent computation of the gates from the model and the test split
    loaded = load_model(repo.path / "models/model")
    test = pl.read_parquet(repo.path / "data/features/test.parquet")
    p = loaded.booster.inplace_predict(test.select(manifest["model_features"]).to_numpy().astype(np.float32))
    y = test["default"].to_numpy()
    assert summary["auc_roc"] == pytest.approx(roc_auc_score(y, p), abs=1e-9)
    # reference ECE: an explicit loop over 10 equal-width bins
    ece = 0.0
    for b in range(10):
        lo, hi = b / 10, (b + 1) / 10
        mask = (p >= lo) & ((p < hi) if b < 9 else (p <= hi))
        if mask.any():
            ece += mask.sum() / len(p) * abs(y[mask].mean() - p[mask].mean())
    assert summary["ece"] == pytest.approx(ece, abs=1e-6)
    # fairlearn-style demographic parity difference (between_groups) on the approval decision
    threshold = repo.params()["evaluate"]["threshold"]
    frame = pl.DataFrame({"g": test["protected_group"], "approved": p < threshold})
    rates = frame.group_by("g").agg(pl.col("approved").mean())["approved"]
    assert summary["demographic_parity_diff"] == pytest.approx(rates.max() - rates.min(), abs=1e-9)
    assert 0 < summary["compute_p99_ms"] <= repo.params()["gates"]["compute_p99_ms_max"]
    gates = {g["name"]: g for g in repo.read_json("reports/gates.json")["gates"]}
    for name in ("auc_roc", "ece", "demographic_parity_diff", "compute_p99_ms"):
        assert gates[name]["value"] == pytest.approx(summary[name], rel=1e-9)
    evaluate = repo.params()["evaluate"]
    assert f"pooled over {evaluate['compute_rounds']} rounds of " in gates["compute_p99_ms"]["detail"]


def _identical_rerun_reuses_the_registered_run(repo: PipelineRepo, registry: ServiceProcess) -> None:
    """Every stage again (``--force``) on the same params, data and code: the register stage finds
    the version of the run with the same fingerprint, says so and registers nothing."""
    [first] = versions(registry)
    first_run = lineage(registry, first.version).lineage.wandb_run_id
    res = repo.dvc("repro", "--force")
    assert res.rc == 0, res.out
    assert res.stages_run == ["ingest", "validate", "features", "train", "evaluate", "profile", "register"]
    assert f"reused run {first_run} (version {first.version})" in res.out
    assert [v.version for v in versions(registry)] == [first.version]
    reg = repo.read_json("reports/registration.json")
    assert (reg["reused"], reg["run_id"], reg["version"]) == (True, first_run, first.version)
    assert reg["fingerprint"] == lineage(registry, first.version).lineage.fingerprint
    assert repo.read_json("reports/wandb.json")["run_id"] != first_run  # evaluate tracked a new run


def _experiments_compare_shows_the_one_param(repo: PipelineRepo, registry: ServiceProcess) -> None:
    """``finpredict experiments compare`` of the first run and the param change's run."""
    newest, first = versions(registry)[:2]
    run_a, run_b = lineage(registry, first.version).lineage, lineage(registry, newest.version).lineage
    assert run_a.fingerprint != run_b.fingerprint
    args = ["experiments", "--target", registry.target, "--token", TOKEN, "--model", MODEL, "compare"]
    result = CliRunner().invoke(build_app(), [*args, run_a.wandb_run_id, run_b.wandb_run_id, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["differing_params"] == ["train.max_depth"]
    assert not any(d["differs"] for d in doc["data_md5"].values())
    assert {k for k, c in doc["code"].items() if c["differs"]} == {"fingerprint"}
    delta = newest.metrics["auc_roc"] - first.metrics["auc_roc"]
    assert doc["metrics"]["auc_roc"]["delta"] == pytest.approx(delta)
    result = CliRunner().invoke(build_app(), [*args, run_a.wandb_run_id, run_b.wandb_run_id])
    assert result.exit_code == 0, result.output
    assert "params that differ: train.max_depth" in result.stdout
    assert run_b.wandb_run_path in result.stdout


def _param_change_reruns_only_dependent_stages(repo: PipelineRepo, registry: ServiceProcess) -> None:
    old = lineage(registry, versions(registry)[0].version)
    old_params = repo.params()
    new_depth = old_params["train"]["max_depth"] + 1
    res = repo.dvc("exp", "run", "-S", f"train.max_depth={new_depth}")
    assert res.rc == 0, res.out
    assert sorted(res.stages_run) == ["evaluate", "profile", "register", "train"]
    newest = versions(registry)[0]
    assert newest.version == old.model.version + 1
    new = lineage(registry, newest.version)
    assert dict(new.lineage.data_md5) == dict(old.lineage.data_md5)
    assert new.lineage.git_commit == old.lineage.git_commit
    assert new.lineage.dvc_lock_sha256 != old.lineage.dvc_lock_sha256
    assert new.lineage.wandb_run_id != old.lineage.wandb_run_id
    old_p = json_format.MessageToDict(old.lineage.params)
    new_p = json_format.MessageToDict(new.lineage.params)
    assert new_p["train"]["max_depth"] == new_depth
    assert {k for k in new_p["train"] if new_p["train"][k] != old_p["train"][k]} == {"max_depth"}
    assert {k: v for k, v in new_p.items() if k != "train"} == {
        k: v for k, v in old_p.items() if k != "train"
    }
    # the new model differs, the data does not
    assert newest.artifact.sha256 != versions(registry)[1].artifact.sha256


def _weak_model_fails_auc_gate_and_is_not_registered(repo: PipelineRepo, registry: ServiceProcess) -> None:
    before = len(versions(registry))
    params = repo.params()
    saved = json.loads(json.dumps(params))
    params["train"].update({"max_depth": 1, "num_boost_round": 1, "early_stopping_rounds": None, "eta": 0.3})
    params["train"]["colsample_bytree"] = 0.1
    params["wandb"]["enabled"] = False  # tracking of this run is not what is under test
    repo.set_params(params)
    try:
        res = repo.dvc("repro")
        assert res.rc != 0
        assert "1 quality gate(s) failed: auc_roc" in res.out
        assert "register" not in res.stages_run
        gates = {g["name"]: g for g in repo.read_json("reports/gates.json")["gates"]}
        assert gates["auc_roc"]["passed"] is False
        assert gates["auc_roc"]["value"] < params_gate(repo)
        assert len(versions(registry)) == before
    finally:
        repo.set_params(saved)


def params_gate(repo: PipelineRepo) -> float:
    return float(repo.params()["gates"]["auc_roc_min"])


def _corrupted_snapshot_is_refused_at_validation(repo: PipelineRepo, registry: ServiceProcess) -> None:
    """One snapshot with a column of the wrong type, out-of-range values and a missing column."""
    from finpredict.pipelines.common import default_dataset_schema
    from finpredict.pipelines.dgp import generate

    before = len(versions(registry))
    df = generate(1500, seed=99)
    bad_rows = pl.col("application_id").str.ends_with("7")
    df = df.with_columns(
        pl.col("annual_revenue").cast(pl.String),
        pl.when(bad_rows).then(9.5).otherwise(pl.col("credit_utilization")).alias("credit_utilization"),
    ).drop("sector")
    ext = repo.path / "data" / "external"
    df.write_parquet(ext / "loans.parquet")
    (ext / "schema.yaml").write_text(yaml.safe_dump(default_dataset_schema().to_dict(), sort_keys=False))
    params = repo.params()
    saved = json.loads(json.dumps(params))
    params["data"].update(
        {"source": "file", "file": "data/external/loans.parquet", "schema_file": "data/external/schema.yaml"}
    )
    repo.set_params(params)
    try:
        res = repo.dvc("repro")
        assert res.rc != 0
        assert res.stages_run == ["ingest", "validate"]
        assert "data/raw/loans.parquet: 3 validation rule(s) failed" in res.out
        assert "column 'annual_revenue', rule dtype('Float64')" in res.out
        assert "has type String" in res.out
        assert "column 'sector', rule column_present" in res.out
        assert "column 'credit_utilization', rule in_range(0.0, 2.0)" in res.out
        assert "in 150 row(s)" in res.out  # ids ending in 7: 150 of 1500
        assert "row 7 (id app-99-00000007): 9.5" in res.out  # sample offending rows
        assert len(versions(registry)) == before
        assert not (repo.path / "reports/validation.json").exists()
    finally:
        repo.set_params(saved)
        (ext / "loans.parquet").unlink()
        (ext / "schema.yaml").unlink()


def test_the_pipeline_story_in_order(repo: PipelineRepo, registry: ServiceProcess) -> None:
    _first_run_trains_passes_gates_and_registers(repo, registry)
    _second_run_does_no_work(repo, registry)
    _same_rows_same_features_in_training_and_serving(repo)
    _wandb_offline_run_holds_metrics_plots_model_and_gates_agree(repo)
    _identical_rerun_reuses_the_registered_run(repo, registry)
    _param_change_reruns_only_dependent_stages(repo, registry)
    _experiments_compare_shows_the_one_param(repo, registry)
    _weak_model_fails_auc_gate_and_is_not_registered(repo, registry)
    _corrupted_snapshot_is_refused_at_validation(repo, registry)
