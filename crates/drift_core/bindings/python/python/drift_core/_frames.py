"""Conversion of polars DataFrames to the float64 matrices the Rust core reads.

Called by the extension module when a polars object is passed. Numeric columns become
float64 with nulls as NaN (missing); string, categorical, enum and boolean columns become
category codes ``0..n-1`` of their sorted observed values, nulls as NaN and values unseen
in the reference as ``-1`` (the "unseen" bucket). The result is one C-ordered copy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from drift_core._drift_core import DtypeError, InvalidArgumentError, ProfileMismatchError

_CATEGORY_TYPES = ("String", "Utf8", "Categorical", "Enum", "Boolean")


def _frame(data: Any) -> Any:
    import polars as pl

    if isinstance(data, pl.Series):
        return data.to_frame()
    if isinstance(data, pl.LazyFrame):
        raise InvalidArgumentError("invalid argument: collect() the LazyFrame first")
    return data


def _is_category(dtype: Any) -> bool:
    return type(dtype).__name__ in _CATEGORY_TYPES


def _numeric(series: Any) -> npt.NDArray[np.float64]:
    import polars as pl

    if not series.dtype.is_numeric():
        raise DtypeError(
            f"wrong dtype: column {series.name!r} has dtype {series.dtype}, "
            "which is neither numeric nor categorical"
        )
    out: npt.NDArray[np.float64] = (
        series.cast(pl.Float64)
        .fill_null(float("nan"))
        .to_numpy(allow_copy=True)
        .astype(np.float64, copy=False)
    )
    return out


def _codes(series: Any, labels: list[str]) -> npt.NDArray[np.float64]:
    import polars as pl

    mapping = {label: float(i) for i, label in enumerate(labels)}
    as_str = series.cast(pl.String)
    coded = as_str.replace_strict(mapping, default=-1.0, return_dtype=pl.Float64)
    # nulls stay missing (NaN), not unseen
    coded = pl.select(pl.when(as_str.is_null()).then(float("nan")).otherwise(coded)).to_series()
    out: npt.NDArray[np.float64] = coded.to_numpy(allow_copy=True).astype(np.float64, copy=False)
    return out


def fit_frame(
    data: Any, categorical: list[str]
) -> tuple[npt.NDArray[np.float64], list[str], list[int], dict[int, list[str]]]:
    """(matrix, feature names, indices of numeric-valued categorical columns, labels per column)."""
    import polars as pl

    df = _frame(data)
    names = [str(c) for c in df.columns]
    for c in categorical:
        if c not in names:
            raise InvalidArgumentError(f"invalid argument: categorical column {c!r} is not in the DataFrame")
    out = np.empty((df.height, df.width), dtype=np.float64)
    cat_numeric: list[int] = []
    labels: dict[int, list[str]] = {}
    for j, name in enumerate(names):
        s = df.get_column(name)
        if _is_category(s.dtype):
            observed = s.cast(pl.String).drop_nulls().unique().sort().to_list()
            labels[j] = [str(v) for v in observed]
            out[:, j] = _codes(s, labels[j])
        else:
            out[:, j] = _numeric(s)
            if name in categorical:
                cat_numeric.append(j)
    return out, names, cat_numeric, labels


def encode_frame(data: Any, names: list[str], labels: list[list[str] | None]) -> npt.NDArray[np.float64]:
    """The profile's columns of ``data`` as a float64 matrix (extra columns are ignored)."""
    df = _frame(data)
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise ProfileMismatchError(f"profile mismatch: the DataFrame lacks the profile's columns {missing}")
    out = np.empty((df.height, len(names)), dtype=np.float64)
    for j, (name, lab) in enumerate(zip(names, labels, strict=True)):
        s = df.get_column(name)
        out[:, j] = _codes(s, lab) if lab is not None else _numeric(s)
    return out
