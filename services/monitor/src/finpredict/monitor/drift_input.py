"""Stored records as drift_core reads them: the profile's columns, in the profile's order.

The model's score is profiled like a feature, under the column name :data:`SCORE_COLUMN`.
"""

from __future__ import annotations

import functools

import numpy as np
import polars as pl

import drift_core
from finpredict.monitor.store import FEATURE_PREFIX

SCORE_COLUMN = "__score__"


def drift_frame(profile: drift_core.Profile, frame: pl.DataFrame) -> pl.DataFrame:
    """The columns drift_core's profile expects, from stored records (absent -> missing)."""
    cols = []
    for name in profile.feature_names:
        dtype = pl.String if profile.is_categorical(name) else pl.Float64
        if name == SCORE_COLUMN:
            cols.append(pl.col("score").cast(pl.Float64).alias(name))
        elif FEATURE_PREFIX + name in frame.columns:
            col = pl.col(FEATURE_PREFIX + name)
            if dtype == pl.Float64 and frame.schema[FEATURE_PREFIX + name] == pl.String:
                col = col.cast(pl.Float64, strict=False)
            cols.append(
                col.cast(dtype).fill_nan(None).alias(name) if dtype == pl.Float64 else col.alias(name)
            )
        else:
            cols.append(pl.lit(None, dtype=dtype).alias(name))
    return frame.select(cols)


def drift_matrix(profile: drift_core.Profile, frame: pl.DataFrame) -> np.ndarray:
    """The profile's columns as the float64 matrix drift_core reads, in one polars pass:
    numbers with missing as NaN, categories as codes in the profile's order (unseen -1)."""
    exprs = _matrix_exprs(profile, frozenset(frame.columns))
    return np.ascontiguousarray(frame.select(exprs).to_numpy(), dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _matrix_exprs(profile: drift_core.Profile, columns: frozenset[str]) -> list[pl.Expr]:
    """:func:`drift_matrix`'s expressions for frames with ``columns`` (built once: ingest asks for
    them on every batch)."""
    nan = float("nan")
    exprs = []
    for name in profile.feature_names:
        stored = FEATURE_PREFIX + name
        if name == SCORE_COLUMN:
            exprs.append(pl.col("score").cast(pl.Float64).alias(name))
        elif stored not in columns:
            exprs.append(pl.lit(nan, dtype=pl.Float64).alias(name))
        elif profile.is_categorical(name):
            labels = profile.categories(name) or []
            mapping = {str(label): float(i) for i, label in enumerate(labels)}
            text = pl.col(stored).cast(pl.String)
            coded = text.replace_strict(mapping, default=-1.0, return_dtype=pl.Float64)
            exprs.append(pl.when(text.is_null()).then(nan).otherwise(coded).alias(name))
        else:
            exprs.append(pl.col(stored).cast(pl.Float64, strict=False).fill_null(nan).alias(name))
    return exprs
