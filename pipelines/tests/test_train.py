"""The train stage's fit without DVC: both backends' shared :func:`fit` and the Ray backend's
refusals (the distributed run itself: test_train_ray.py)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from finpredict import metrics as m
from finpredict.common.net import free_port
from finpredict.pipelines import dgp
from finpredict.pipelines.common import PipelineError, default_dataset_schema
from finpredict.pipelines.features import feature_frame
from finpredict.pipelines.train import booster_params, dmatrices, fit, to_matrix
from finpredict.pipelines.train_ray import fit_on_ray, read_shard

DS = default_dataset_schema()
PARAMS = {"max_depth": 3, "eta": 0.1, "tree_method": "hist", "seed": 1, "nthread": 1}


def frame(rows: int, seed: int) -> pl.DataFrame:
    return feature_frame(dgp.generate(rows, seed=seed), DS)


def test_fit_stops_early_and_reports_the_auc_of_its_best_iteration() -> None:
    train, valid = to_matrix(frame(3000, 1), DS), to_matrix(frame(1000, 2), DS)
    params = booster_params(PARAMS)
    assert params["eval_metric"] == ["logloss"]  # the only metric evaluated each round
    fitted = fit(params, *dmatrices(params, train, valid, DS.features.model_feature_names), 400, 10)
    assert fitted.best_iteration < 399  # stopped early
    assert fitted.booster.num_boosted_rounds() == fitted.best_iteration + 1  # cut at the best
    p = fitted.booster.inplace_predict(valid[0])
    assert fitted.valid_auc == pytest.approx(m.auc_roc(valid[1], p), abs=1e-6)
    assert fitted.train_auc == pytest.approx(
        m.auc_roc(train[1], fitted.booster.inplace_predict(train[0])), abs=1e-6
    )


def test_shards_cover_every_row_once(tmp_path: Path) -> None:
    df = frame(1001, 3)
    df.write_parquet(tmp_path / "train.parquet", row_group_size=128)
    x, y = to_matrix(df, DS)
    shards = [read_shard(tmp_path / "train.parquet", DS, i, 3) for i in range(3)]
    assert [len(s[1]) for s in shards] == [333, 334, 334]
    np.testing.assert_array_equal(np.concatenate([s[0] for s in shards]), x)
    np.testing.assert_array_equal(np.concatenate([s[1] for s in shards]), y)


def test_an_unreachable_cluster_is_refused_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("FINPREDICT_TRAIN_RAY_ADDRESS", address)
    t0 = time.monotonic()
    with pytest.raises(PipelineError, match=f"cannot join the Ray cluster at '{address}'"):
        fit_on_ray(tmp_path, DS, booster_params(PARAMS), 10, None, {"ray_workers": 2})
    assert time.monotonic() - t0 < 10
