"""Stage ``train``: XGBoost (``binary:logistic``) with the params of ``params.yaml`` ``train``.

Early stopping on the validation split (``early_stopping_metric``, default logloss); the saved
booster is cut to the best iteration, so serving needs no iteration range. The artifact is
XGBoost's UBJ file plus a manifest (:mod:`finpredict.pipelines.artifact`); never a pickle.

``train.backend`` says where the boosting runs: ``local`` (default) in this process on
``nthread`` threads; ``ray`` as XGBoost's own collective over workers on a Ray cluster, each
reading its shard of the Parquet splits (:mod:`finpredict.pipelines.train_ray`). Both go
through :func:`fit` and write the same artifact; the manifest's ``training.backend`` says which.

Only the early-stopping metric is evaluated every round, on the validation split: the AUC of
both splits is computed once, for the best iteration (evaluating AUC on the training split
every round was 60% of the stage at 1M rows).
"""

from __future__ import annotations

import argparse
import re
import time
from dataclasses import dataclass
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
BACKENDS = ("local", "ray")
_METRIC = re.compile(r"(\w+)-auc:(\S+)")


def to_matrix(df: pl.DataFrame, ds: DatasetSchema) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]]:
    """The model features (float32, C order, in the model's input order) and the label."""
    cols = ds.features.model_feature_names
    x = df.select(pl.col(cols).cast(pl.Float32)).to_numpy(order="c")
    return np.ascontiguousarray(x, dtype=np.float32), df[ds.label].to_numpy().astype(np.int8)


def load_split(
    features_dir: Path, name: str, ds: DatasetSchema
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int8], pl.DataFrame]:
    df = pl.read_parquet(features_dir / f"{name}.parquet")
    x, y = to_matrix(df, ds)
    return x, y, df


def booster_params(tp: dict[str, Any]) -> dict[str, Any]:
    # Early stopping watches the one metric evaluated each round: logloss is steadier than AUC.
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": [str(tp.get("early_stopping_metric", "logloss"))],
        "verbosity": 0,
    }
    for key in BOOSTER_KEYS:
        if key in tp and tp[key] is not None:
            params[key] = tp[key]
    return params


def dmatrices(
    params: dict[str, Any],
    train: tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]],
    valid: tuple[npt.NDArray[np.float32], npt.NDArray[np.int8]],
    names: list[str],
) -> tuple[xgb.DMatrix, xgb.DMatrix]:
    """The training and validation matrices (``hist`` bins the training data in its first round:
    at 1M rows that was faster than a ``QuantileDMatrix`` built up front)."""
    nthread = int(params.get("nthread", 0)) or None
    return (
        xgb.DMatrix(train[0], label=train[1], feature_names=names, nthread=nthread),
        xgb.DMatrix(valid[0], label=valid[1], feature_names=names, nthread=nthread),
    )


@dataclass(frozen=True)
class Fit:
    """A trained booster, cut to its best iteration, with the AUC of both splits there."""

    booster: xgb.Booster
    best_iteration: int
    train_auc: float
    valid_auc: float
    seconds: float


def fit(
    params: dict[str, Any], dtrain: xgb.DMatrix, dvalid: xgb.DMatrix, rounds: int, early_stopping: int | None
) -> Fit:
    """Boosts up to ``rounds`` rounds, stopping early on the validation split's metric.

    Under an XGBoost collective (:mod:`finpredict.pipelines.train_ray`) every worker calls this
    with its own shards: the sketch, the histograms and the metrics are reduced across workers,
    so each ends with the same booster and the AUCs of the whole splits."""
    t0 = time.perf_counter()
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=rounds,
        evals=[(dvalid, "valid")],
        early_stopping_rounds=early_stopping,
        verbose_eval=False,
    )
    seconds = time.perf_counter() - t0
    best = int(booster.best_iteration) if early_stopping else rounds - 1
    final = booster[: best + 1]
    final.set_param({"eval_metric": "auc"})
    auc = {
        name: float(value)
        for name, value in _METRIC.findall(final.eval_set([(dtrain, "train"), (dvalid, "valid")]))
    }
    return Fit(final, best, auc["train"], auc["valid"], seconds)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=Path, default=FEATURES_DIR)
    parser.add_argument("--out", type=Path, default=MODEL_DIR)
    args = parser.parse_args(argv)
    tp = section(load_params(), "train")
    ds = DatasetSchema.load(args.features / "schema.json")
    backend = str(tp.get("backend", "local"))
    if backend not in BACKENDS:
        raise PipelineError(f"params.yaml train.backend: expected one of {BACKENDS}, got {backend!r}")
    params = booster_params(tp)
    rounds = int(tp.get("num_boost_round", 500))
    es = int(tp["early_stopping_rounds"]) if tp.get("early_stopping_rounds") else None
    names = ds.features.model_feature_names
    run: dict[str, Any]
    if backend == "ray":
        from finpredict.pipelines import train_ray

        fitted, rows, run = train_ray.fit_on_ray(args.features, ds, params, rounds, es, tp)
    else:
        x_tr, y_tr, _ = load_split(args.features, "train", ds)
        x_va, y_va, _ = load_split(args.features, "valid", ds)
        if len(np.unique(y_tr)) < 2:
            raise PipelineError(f"{args.features / 'train.parquet'}: the label has a single class")
        fitted = fit(params, *dmatrices(params, (x_tr, y_tr), (x_va, y_va), names), rounds, es)
        rows, run = (len(y_tr), len(y_va)), {"backend": "local"}
    training = {
        "params": params,
        "num_boost_round": rounds,
        "early_stopping_rounds": es,
        "best_iteration": fitted.best_iteration,
        "n_trees": fitted.best_iteration + 1,
        "valid_auc": fitted.valid_auc,
        "train_auc": fitted.train_auc,
        "train_rows": rows[0],
        "valid_rows": rows[1],
        "train_seconds": round(fitted.seconds, 3),
        "train_data_md5": md5_file(args.features / "train.parquet"),
        "label": ds.label,
        **run,
    }
    manifest = save_model(fitted.booster, args.out, ds.features, training)
    print(
        f"[train] {fitted.best_iteration + 1} trees in {fitted.seconds:.1f}s ({run['backend']}), "
        f"valid AUC {fitted.valid_auc:.4f}, sha256 {manifest['sha256'][:12]}"
    )


if __name__ == "__main__":
    run_stage("train", main)
