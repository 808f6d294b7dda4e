"""Stage ``train``: XGBoost (``binary:logistic``) with the params of ``params.yaml`` ``train``.

Early stopping on the validation split (``early_stopping_metric``, default logloss); the saved
booster is cut to the best iteration, so serving needs no iteration range. The artifact is
XGBoost's UBJ file plus a manifest (:mod:`finpredict.pipelines.artifact`); never a pickle.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import polars as pl

from finpredict.pipelines._xgb import xgb
from finpredict.pipelines.artifact import save_model
from finpredict.pipelines.common import (
    FEATURES_DIR,
    MODEL_DIR,
    DatasetSchema,
    PipelineError,
    load_params,
    md5_file,
    run_stage,
    section,
)

BOOSTER_KEYS = (
    "max_depth",
    "eta",
    "subsample",
    "colsample_bytree",
    "min_child_weight",
    "reg_lambda",
    "reg_alpha",
    "gamma",
    "max_bin",
    "tree_method",
    "seed",
    "nthread",
    "scale_pos_weight",
)


def load_split(
    features_dir: Path, name: str, ds: DatasetSchema
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], pl.DataFrame]:
    df = pl.read_parquet(features_dir / f"{name}.parquet")
    cols = ds.features.model_feature_names
    x = np.ascontiguousarray(df.select(cols).to_numpy(order="c").astype(np.float32, copy=False))
    y = df[ds.label].to_numpy().astype(np.int8)
    return x, y, df


def booster_params(tp: dict[str, Any]) -> dict[str, Any]:
    # The last eval metric drives early stopping: logloss is steadier than AUC on small splits.
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": ["auc", str(tp.get("early_stopping_metric", "logloss"))],
        "verbosity": 0,
    }
    for key in BOOSTER_KEYS:
        if key in tp and tp[key] is not None:
            params[key] = tp[key]
    return params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=FEATURES_DIR)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    tp = section(load_params(), "train")
    ds = DatasetSchema.load(args.features / "schema.json")
    x_tr, y_tr, _ = load_split(args.features, "train", ds)
    x_va, y_va, _ = load_split(args.features, "valid", ds)
    if len(np.unique(y_tr)) < 2:
        raise PipelineError(f"{args.features / 'train.parquet'}: the label has a single class")
    names = ds.features.model_feature_names
    dtrain = xgb.DMatrix(x_tr, label=y_tr, feature_names=names)
    dvalid = xgb.DMatrix(x_va, label=y_va, feature_names=names)
    params = booster_params(tp)
    rounds = int(tp.get("num_boost_round", 500))
    es = tp.get("early_stopping_rounds")
    t0 = time.perf_counter()
    history: dict[str, Any] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dtrain, "train"), (dvalid, "valid")],
        early_stopping_rounds=int(es) if es else None,
        evals_result=history,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - t0
    best = int(booster.best_iteration) if es else rounds - 1
    final = booster[: best + 1]
    training = {
        "params": params,
        "num_boost_round": rounds,
        "early_stopping_rounds": es,
        "best_iteration": best,
        "n_trees": best + 1,
        "valid_auc": float(history["valid"]["auc"][best]),
        "train_auc": float(history["train"]["auc"][best]),
        "train_rows": len(y_tr),
        "valid_rows": len(y_va),
        "train_seconds": round(seconds, 3),
        "train_data_md5": md5_file(args.features / "train.parquet"),
        "label": ds.label,
    }
    manifest = save_model(final, args.out, ds.features, training)
    print(
        f"[train] {best + 1} trees in {seconds:.1f}s, valid AUC {training['valid_auc']:.4f}, "
        f"sha256 {manifest['sha256'][:12]}"
    )


if __name__ == "__main__":
    run_stage("train", main)
