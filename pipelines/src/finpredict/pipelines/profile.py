"""Stage ``profile``: the reference profile the monitor compares live traffic with.

Per raw input feature: bin edges and proportions of the training data (numeric: ``n_bins``
quantile bins; categorical: one bucket per category) plus the missing share, and the same for
the model's score distribution on the training data (the extra column ``__score__``). The
computation is drift_core's (``drift_core.Profile.fit(...).to_bytes()``); the bytes are stored
with the model (``models/reference_profile.bin``) and registered with the version.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import numpy.typing as npt
import polars as pl

import drift_core
from finpredict.pipelines.artifact import load_model
from finpredict.pipelines.common import (
    FEATURES_DIR,
    MODEL_DIR,
    PROFILE_FILE,
    DatasetSchema,
    PipelineError,
    load_params,
    run_stage,
    section,
)
from finpredict.pipelines.train import load_split

SCORE_COLUMN = "__score__"


def profile_frame(inputs: pl.DataFrame, scores: npt.NDArray[np.float64], ds: DatasetSchema) -> pl.DataFrame:
    """What the profile covers: every raw input feature (numbers as Float64, categories as
    strings, as the monitor sees requests) and the model score."""
    exprs = [
        pl.col(f.name).cast(pl.String) if f.kind == "categorical" else pl.col(f.name).cast(pl.Float64)
        for f in ds.features.features
    ]
    return inputs.select(exprs).with_columns(pl.Series(SCORE_COLUMN, scores, dtype=pl.Float64))


def build_reference_profile(frame: pl.DataFrame, categorical: list[str], n_bins: int) -> bytes:
    """Fits a drift_core profile on ``frame`` and serialises it (drift_core's own format)."""
    try:
        profile = drift_core.Profile.fit(
            frame, categorical=categorical, n_bins=n_bins, binning="quantile", allow_copy=True
        )
    except drift_core.DriftCoreError as exc:
        raise PipelineError(f"reference profile: drift_core refused the training data: {exc}") from None
    return bytes(profile.to_bytes())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=PROFILE_FILE)
    args = parser.parse_args(argv)
    pp = section(load_params(), "profile")
    ds = DatasetSchema.load(FEATURES_DIR / "schema.json")
    loaded = load_model(MODEL_DIR, nthread=2)
    x, _, _ = load_split(FEATURES_DIR, "train", ds)
    scores = loaded.booster.inplace_predict(x).astype(np.float64)
    frame = profile_frame(pl.read_parquet(FEATURES_DIR / "train_inputs.parquet"), scores, ds)
    blob = build_reference_profile(frame, ds.features.categorical_names, int(pp.get("n_bins", 10)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_bytes(blob)
    print(f"[profile] {frame.width} columns, {len(blob)} bytes -> {args.out}")


if __name__ == "__main__":
    run_stage("profile", main)
