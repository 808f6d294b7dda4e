"""Run fingerprints, the register stage's look-up of an earlier run, and ``finpredict experiments``
against a real registry (versions registered as the pipeline registers them; no pipeline run)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2
from typer.testing import CliRunner

from finpredict.api.registry.v1 import registry_pb2
from finpredict.cli.__main__ import build_app
from finpredict.pipelines import runs
from finpredict.pipelines.cli import summary
from finpredict.pipelines.register import find_run
from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    PASSING,
    PROFILE,
    READER_TOKEN,
    Registry,
    create_model,
    register,
    running_registry,
)

PARAMS: dict[str, Any] = {
    "data": {"source": "synthetic", "rows": 5000, "seed": 42},
    "train": {"max_depth": 4, "eta": 0.05},
    "wandb": {"enabled": True, "project": "finpredict"},
    "register": {"model": "credit-default", "trigger": "manual"},
}
DATA = {"data/raw/loans.parquet": "a" * 32, "data/features": "b" * 32 + ".dir"}


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry("sqlite", tmp_path_factory.mktemp("experiments"), None) as r:
        yield r


def _with(params: dict[str, Any], section: str, key: str, value: Any) -> dict[str, Any]:
    out = json.loads(json.dumps(params))
    out[section][key] = value
    return out


def test_the_fingerprint_is_params_data_and_code_and_nothing_else() -> None:
    code = runs.code_version()
    assert code == runs.code_version()
    assert len(code) == 64
    base = runs.fingerprint(PARAMS, DATA, code)
    # why a run started and where it is tracked do not change the model
    assert runs.fingerprint(_with(PARAMS, "register", "trigger", "alert:42"), DATA, code) == base
    assert runs.fingerprint(_with(PARAMS, "wandb", "project", "elsewhere"), DATA, code) == base
    assert runs.fingerprint(dict(reversed(PARAMS.items())), dict(reversed(DATA.items())), code) == base
    # a param, a data md5 or the code does
    assert runs.fingerprint(_with(PARAMS, "train", "max_depth", 5), DATA, code) != base
    assert runs.fingerprint(_with(PARAMS, "register", "model", "other"), DATA, code) != base
    assert runs.fingerprint(PARAMS, {**DATA, "data/raw/loans.parquet": "c" * 32}, code) != base
    assert runs.fingerprint(PARAMS, DATA, "0" * 64) != base


def _register_run(reg: Registry, model: str, run_id: str, params: dict[str, Any], auc: float) -> str:
    """A version as the register stage registers it: fingerprint in lineage and tags."""
    code = runs.code_version()
    fp = runs.fingerprint(params, DATA, code)
    struct = struct_pb2.Struct()
    struct.update(params)
    lineage = registry_pb2.Lineage(
        git_commit="3f9c2e1d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
        data_md5=DATA,
        dvc_lock_sha256="e" * 64,
        params=struct,
        wandb_run_id=run_id,
        wandb_run_path=f"finpredict/{run_id}",
        trigger="manual",
        fingerprint=fp,
    )
    register(
        reg.client(),
        model,
        run_id.encode(),
        gate_results=PASSING,
        lineage=lineage,
        reference_profile=PROFILE,
        metrics={"auc_roc": auc, "ece": 0.01},
        tags={runs.FINGERPRINT_TAG: fp, runs.CODE_VERSION_TAG: code},
    )
    return fp


def test_the_register_stage_finds_the_run_with_the_same_fingerprint(reg: Registry) -> None:
    model = create_model(reg.client(), "reuse")
    assert find_run(reg.target, READER_TOKEN, model, "f" * 64) is None  # nothing registered yet
    fp = _register_run(reg, model, "run1abcd", PARAMS, 0.86)
    found = find_run(reg.target, READER_TOKEN, model, fp)
    assert found is not None
    assert (found.version, runs.run_id(found), found.lineage.fingerprint) == (1, "run1abcd", fp)
    assert find_run(reg.target, READER_TOKEN, model, runs.fingerprint(PARAMS, {}, "")) is None
    assert find_run(reg.target, READER_TOKEN, "no-such-model", fp) is None


def cli(*args: str, env: dict[str, str | None] | None = None) -> Any:
    return CliRunner().invoke(build_app(), ["experiments", *args], env={"COLUMNS": "250", **(env or {})})


def test_experiments_list_and_compare_show_the_one_differing_param(reg: Registry) -> None:
    model = create_model(reg.client(), "exp")
    _register_run(reg, model, "runaaaa1", PARAMS, 0.86)
    _register_run(reg, model, "runbbbb2", _with(PARAMS, "train", "max_depth", 5), 0.87)
    opts = ["--target", reg.target, "--token", READER_TOKEN, "--model", model]

    listed = cli(*opts, "list")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    [newer] = [line for line in lines if line.startswith("runbbbb2")]
    [older] = [line for line in lines if line.startswith("runaaaa1")]
    assert "train.max_depth=5" in newer
    assert "0.8700" in newer
    assert "finpredict/runbbbb2" in newer
    assert "train.max_depth" not in older
    assert [r["run_id"] for r in json.loads(cli(*opts, "list", "--json").stdout)] == ["runbbbb2", "runaaaa1"]

    result = cli(*opts, "compare", "runaaaa1", "v2", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["differing_params"] == ["train.max_depth"]
    assert (doc["params"]["train.max_depth"]["a"], doc["params"]["train.max_depth"]["b"]) == (4, 5)
    assert doc["metrics"]["auc_roc"]["delta"] == pytest.approx(0.01)
    assert doc["metrics"]["ece"]["delta"] == pytest.approx(0.0)
    assert not any(d["differs"] for d in doc["data_md5"].values())
    assert {k for k, c in doc["code"].items() if c["differs"]} == {"fingerprint"}

    text = cli(*opts, "compare", "runaaaa1", "runbbbb2")
    assert text.exit_code == 0, text.output
    assert "params that differ: train.max_depth" in text.stdout
    [row] = [line for line in text.stdout.splitlines() if "train.max_depth" in line and line.startswith("*")]
    assert row.split() == ["*", "train.max_depth", "4", "5"]
    assert "train.eta" not in text.stdout  # equal params only with --all
    assert "train.eta" in cli(*opts, "compare", "runaaaa1", "runbbbb2", "--all").stdout
    assert "+0.01" in text.stdout  # the AUC delta


def test_an_unknown_run_or_model_is_a_clear_error(reg: Registry) -> None:
    model = create_model(reg.client(), "exp-errors")
    _register_run(reg, model, "runcccc1", PARAMS, 0.86)
    opts = ["--target", reg.target, "--token", ADMIN_TOKEN, "--model", model]
    result = cli(*opts, "compare", "runcccc1", "nosuchrun")
    assert result.exit_code == 2
    assert f"unknown run 'nosuchrun' of model '{model}' (known runs, newest first: runcccc1)" in result.output
    assert "Traceback" not in result.output
    result = cli(*opts, "compare", "v7", "runcccc1")
    assert (result.exit_code, "unknown run 'v7'" in result.output) == (2, True)
    result = cli("--target", reg.target, "--token", ADMIN_TOKEN, "--model", "missing-model", "list")
    assert result.exit_code == 2
    assert "model 'missing-model' has no runs in the registry" in result.output


def test_without_a_target_the_local_training_registry_is_started_for_the_command(tmp_path: Path) -> None:
    result = cli("list", env={"FINPREDICT_REGISTRY_TARGET": None, "FINPREDICT_RUN_DIR": str(tmp_path)})
    assert result.exit_code == 2, result.output
    assert "[experiments] started a local registry" in result.output
    assert "[experiments] stopped the local registry" in result.output
    assert "model 'credit-default' has no runs" in result.output
    assert (tmp_path / "train-registry").is_dir()


def test_the_train_summary_names_the_reused_run(tmp_path: Path) -> None:
    reg = {"model": "credit-default", "version": 3, "reused": True, "run_id": "run3abcd"}
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports" / "registration.json").write_text(json.dumps(reg))
    text = summary(tmp_path, ["train", "evaluate", "register"], 0)
    assert "reused run run3abcd (credit-default version 3)" in text
    assert "registered:" not in text
