"""The model artifact: UBJ + manifest, verified before use; never a pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from finpredict.features import CREDIT_SCHEMA, FeatureSchema
from finpredict.pipelines._xgb import xgb
from finpredict.pipelines.artifact import ArtifactError, load_model, save_model


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    n_feat = len(CREDIT_SCHEMA.model_feature_names)
    x = rng.normal(size=(300, n_feat)).astype(np.float32)
    y = (x[:, 0] + rng.normal(size=300) > 0).astype(int)
    booster = xgb.train({"objective": "binary:logistic", "nthread": 1, "max_depth": 2}, xgb.DMatrix(x, y), 5)
    save_model(booster, tmp_path / "model", CREDIT_SCHEMA, {"best_iteration": 4, "n_trees": 5})
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "p.npy", booster.inplace_predict(x))
    return tmp_path / "model"


def test_round_trip_predicts_identically(model_dir: Path) -> None:
    loaded = load_model(model_dir)
    x = np.load(model_dir.parent / "x.npy")
    np.testing.assert_array_equal(loaded.booster.inplace_predict(x), np.load(model_dir.parent / "p.npy"))
    assert loaded.schema == FeatureSchema.from_dict(CREDIT_SCHEMA.to_dict())


def test_artifact_is_ubj_with_a_complete_manifest(model_dir: Path) -> None:
    raw = (model_dir / "model.ubj").read_bytes()
    assert raw[:1] == b"{"  # UBJSON object, not a pickle stream (b"\x80")
    assert {p.name for p in model_dir.iterdir()} == {"model.ubj", "manifest.json"}
    manifest = json.loads((model_dir / "manifest.json").read_text())
    assert manifest["format"] == "xgboost-ubj"
    assert manifest["size_bytes"] == len(raw)
    assert set(manifest["libraries"]) >= {"xgboost", "numpy", "polars", "python"}
    assert manifest["model_features"] == CREDIT_SCHEMA.model_feature_names


def test_tampered_model_is_refused(model_dir: Path) -> None:
    raw = bytearray((model_dir / "model.ubj").read_bytes())
    raw[-10] ^= 0xFF
    (model_dir / "model.ubj").write_bytes(bytes(raw))
    with pytest.raises(ArtifactError, match="sha256 of the model file"):
        load_model(model_dir)


def test_manifest_schema_must_match_the_model(model_dir: Path) -> None:
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["feature_schema"]["derived"] = []
    manifest["model_features"] = manifest["model_features"][:45]
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="the model takes 48 features, the manifest declares 45"):
        load_model(model_dir)


def test_other_xgboost_major_is_refused(model_dir: Path) -> None:
    path = model_dir / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["libraries"]["xgboost"] = "1.7.6"
    path.write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match=r"written by XGBoost 1\.x"):
        load_model(model_dir)
