"""Stage ``features``: splits the validated snapshot and computes the model features.

Split (``params.yaml`` ``split``): the most recent ``test_fraction`` of applications by
timestamp is the out-of-time test set; of the rest, a seeded random ``valid_fraction`` is the
validation set (early stopping) and the remainder the training set.

The features are computed by :func:`finpredict.features.transform` - the module the model
server imports - so training and serving share one code path. Each split is written to
``data/features/<split>.parquet`` with the model features, the label, the protected attribute,
the timestamp and the id; ``<split>_inputs.parquet`` keeps the raw input columns of the training
set (for the reference profile) and the test set (for the single-row compute gate and the skew
check), row-aligned with ``<split>.parquet``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import polars as pl

from finpredict import metrics as m
from finpredict.features import transform
from finpredict.pipelines.common import (
    FEATURES_DIR,
    RAW_DATA,
    RAW_SCHEMA,
    VALIDATION_REPORT,
    DatasetSchema,
    PipelineError,
    load_params,
    read_json,
    run_stage,
    section,
    write_json,
)
from finpredict.pipelines.ingest import read_table
from finpredict.pipelines.validate import normalise

SPLITS = ("train", "valid", "test")


def split_frame(
    df: pl.DataFrame, ds: DatasetSchema, test_fraction: float, valid_fraction: float, seed: int
) -> dict[str, pl.DataFrame]:
    if not (0 < test_fraction < 1 and 0 < valid_fraction < 1 and test_fraction + valid_fraction < 1):
        raise PipelineError("params.yaml split: fractions must be in (0, 1) and sum to less than 1")
    ordered = df.sort([ds.timestamp] + ([ds.id_column] if ds.id_column else []))
    n_test = max(1, round(ordered.height * test_fraction))
    rest, test = ordered.head(ordered.height - n_test), ordered.tail(n_test)
    shuffled = rest.sample(fraction=1.0, shuffle=True, seed=seed)
    n_valid = max(1, round(ordered.height * valid_fraction))
    return {"train": shuffled.slice(n_valid), "valid": shuffled.head(n_valid), "test": test}


def feature_frame(df: pl.DataFrame, ds: DatasetSchema) -> pl.DataFrame:
    keep = [ds.label, ds.protected_attribute, ds.timestamp] + ([ds.id_column] if ds.id_column else [])
    return pl.concat(
        [transform(df, ds.features), df.select(keep).with_columns(pl.col(ds.label).cast(pl.Int8))],
        how="horizontal",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=FEATURES_DIR)
    args = parser.parse_args(argv)
    report = read_json(VALIDATION_REPORT)
    if not report.get("valid"):
        raise PipelineError(f"{VALIDATION_REPORT}: the snapshot did not pass validation")
    params = load_params()
    sp = section(params, "split")
    ds = DatasetSchema.load(RAW_SCHEMA)
    df = normalise(read_table(RAW_DATA), ds)
    parts = split_frame(
        df, ds, float(sp["test_fraction"]), float(sp["valid_fraction"]), int(sp.get("seed", 0))
    )
    args.out.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in SPLITS:
        feature_frame(parts[name], ds).write_parquet(args.out / f"{name}.parquet", compression="zstd")
        labels = parts[name][ds.label].cast(pl.Float64).to_numpy()
        summary[name] = {"rows": len(labels), "default_rate": m.default_rate(labels) if len(labels) else 0.0}
    for name in ("train", "test"):
        parts[name].select(ds.features.input_names).write_parquet(args.out / f"{name}_inputs.parquet")
    write_json(args.out / "schema.json", ds.to_dict())
    write_json(args.out / "summary.json", summary)
    print(f"[features] {summary}")


if __name__ == "__main__":
    run_stage("features", main)
