"""Validation of scoring requests against the feature schema of the version routed to.

Every refusal names the field, in the form a client can find in its own request:
``applications[3].features["utilisation"]: 1.7 is above the maximum 1.5``. The gateway turns
:class:`RequestError` into ``INVALID_ARGUMENT`` with that message.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from finpredict.api.common.v1 import types_pb2

MAX_BATCH = 1000
MAX_ID_LENGTH = 256
MAX_ATTRIBUTES = 16
MAX_ATTRIBUTE_NAME = 64


class RequestError(ValueError):
    """A request field is invalid; the message names it."""


def validate_application(
    schema: types_pb2.FeatureSchema,
    features: Mapping[str, types_pb2.FeatureValue],
    path: str = "application",
    entity_id: str = "",
    request_id: str = "",
    specs: Mapping[str, types_pb2.FeatureSpec] | None = None,
) -> None:
    """Checks one application's ids and features against ``schema`` (``specs``: its features by
    name, when the caller keeps them)."""
    if not entity_id:
        raise RequestError(f"{path}.entity_id: required (routing is sticky per entity)")
    if len(entity_id) > MAX_ID_LENGTH:
        raise RequestError(f"{path}.entity_id: longer than {MAX_ID_LENGTH} characters")
    if len(request_id) > MAX_ID_LENGTH:
        raise RequestError(f"{path}.request_id: longer than {MAX_ID_LENGTH} characters")
    if specs is None:
        specs = {spec.name: spec for spec in schema.features}
    for name in features:
        if name not in specs:
            raise RequestError(f'{path}.features["{name}"]: unknown feature (not in the model\'s schema)')
    for spec in schema.features:
        field = f'{path}.features["{spec.name}"]'
        value = features.get(spec.name)
        kind = value.WhichOneof("kind") if value is not None else None
        if kind is None:
            if not spec.nullable:
                raise RequestError(f"{field}: missing, and the feature is not nullable")
            continue
        if spec.type == types_pb2.FEATURE_TYPE_CATEGORICAL:
            if kind != "category":
                raise RequestError(f"{field}: expected a category (string), got a number")
            if spec.categories and value.category not in spec.categories:  # type: ignore[union-attr]
                raise RequestError(f"{field}: unknown category {value.category!r}")  # type: ignore[union-attr]
            continue
        if kind != "number":
            raise RequestError(f"{field}: expected a number, got the string {value.category!r}")  # type: ignore[union-attr]
        number = value.number  # type: ignore[union-attr]
        if math.isnan(number):
            if not spec.nullable:
                raise RequestError(f"{field}: NaN is not allowed (the feature is not nullable)")
            continue
        if math.isinf(number):
            raise RequestError(f"{field}: {number} is not a finite number")
        if spec.type == types_pb2.FEATURE_TYPE_INTEGER and not number.is_integer():
            raise RequestError(f"{field}: {number} is not an integer")
        if spec.HasField("min") and number < spec.min:
            raise RequestError(f"{field}: {number:g} is below the minimum {spec.min:g}")
        if spec.HasField("max") and number > spec.max:
            raise RequestError(f"{field}: {number:g} is above the maximum {spec.max:g}")


def validate_attributes(
    attributes: Mapping[str, str], specs: Mapping[str, types_pb2.FeatureSpec], path: str = "application"
) -> None:
    """Checks an application's attributes (logged with the prediction, never sent to the model):
    at most :data:`MAX_ATTRIBUTES`, names not features of the model, values of bounded length."""
    if len(attributes) > MAX_ATTRIBUTES:
        raise RequestError(f"{path}.attributes: {len(attributes)} attributes, at most {MAX_ATTRIBUTES}")
    for name, value in attributes.items():
        field = f'{path}.attributes["{name}"]'
        if not name or len(name) > MAX_ATTRIBUTE_NAME:
            raise RequestError(f"{field}: a name of 1 to {MAX_ATTRIBUTE_NAME} characters is required")
        if name in specs:
            raise RequestError(f"{field}: a feature of the model (send it in features)")
        if len(value) > MAX_ID_LENGTH:
            raise RequestError(f"{field}: longer than {MAX_ID_LENGTH} characters")


def validate_batch_size(n: int, field: str = "applications", limit: int = MAX_BATCH) -> None:
    if n == 0:
        raise RequestError(f"{field}: empty batch")
    if n > limit:
        raise RequestError(f"{field}: {n} items exceed the batch limit of {limit}")


def validate_model_name(model: str, field: str = "model") -> None:
    if not model:
        raise RequestError(f"{field}: required")
    if len(model) > MAX_ID_LENGTH:
        raise RequestError(f"{field}: longer than {MAX_ID_LENGTH} characters")


def feature_names(schema: types_pb2.FeatureSchema) -> Sequence[str]:
    return [spec.name for spec in schema.features]
