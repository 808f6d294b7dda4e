"""Shared feature computation: one code path for training and serving.

``CREDIT_SCHEMA`` declares the 45 input features; :func:`to_matrix` (a polars DataFrame) and
:func:`records_to_matrix` (the feature dicts of a gRPC request) produce the identical model
input matrix.
"""

from finpredict.features.schema import (
    CREDIT_SCHEMA,
    LEGAL_FORMS,
    LOAN_PURPOSES,
    REGIONS,
    SECTORS,
    DerivedFeature,
    FeatureSchema,
    FeatureSpec,
    SchemaError,
)
from finpredict.features.transform import (
    feature_exprs,
    input_polars_schema,
    records_to_frame,
    records_to_matrix,
    to_matrix,
    transform,
)

__all__ = [
    "CREDIT_SCHEMA",
    "LEGAL_FORMS",
    "LOAN_PURPOSES",
    "REGIONS",
    "SECTORS",
    "DerivedFeature",
    "FeatureSchema",
    "FeatureSpec",
    "SchemaError",
    "feature_exprs",
    "input_polars_schema",
    "records_to_frame",
    "records_to_matrix",
    "to_matrix",
    "transform",
]
