"""The model artifact: manifest compatibility with training, checksum refusal, prediction, reason codes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import xgboost as xgb

from finpredict.features import CREDIT_SCHEMA, SchemaError
from finpredict.modelio import (
    ArtifactError,
    build_manifest,
    load_model_bytes,
    load_model_dir,
    save_model,
    sha256_hex,
)
from finpredict.testkit.models import SMALL_SCHEMA, TrainedModel, synthetic_records, train_small_model


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train_small_model(n=300, rounds=15)


def test_manifest_keys_match_the_training_pipeline(trained: TrainedModel, tmp_path: Path) -> None:
    manifest = save_model(trained.booster, tmp_path, trained.schema, {"best_iteration": 14})
    text = (tmp_path / "manifest.json").read_text()
    assert text == json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    assert set(manifest) == {
        "manifest_version", "format", "model_file", "sha256", "size_bytes", "feature_schema",
        "model_features", "libraries", "training", "created_at",
    }  # fmt: skip
    assert manifest["format"] == "xgboost-ubj"
    assert manifest["model_file"] == "model.ubj"
    raw = (tmp_path / "model.ubj").read_bytes()
    assert manifest["sha256"] == sha256_hex(raw)
    assert manifest["size_bytes"] == len(raw)
    assert manifest["feature_schema"] == trained.schema.to_dict()
    assert manifest["model_features"] == trained.schema.model_feature_names


def test_pipeline_loader_accepts_our_artifact_and_we_accept_its(
    trained: TrainedModel, tmp_path: Path
) -> None:
    pipeline_artifact = pytest.importorskip("finpredict.pipelines.artifact")
    save_model(trained.booster, tmp_path / "ours", trained.schema, {"best_iteration": 14})
    theirs = pipeline_artifact.load_model(tmp_path / "ours")
    assert theirs.schema == trained.schema
    pipeline_artifact.save_model(trained.booster, tmp_path / "theirs", trained.schema, {"best_iteration": 14})
    ours = load_model_dir(tmp_path / "theirs")
    assert ours.schema == trained.schema
    x = ours.matrix(trained.records[:10])
    np.testing.assert_allclose(ours.predict(x).scores, theirs.booster.inplace_predict(x), rtol=1e-6)


def test_corrupted_bytes_are_refused_before_parsing(trained: TrainedModel) -> None:
    manifest = build_manifest(trained.raw, trained.schema, {})
    bad = bytearray(trained.raw)
    bad[len(bad) // 2] ^= 0xFF
    with pytest.raises(ArtifactError, match="sha256 of the model file is"):
        load_model_bytes(bytes(bad), manifest)
    with pytest.raises(ArtifactError, match="bytes, the manifest says"):
        load_model_bytes(trained.raw[:-1], manifest)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "pickle"}, "format 'pickle'"),
        ({"model_features": ["a"]}, "model_features do not match"),
        ({"feature_schema": {"features": "x"}}, "bad feature schema"),
        ({"libraries": {"xgboost": "1.7.6"}}, "written by XGBoost 1.x"),
    ],
)
def test_inconsistent_manifest_is_refused(
    trained: TrainedModel, change: dict[str, object], message: str
) -> None:
    manifest = {**build_manifest(trained.raw, trained.schema, {}), **change}
    with pytest.raises(ArtifactError, match=message):
        load_model_bytes(trained.raw, manifest)


def test_feature_count_mismatch_is_refused(trained: TrainedModel) -> None:
    manifest = build_manifest(trained.raw, CREDIT_SCHEMA, {})
    with pytest.raises(ArtifactError, match="the model takes 8 features"):
        load_model_bytes(trained.raw, manifest)


def test_json_format_loads_and_predicts_the_same(trained: TrainedModel) -> None:
    raw_json = bytes(trained.booster.save_raw(raw_format="json"))
    model = load_model_bytes(raw_json, build_manifest(raw_json, trained.schema, {}, fmt="xgboost-json"))
    x = model.matrix(trained.records[:20])
    np.testing.assert_allclose(model.predict(x).scores, trained.booster.inplace_predict(x), rtol=1e-6)


def test_booster_runs_single_threaded(trained: TrainedModel) -> None:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    config = json.loads(model.booster.save_config())
    assert config["learner"]["generic_param"]["nthread"] == "1"


def test_scores_and_margins_match_xgboost(trained: TrainedModel) -> None:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    x = model.matrix(trained.records[:50])
    pred = model.predict(x)
    np.testing.assert_allclose(pred.scores, trained.booster.inplace_predict(x), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(
        pred.margins, trained.booster.inplace_predict(x, predict_type="margin"), rtol=1e-6, atol=1e-6
    )
    assert np.all((pred.scores > 0) & (pred.scores < 1))


def test_contributions_sum_to_the_margin(trained: TrainedModel) -> None:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    x = model.matrix(synthetic_records(trained.schema, 200, seed=7))
    pred = model.predict(x, explain=True)
    assert pred.contributions is not None
    assert pred.bias is not None
    assert pred.contributions.shape == (200, len(trained.schema.model_feature_names))
    xgb_margin = trained.booster.predict(
        xgb.DMatrix(x, feature_names=trained.schema.model_feature_names), output_margin=True
    )
    assert np.max(np.abs(pred.contributions.sum(axis=1) + pred.bias - xgb_margin)) < 1e-5
    assert np.max(np.abs(pred.contributions.sum(axis=1) + pred.bias - pred.margins)) < 1e-5


def test_reason_codes_are_the_most_adverse_contributions(trained: TrainedModel) -> None:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    x = model.matrix(trained.records[:30])
    pred = model.predict(x, explain=True)
    assert pred.contributions is not None
    names = trained.schema.model_feature_names
    for row in pred.contributions:
        codes = model.reason_codes(row, 3)
        positive = sorted((v for v in row if v > 0), reverse=True)[:3]
        assert [c.contribution for c in codes] == pytest.approx(positive)
        for c in codes:
            i = names.index(c.feature)
            assert c.code == f"R{i + 1:02d}"
            assert c.contribution == pytest.approx(row[i])
            assert c.description.endswith("increased the estimated default risk")
    assert model.reason_codes(pred.contributions[0], 0) == []
    ratio = model.reason_codes(np.array([0, 0, 0, 0, 0, 0, 1.0, 0]), 1)[0]
    assert ratio.feature == "debt_to_revenue"
    assert "debt / annual_revenue" in ratio.description


def test_features_come_from_the_shared_module_and_are_validated(trained: TrainedModel) -> None:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    from finpredict.features import records_to_matrix

    recs = trained.records[:5]
    np.testing.assert_array_equal(model.matrix(recs), records_to_matrix(recs, SMALL_SCHEMA))
    with pytest.raises(SchemaError, match="'sector'"):
        model.matrix([{**recs[0], "sector": "mining"}])
