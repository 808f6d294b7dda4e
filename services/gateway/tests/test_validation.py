"""Every kind of bad request is refused with a message naming the field (table-driven)."""

from __future__ import annotations

import math

import pytest

from finpredict.api.common.v1 import types_pb2 as t
from finpredict.gateway.validation import (
    RequestError,
    validate_application,
    validate_attributes,
    validate_batch_size,
    validate_model_name,
)

SCHEMA = t.FeatureSchema(
    features=[
        t.FeatureSpec(name="revenue", type=t.FEATURE_TYPE_NUMERIC, min=0.0),
        t.FeatureSpec(name="utilisation", type=t.FEATURE_TYPE_NUMERIC, min=0.0, max=1.5, nullable=True),
        t.FeatureSpec(name="delinquencies_12m", type=t.FEATURE_TYPE_INTEGER, min=0.0, max=50.0),
        t.FeatureSpec(name="sector", type=t.FEATURE_TYPE_CATEGORICAL, categories=["retail", "construction"]),
    ]
)


def num(x: float) -> t.FeatureValue:
    return t.FeatureValue(number=x)


def cat(x: str) -> t.FeatureValue:
    return t.FeatureValue(category=x)


GOOD = {"revenue": num(1.2e6), "utilisation": num(0.4), "delinquencies_12m": num(1), "sector": cat("retail")}


def test_a_good_application_passes_and_nullable_may_be_missing_or_nan() -> None:
    validate_application(SCHEMA, GOOD, entity_id="c-1")
    validate_application(SCHEMA, {k: v for k, v in GOOD.items() if k != "utilisation"}, entity_id="c-1")
    validate_application(SCHEMA, {**GOOD, "utilisation": num(math.nan)}, entity_id="c-1")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"income_typo": num(1.0)}, 'application.features["income_typo"]: unknown feature'),
        ({"revenue": None}, 'application.features["revenue"]: missing'),
        ({"revenue": cat("lots")}, 'application.features["revenue"]: expected a number'),
        ({"sector": num(3)}, 'application.features["sector"]: expected a category'),
        ({"sector": cat("mining")}, "application.features[\"sector\"]: unknown category 'mining'"),
        ({"revenue": num(math.nan)}, 'application.features["revenue"]: NaN is not allowed'),
        ({"revenue": num(math.inf)}, 'application.features["revenue"]: inf is not a finite number'),
        ({"revenue": num(-5)}, 'application.features["revenue"]: -5 is below the minimum 0'),
        ({"utilisation": num(1.7)}, 'application.features["utilisation"]: 1.7 is above the maximum 1.5'),
        ({"delinquencies_12m": num(2.5)}, 'application.features["delinquencies_12m"]: 2.5 is not an integer'),
    ],
)
def test_bad_features_are_named(change: dict[str, t.FeatureValue | None], message: str) -> None:
    features = {**GOOD, **{k: v for k, v in change.items() if v is not None}}
    for k, v in change.items():
        if v is None:
            features.pop(k)
    with pytest.raises(RequestError) as err:
        validate_application(SCHEMA, features, entity_id="c-1")
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"entity_id": ""}, "application.entity_id: required"),
        ({"entity_id": "x" * 300}, "application.entity_id: longer than 256"),
        ({"entity_id": "c", "request_id": "r" * 300}, "application.request_id: longer than 256"),
    ],
)
def test_bad_ids_are_named(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("[", r"\[")):
        validate_application(SCHEMA, GOOD, **kwargs)


def test_batch_paths_name_the_row() -> None:
    with pytest.raises(RequestError, match=r'applications\[3\].features\["revenue"\]: missing'):
        validate_application(SCHEMA, {}, path="applications[3]", entity_id="c")


@pytest.mark.parametrize(("n", "message"), [(0, "empty batch"), (1001, "1001 items exceed the batch limit")])
def test_batch_size_limits(n: int, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        validate_batch_size(n)


def test_model_name_required() -> None:
    with pytest.raises(RequestError, match="model: required"):
        validate_model_name("")


@pytest.mark.parametrize(
    ("attributes", "message"),
    [
        ({"revenue": "A"}, r'applications\[2\].attributes\["revenue"\]: a feature of the model'),
        ({"": "A"}, r'attributes\[""\]: a name of 1 to 64 characters is required'),
        ({"g" * 65: "A"}, "a name of 1 to 64 characters"),
        ({"protected_group": "x" * 257}, r'attributes\["protected_group"\]: longer than 256 characters'),
        ({f"a{i}": "x" for i in range(17)}, r"applications\[2\].attributes: 17 attributes, at most 16"),
    ],
)
def test_bad_attributes_are_named(attributes: dict[str, str], message: str) -> None:
    specs = {spec.name: spec for spec in SCHEMA.features}
    validate_attributes({"protected_group": "B"}, specs, "applications[2]")  # a good one passes
    with pytest.raises(RequestError, match=message):
        validate_attributes(attributes, specs, "applications[2]")
