"""Polars feature transforms shared by training and serving.

One code path turns input columns into the model input matrix:

* numeric and integer inputs are cast to ``Float64`` (missing -> NaN in the matrix);
* categorical inputs become the index of the value in the schema's category list (``Float64``);
  a value outside the list becomes missing (validation refuses it before it gets here);
* derived features: ``ratio`` = a / b (missing when b is 0 or missing), ``log1p`` = log(1 + max(a, 0)).

The same definitions serve a DataFrame of any size (training, batch scoring) and a list of
request records, so the model server and the training pipeline compute identical matrices. Request
records (a few rows per call) are evaluated with numpy from the same schema
(:func:`records_to_matrix`): a polars frame costs milliseconds to build and select for one row,
more than the model call; the tests assert both paths give the identical matrix, edge cases
included (missing, NaN, infinite, zero denominators, negative log inputs, unknown categories).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import polars as pl

from finpredict.features.schema import CREDIT_SCHEMA, FeatureSchema, SchemaError


def input_polars_schema(schema: FeatureSchema = CREDIT_SCHEMA) -> dict[str, pl.DataType]:
    """The polars dtypes of the input columns (numbers as Float64, categories as String)."""
    return {f.name: (pl.String() if f.kind == "categorical" else pl.Float64()) for f in schema.features}


def feature_exprs(schema: FeatureSchema = CREDIT_SCHEMA) -> list[pl.Expr]:
    """The polars expressions that compute the model features, in model input order."""
    exprs: list[pl.Expr] = []
    for spec in schema.features:
        col = pl.col(spec.name)
        if spec.kind == "categorical":
            mapping = {c: float(i) for i, c in enumerate(spec.categories)}
            expr = col.cast(pl.String).replace_strict(mapping, default=None, return_dtype=pl.Float64)
        else:
            expr = col.cast(pl.Float64)
        exprs.append(expr.fill_nan(None).alias(spec.name))
    for d in schema.derived:
        if d.op == "ratio":
            num = pl.col(d.inputs[0]).cast(pl.Float64)
            den = pl.col(d.inputs[1]).cast(pl.Float64)
            expr = pl.when(den != 0).then(num / den).otherwise(None)
        else:  # log1p
            expr = pl.col(d.inputs[0]).cast(pl.Float64).clip(lower_bound=0.0).log1p()
        exprs.append(expr.fill_nan(None).alias(d.name))
    return exprs


def _select(df: pl.DataFrame, exprs: Sequence[pl.Expr]) -> pl.DataFrame:
    # The expressions are built once per schema (cached): building them costs more than
    # evaluating them on the one-row frames of online scoring.
    return df.select(exprs)


@functools.lru_cache(maxsize=16)
def _cached_exprs(schema: FeatureSchema) -> tuple[pl.Expr, ...]:
    return tuple(feature_exprs(schema))


@functools.lru_cache(maxsize=16)
def _cached_input_schema(schema: FeatureSchema) -> pl.Schema:
    return pl.Schema(input_polars_schema(schema))


def transform(df: pl.DataFrame, schema: FeatureSchema = CREDIT_SCHEMA) -> pl.DataFrame:
    """Model features of ``df`` (extra columns are ignored; a missing input column is an error)."""
    missing = [n for n in schema.input_names if n not in df.columns]
    if missing:
        raise SchemaError(f"missing input feature column(s): {missing}")
    return _select(df, _cached_exprs(schema))


def to_matrix(df: pl.DataFrame, schema: FeatureSchema = CREDIT_SCHEMA) -> npt.NDArray[np.float32]:
    """The model input matrix (float32, C order, NaN for missing) of the rows of ``df``."""
    missing = [n for n in schema.input_names if n not in df.columns]
    if missing:
        raise SchemaError(f"missing input feature column(s): {missing}")
    feats = _select(df, _cached_exprs(schema))
    mat = feats.to_numpy(order="c", allow_copy=True).astype(np.float32, copy=False)
    return np.ascontiguousarray(mat)


def records_to_frame(
    records: Sequence[Mapping[str, object]], schema: FeatureSchema = CREDIT_SCHEMA, *, check: bool = True
) -> pl.DataFrame:
    """Builds the input DataFrame of request records (feature name -> number, string or None).

    With ``check`` each record is first checked against the schema (types, ranges, categories,
    nullability); the error names the record index and the feature. A key that is absent is
    missing.
    """
    if check:
        for i, rec in enumerate(records):
            schema.check_record(rec, where=f"record {i}")
    try:
        return pl.DataFrame(list(records), schema=_cached_input_schema(schema), orient="row")
    except (TypeError, ValueError, pl.exceptions.PolarsError) as exc:
        raise SchemaError(f"records do not fit the feature schema: {exc}") from None


@dataclass(frozen=True)
class _RecordPlan:
    """:func:`feature_exprs` for request records: each input (its category codes, None for a
    number) and each derived feature (op and the columns of its inputs)."""

    inputs: tuple[tuple[str, Mapping[str, float] | None], ...]
    derived: tuple[tuple[str, int, int], ...]


@functools.lru_cache(maxsize=16)
def _record_plan(schema: FeatureSchema) -> _RecordPlan:
    inputs = tuple(
        (f.name, {c: float(i) for i, c in enumerate(f.categories)} if f.kind == "categorical" else None)
        for f in schema.features
    )
    column = {name: j for j, (name, _) in enumerate(inputs)}
    derived = tuple(
        (d.op, column[d.inputs[0]], column[d.inputs[1]] if d.op == "ratio" else -1) for d in schema.derived
    )
    return _RecordPlan(inputs, derived)


def records_to_matrix(
    records: Sequence[Mapping[str, object]], schema: FeatureSchema = CREDIT_SCHEMA, *, check: bool = True
) -> npt.NDArray[np.float32]:
    """The exact model input matrix of request records (what the model server feeds XGBoost):
    :func:`to_matrix` of :func:`records_to_frame`, evaluated with numpy (see the module docstring).

    With ``check`` each record is first checked against the schema (see :func:`records_to_frame`);
    without, a value of the wrong type still raises :class:`SchemaError`, and an unknown category
    is missing."""
    if check:
        for i, rec in enumerate(records):
            schema.check_record(rec, where=f"record {i}")
    plan = _record_plan(schema)
    n_inputs = len(plan.inputs)
    out = np.full((len(records), n_inputs + len(plan.derived)), math.nan)
    for i, rec in enumerate(records):
        row = out[i]
        for j, (name, codes) in enumerate(plan.inputs):
            value = rec.get(name)
            if value is None:
                continue
            if codes is None:
                if not isinstance(value, int | float):
                    raise SchemaError(
                        f"records do not fit the feature schema: {name}={value!r} is not a number"
                    )
                row[j] = value
            elif isinstance(value, str):
                row[j] = codes.get(value, math.nan)
            else:
                raise SchemaError(f"records do not fit the feature schema: {name}={value!r} is not a string")
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for k, (op, a, b) in enumerate(plan.derived, start=n_inputs):
            x = out[:, a]
            if op == "ratio":
                y = out[:, b]
                out[:, k] = np.where(y != 0, x / y, math.nan)  # NaN when y is 0, missing or NaN
            else:  # log1p of max(x, 0); missing and NaN stay NaN
                out[:, k] = np.log1p(np.maximum(x, 0.0))
    return np.ascontiguousarray(out.astype(np.float32))
