"""Request validation, feature computation and response building (no Ray here: unit-testable)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.features import FeatureSchema, SchemaError
from finpredict.modelio import Model, Predictions


class InvalidRequestError(ValueError):
    """A request breaks the contract; the message starts with the offending field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass
class LoadedVersion:
    """A verified, warmed-up model version held by a replica."""

    name: str
    version: int
    model: Model
    threshold: float
    sha256: str
    load_ms: float

    @property
    def ref(self) -> types_pb2.ModelRef:
        return types_pb2.ModelRef(name=self.name, version=self.version)


def check_model_ref(ref: types_pb2.ModelRef, field: str = "model") -> tuple[str, int]:
    if not ref.name:
        raise InvalidRequestError(f"{field}.name", "required")
    if ref.version <= 0:
        raise InvalidRequestError(f"{field}.version", "must be a registered version number (> 0)")
    return ref.name, int(ref.version)


def check_predict_request(request: pb.PredictRequest, max_rows: int, max_top_k: int) -> tuple[str, int]:
    name, version = check_model_ref(request.model)
    if not request.rows:
        raise InvalidRequestError("rows", "at least one row is required")
    if len(request.rows) > max_rows:
        raise InvalidRequestError("rows", f"{len(request.rows)} rows exceed the limit of {max_rows}")
    if request.top_k < 0 or request.top_k > max_top_k:
        raise InvalidRequestError("top_k", f"must be within [0, {max_top_k}], got {request.top_k}")
    return name, version


def row_records(rows: Sequence[pb.FeatureRow], schema: FeatureSchema) -> list[dict[str, object]]:
    """The feature dicts of the request rows, each checked against the version's schema."""
    records: list[dict[str, object]] = []
    for i, row in enumerate(rows):
        rec: dict[str, object] = {}
        for key, value in row.features.items():
            kind = value.WhichOneof("kind")
            if kind == "number":
                rec[key] = value.number
            elif kind == "category":
                rec[key] = value.category
            else:
                rec[key] = None
        try:
            schema.check_record(rec, where=f"rows[{i}]")
        except SchemaError as exc:
            field = f"rows[{i}].features"
            for name in sorted(rec.keys() | set(schema.input_names), key=len, reverse=True):
                if f"'{name}'" in str(exc):
                    field = f"rows[{i}].features[{name}]"
                    break
            raise InvalidRequestError(field, str(exc)) from None
        records.append(rec)
    return records


def warmup_record(schema: FeatureSchema) -> dict[str, object]:
    """One valid record (smallest values, first categories) to warm a version up before it is ready."""
    rec: dict[str, object] = {}
    for f in schema.features:
        if f.kind == "categorical":
            rec[f.name] = f.categories[0]
        elif f.min is not None and math.isfinite(f.min):
            rec[f.name] = float(f.min)
        elif f.max is not None and math.isfinite(f.max):
            rec[f.name] = float(min(f.max, 0.0))
        else:
            rec[f.name] = 0.0
    return rec


def predictions_to_proto(
    loaded: LoadedVersion,
    preds: Predictions,
    start: int,
    stop: int,
    top_k: int,
    all_contributions: bool,
) -> pb.PredictResponse:
    """The response for rows ``start:stop`` of a (possibly coalesced) batch."""
    names = loaded.model.feature_names
    out = pb.PredictResponse(model=loaded.ref, threshold=loaded.threshold)
    for i in range(start, stop):
        p = out.predictions.add(score=float(preds.scores[i]), margin=float(preds.margins[i]))
        if preds.contributions is not None:
            row = preds.contributions[i]
            for rc in loaded.model.reason_codes(row, top_k):
                p.reason_codes.add(
                    code=rc.code, feature=rc.feature, contribution=rc.contribution, description=rc.description
                )
            if all_contributions and preds.bias is not None:
                p.bias = float(preds.bias[i])
                for name, value in zip(names, row, strict=True):
                    p.contributions.add(feature=name, contribution=float(value))
    return out


@dataclass
class ScoreItem:
    """One request's part of a coalesced batch: its validated feature records."""

    loaded: LoadedVersion
    records: list[dict[str, object]]
    explain: bool
    batch_size: int = 1  # requests scored together with this one (set by the batcher, for tracing)


def score_items(items: Sequence[ScoreItem]) -> list[Predictions]:
    """Scores many requests with one feature computation and one XGBoost call per
    (version, explain) group: the per-call overhead of both is paid once per batch."""
    results: list[Predictions | None] = [None] * len(items)
    groups: dict[tuple[int, bool], list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault((id(item.loaded), item.explain), []).append(i)
    for (_, explain), idx in groups.items():
        loaded = items[idx[0]].loaded
        records = [rec for i in idx for rec in items[i].records]
        x = loaded.model.matrix(records, check=False)
        preds = loaded.model.predict(x, explain=explain)
        offset = 0
        for i in idx:
            sl = slice(offset, offset + len(items[i].records))
            results[i] = Predictions(
                preds.scores[sl],
                preds.margins[sl],
                None if preds.contributions is None else preds.contributions[sl],
                None if preds.bias is None else preds.bias[sl],
            )
            offset += len(items[i].records)
    return [r for r in results if r is not None]


def describe(loaded: LoadedVersion) -> dict[str, Any]:
    return {
        "model": loaded.name,
        "version": loaded.version,
        "sha256": loaded.sha256,
        "load_ms": loaded.load_ms,
    }
