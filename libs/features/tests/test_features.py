"""The shared feature schema and transforms: one code path for frames and request dicts."""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest

from finpredict.features import (
    CREDIT_SCHEMA,
    FeatureSchema,
    SchemaError,
    records_to_frame,
    records_to_matrix,
    to_matrix,
    transform,
)


def _record(**overrides: object) -> dict[str, object]:
    rec: dict[str, object] = {}
    for f in CREDIT_SCHEMA.features:
        if f.kind == "categorical":
            rec[f.name] = f.categories[-1]
        else:
            lo = f.min if f.min is not None else 0.0
            hi = f.max if f.max is not None else lo + 10
            rec[f.name] = float(math.floor((lo + hi) / 3)) if f.kind == "integer" else (lo + hi) / 3
    rec.update(overrides)
    return rec


def test_credit_schema_declares_45_ordered_input_features() -> None:
    names = CREDIT_SCHEMA.input_names
    assert len(names) == 45
    assert len(set(names)) == 45
    kinds = {f.kind for f in CREDIT_SCHEMA.features}
    assert kinds == {"numeric", "integer", "categorical"}
    assert set(CREDIT_SCHEMA.categorical_names) == {"sector", "region", "legal_form", "loan_purpose"}
    assert "protected_group" not in names  # the protected attribute is never a model feature
    assert CREDIT_SCHEMA.model_feature_names[:45] == names


def test_schema_round_trips_through_json() -> None:
    again = FeatureSchema.from_dict(json.loads(json.dumps(CREDIT_SCHEMA.to_dict())))
    assert again.to_dict() == CREDIT_SCHEMA.to_dict()
    assert again.model_feature_names == CREDIT_SCHEMA.model_feature_names


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"features": [{"name": "a", "type": "text"}]}, "type must be one of"),
        ({"features": [{"name": "a", "type": "categorical"}]}, "non-empty 'categories'"),
        ({"features": [{"name": "a", "type": "numeric", "min": 2, "max": 1}]}, "min 2.0 > max 1.0"),
        ({"features": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "numeric"}]}, "duplicate"),
        (
            {
                "features": [{"name": "a", "type": "numeric"}],
                "derived": [{"name": "r", "op": "ratio", "inputs": ["a", "b"]}],
            },
            "unknown input 'b'",
        ),
    ],
)
def test_bad_schemas_are_refused_with_the_feature_named(change: dict[str, object], message: str) -> None:
    with pytest.raises(SchemaError, match=message):
        FeatureSchema.from_dict(change)


def test_one_row_frame_and_one_record_give_the_same_matrix() -> None:
    rec = _record(owner_annual_income=None, collateral_value=None, loan_to_value=None, sector="retail")
    from_records = records_to_matrix([rec])
    frame = pl.DataFrame([rec], schema=records_to_frame([rec]).schema)
    from_frame = to_matrix(frame)
    assert from_records.shape == (1, len(CREDIT_SCHEMA.model_feature_names))
    assert from_records.dtype == np.float32
    np.testing.assert_array_equal(from_records, from_frame)
    names = CREDIT_SCHEMA.model_feature_names
    assert math.isnan(from_records[0, names.index("owner_annual_income")])
    assert from_records[0, names.index("sector")] == 0.0  # index in the declared category list
    ratio = from_records[0, names.index("loan_to_revenue")]
    assert ratio == pytest.approx(np.float32(float(rec["loan_amount"]) / float(rec["annual_revenue"])))


@pytest.mark.parametrize("rows", [1, 300])
def test_request_records_and_frames_give_identical_matrices_edge_cases_included(rows: int) -> None:
    """records_to_matrix (numpy, for requests) equals to_matrix of a frame (polars, for training)
    bit for bit: missing, NaN, infinities, zero and negative zero denominators, negative log
    inputs, every category, unknown categories (unchecked records)."""
    rng = np.random.default_rng(11)
    specials: list[object] = [None, math.nan, math.inf, -math.inf, 0.0, -0.0, -1.5]
    recs = []
    for _ in range(rows):
        rec = _record()
        for f in CREDIT_SCHEMA.features:
            roll = rng.random()
            if f.kind == "categorical":
                rec[f.name] = (
                    None if roll < 0.1 else "unknown" if roll < 0.2 else str(rng.choice(f.categories))
                )
            elif roll < 0.35:
                rec[f.name] = specials[int(rng.integers(len(specials)))]
            else:
                rec[f.name] = float(rng.normal(0, 1e5)) if roll < 0.7 else float(rng.integers(-3, 4))
        recs.append(rec)
    expected = to_matrix(records_to_frame(recs, check=False))
    got = records_to_matrix(recs, check=False)
    assert got.dtype == np.float32
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, expected)


def test_many_rows_match_row_by_row() -> None:
    rng = np.random.default_rng(3)
    recs = []
    for i in range(50):
        rec = _record(
            annual_revenue=float(rng.uniform(1e4, 1e7)), region=CREDIT_SCHEMA.spec("region").categories[i % 6]
        )
        if i % 7 == 0:
            rec["business_bureau_score"] = None
        recs.append(rec)
    batch = records_to_matrix(recs)
    for i in (0, 7, 49):
        np.testing.assert_array_equal(batch[i], records_to_matrix([recs[i]])[0])


def test_derived_ratio_is_missing_when_the_denominator_is_zero() -> None:
    df = records_to_frame([_record(annual_revenue=0.0)])
    out = transform(df)
    assert out["loan_to_revenue"][0] is None
    assert out["log_annual_revenue"][0] == 0.0


def test_integer_columns_and_float_columns_give_identical_features() -> None:
    rec = _record()
    df = records_to_frame([rec])
    as_int = df.with_columns(pl.col("open_accounts").cast(pl.Int64))
    np.testing.assert_array_equal(to_matrix(df), to_matrix(as_int))


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"sector": "casino"}, "feature 'sector' = 'casino' is not one of"),
        ({"credit_utilization": 7.0}, "feature 'credit_utilization' = 7.0 is above the maximum 2.0"),
        ({"annual_revenue": -1.0}, "'annual_revenue' = -1.0 is below the minimum 0.0"),
        ({"annual_revenue": None}, "'annual_revenue' is missing and not nullable"),
        ({"open_accounts": 2.5}, "'open_accounts' must be an integer"),
        ({"loan_amount": "lots"}, "'loan_amount' must be a number"),
        ({"favourite_colour": "red"}, "unknown feature"),
    ],
)
def test_bad_records_name_the_record_and_feature(override: dict[str, object], message: str) -> None:
    with pytest.raises(SchemaError, match=message) as err:
        records_to_matrix([_record(), _record(**override)])
    assert "record 1" in str(err.value)


def test_missing_input_column_is_an_error() -> None:
    df = records_to_frame([_record()]).drop("sector")
    with pytest.raises(SchemaError, match="sector"):
        to_matrix(df)
