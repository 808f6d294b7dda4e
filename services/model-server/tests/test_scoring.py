"""The Ray-free parts: request validation, batching groups, responses, config, app args."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.model_server.app_args import AppArgs, model_id, parse_args, parse_model_id
from finpredict.model_server.config import ModelServerSettings
from finpredict.model_server.driver import load_serve_config
from finpredict.model_server.scoring import (
    InvalidRequestError,
    LoadedVersion,
    ScoreItem,
    check_predict_request,
    predictions_to_proto,
    row_records,
    score_items,
    warmup_record,
)
from finpredict.modelio import build_manifest, load_model_bytes
from finpredict.testkit.models import TrainedModel, synthetic_records, train_small_model
from finpredict.testkit.serving import to_rows


@pytest.fixture(scope="module")
def trained() -> TrainedModel:
    return train_small_model(n=200, rounds=8)


@pytest.fixture(scope="module")
def loaded(trained: TrainedModel) -> LoadedVersion:
    model = load_model_bytes(trained.raw, build_manifest(trained.raw, trained.schema, {}))
    return LoadedVersion("credit", 3, model, 0.4, model.sha256, 1.0)


def test_rows_become_records_with_missing_values(trained: TrainedModel) -> None:
    recs = synthetic_records(trained.schema, 3, seed=4)
    recs[0]["owner_income"] = None
    assert row_records(to_rows(recs), trained.schema) == recs


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"sector": "mining"}, "rows[0].features[sector]"),
        ({"sector": 3.0}, "rows[0].features[sector]"),
        ({"years_in_business": 2.5}, "rows[0].features[years_in_business]"),
        ({"annual_revenue": None}, "rows[0].features[annual_revenue]"),
        ({"debt": 1e12}, "rows[0].features[debt]"),
        ({"nope": 1.0}, "rows[0].features[nope]"),
    ],
)
def test_invalid_rows_name_the_field(trained: TrainedModel, change: dict[str, object], field: str) -> None:
    rec = {**synthetic_records(trained.schema, 1)[0], **change}
    with pytest.raises(InvalidRequestError) as err:
        row_records(to_rows([rec]), trained.schema)
    assert err.value.field == field
    assert str(err.value).startswith(field + ": ")


def test_request_limits_name_the_field() -> None:
    ref = types_pb2.ModelRef(name="m", version=1)
    row = pb.FeatureRow()
    for req, field in [
        (pb.PredictRequest(model=types_pb2.ModelRef(version=1), rows=[row]), "model.name"),
        (pb.PredictRequest(model=types_pb2.ModelRef(name="m"), rows=[row]), "model.version"),
        (pb.PredictRequest(model=ref), "rows"),
        (pb.PredictRequest(model=ref, rows=[row] * 3), "rows"),
        (pb.PredictRequest(model=ref, rows=[row], top_k=-1), "top_k"),
    ]:
        with pytest.raises(InvalidRequestError) as err:
            check_predict_request(req, max_rows=2, max_top_k=5)
        assert err.value.field == field
    assert check_predict_request(pb.PredictRequest(model=ref, rows=[row]), 2, 5) == ("m", 1)


def test_warmup_record_is_valid(trained: TrainedModel) -> None:
    trained.schema.check_record(warmup_record(trained.schema))


def test_a_coalesced_batch_scores_like_single_requests(loaded: LoadedVersion, trained: TrainedModel) -> None:
    recs = synthetic_records(trained.schema, 7, seed=8)
    items = [
        ScoreItem(loaded, recs[0:1], False),
        ScoreItem(loaded, recs[1:4], True),
        ScoreItem(loaded, recs[4:7], False),
    ]
    batched = score_items(items)
    for item, got in zip(items, batched, strict=True):
        alone = score_items([item])[0]
        np.testing.assert_allclose(got.scores, alone.scores, rtol=1e-6)
        assert (got.contributions is None) == (not item.explain)
    assert len(batched[1].scores) == 3


def test_response_names_the_version_and_threshold(loaded: LoadedVersion, trained: TrainedModel) -> None:
    recs = synthetic_records(trained.schema, 2, seed=2)
    preds = score_items([ScoreItem(loaded, recs, True)])[0]
    resp = predictions_to_proto(loaded, preds, 0, 2, 2, True)
    assert (resp.model.name, resp.model.version, resp.threshold) == ("credit", 3, pytest.approx(0.4))
    for p in resp.predictions:
        total = sum(c.contribution for c in p.contributions) + p.bias
        assert abs(total - p.margin) < 1e-5
        assert len(p.reason_codes) <= 2


def test_app_args_refuse_unknown_keys_and_model_ids_round_trip() -> None:
    with pytest.raises(ValueError, match="registry_targt"):
        parse_args({"registry_targt": "x"})
    assert parse_args(None) == AppArgs()
    assert parse_model_id(model_id("credit-risk", 12)) == ("credit-risk", 12)
    for bad in ("credit", "credit:0", ":3", "credit:x"):
        with pytest.raises(ValueError, match="is not"):
            parse_model_id(bad)


def test_serve_config_overrides(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FINPREDICT_MODEL_SERVER_SERVE_GRPC_PORT", "0")
    monkeypatch.setenv("FINPREDICT_MODEL_SERVER_REGISTRY_TARGET", "10.0.0.1:50052")
    config = load_serve_config(ModelServerSettings())
    assert config["grpc_options"]["port"] > 0
    assert config["http_options"]["port"] == 8063  # -1: the config's
    app = config["applications"][0]
    assert app["args"]["registry_target"] == "10.0.0.1:50052"
    assert (
        "finpredict.api.serving.v1.model_server_pb2_grpc"
        in config["grpc_options"]["grpc_servicer_functions"][0]
    )
    AppArgs.model_validate(app["args"])  # the shipped args are valid
    dep = app["deployments"][0]
    assert dep["max_ongoing_requests"] >= dep["user_config"]["max_batch_size"]
    assert dep["autoscaling_config"]["min_replicas"] <= dep["autoscaling_config"]["max_replicas"]
