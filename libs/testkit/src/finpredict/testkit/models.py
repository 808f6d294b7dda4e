"""Small real models for tests and benchmarks: synthetic records of any schema, a quick XGBoost fit."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import xgboost as xgb

from finpredict.features import DerivedFeature, FeatureSchema, FeatureSpec, records_to_matrix

# A compact schema (all three kinds, a nullable feature, derived features) for fast tests.
SMALL_SCHEMA = FeatureSchema(
    features=(
        FeatureSpec("annual_revenue", "numeric", min=0, max=1e8, description="Annual revenue"),
        FeatureSpec("debt", "numeric", min=0, max=1e8, description="Outstanding debt"),
        FeatureSpec(
            "owner_income", "numeric", nullable=True, min=0, max=1e7, description="Owner income",
            max_null_rate=0.2,
        ),
        FeatureSpec("years_in_business", "integer", min=0, max=100, description="Years in business"),
        FeatureSpec("late_payments_12m", "integer", min=0, max=50, description="Late payments (12 months)"),
        FeatureSpec(
            "sector", "categorical", categories=("retail", "tech", "construction"), description="Sector"
        ),
    ),
    derived=(
        DerivedFeature("debt_to_revenue", "ratio", ("debt", "annual_revenue")),
        DerivedFeature("log_revenue", "log1p", ("annual_revenue",)),
    ),
)  # fmt: skip


def synthetic_records(schema: FeatureSchema, n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` valid records of ``schema`` (values inside the ranges, some nulls where allowed)."""
    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    for _ in range(n):
        rec: dict[str, Any] = {}
        for f in schema.features:
            if f.nullable and rng.random() < min(f.max_null_rate, 0.1):
                rec[f.name] = None
            elif f.kind == "categorical":
                rec[f.name] = f.categories[int(rng.integers(len(f.categories)))]
            else:
                lo = 0.0 if f.min is None else f.min
                hi = lo + 1e6 if f.max is None else f.max
                span = hi - lo
                # log-uniform-ish spread over wide ranges, uniform over small ones
                v = lo + (span * rng.random() ** 3 if span > 1000 else span * rng.random())
                v = min(max(v, lo), hi)
                rec[f.name] = float(math.floor(v)) if f.kind == "integer" else float(v)
        out.append(rec)
    return out


@dataclass
class TrainedModel:
    booster: xgb.Booster
    schema: FeatureSchema
    records: list[dict[str, Any]]
    raw: bytes


def train_small_model(
    schema: FeatureSchema = SMALL_SCHEMA, n: int = 400, seed: int = 0, rounds: int = 20, depth: int = 3
) -> TrainedModel:
    """Fits a small binary:logistic booster on synthetic records; returns it with its UBJ bytes."""
    records = synthetic_records(schema, n, seed)
    x = records_to_matrix(records, schema)
    rng = np.random.default_rng(seed + 1)
    # a label that depends on several features, so contributions are spread out
    z = np.nan_to_num(x, nan=0.0)
    signal = (z[:, 0:1].sum(axis=1) > np.nanmedian(z[:, 0])).astype(float) + rng.normal(0, 0.7, n)
    if z.shape[1] > 4:
        signal += (z[:, 4] > np.median(z[:, 4])).astype(float)
    y = (signal > np.median(signal)).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=y, feature_names=schema.model_feature_names, missing=np.nan)
    params = {"objective": "binary:logistic", "max_depth": depth, "eta": 0.3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    return TrainedModel(booster, schema, records, bytes(booster.save_raw(raw_format="ubj")))
