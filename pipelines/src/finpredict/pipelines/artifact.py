"""The model artifact of the pipeline: XGBoost's own UBJ file plus a manifest JSON. Never pickle.

The format is the one shared with the model server, :mod:`finpredict.modelio` (manifest with the
model file's sha256 and size, the feature schema, the model input order, the library versions
and the training summary; verified before XGBoost parses a byte). This module only adapts it to
the pipeline: errors become :class:`ArtifactError`, a :class:`PipelineError`, so a stage exits
with its report.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finpredict.features import FeatureSchema
from finpredict.pipelines._xgb import xgb  # first: XGBoost without scikit-learn (see _xgb)

from finpredict.modelio import artifact as shared  # isort: skip  # (after _xgb: it imports xgboost)
from finpredict.pipelines.common import PipelineError

ARTIFACT_FORMAT = shared.ARTIFACT_FORMAT
MANIFEST_VERSION = shared.MANIFEST_VERSION
library_versions = shared.library_versions


class ArtifactError(PipelineError):
    """The model artifact does not match its manifest."""


def save_model(
    booster: xgb.Booster, out_dir: Path, schema: FeatureSchema, training: dict[str, Any]
) -> dict[str, Any]:
    """Writes ``model.ubj`` and ``manifest.json`` into ``out_dir``; returns the manifest."""
    try:
        return shared.save_model(booster, out_dir, schema, training)
    except shared.ArtifactError as exc:
        raise ArtifactError(str(exc)) from None


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    manifest: dict[str, Any]
    schema: FeatureSchema
    best_iteration: int | None


def verify_manifest(model_bytes: bytes, manifest: dict[str, Any], where: str = "manifest") -> FeatureSchema:
    """Checks the manifest against the model bytes (before any parsing); returns the schema."""
    try:
        return shared.verify_manifest(model_bytes, manifest, where)
    except shared.ArtifactError as exc:
        raise ArtifactError(str(exc)) from None


def load_model(model_dir: Path, nthread: int = 1) -> LoadedModel:
    """Loads and verifies a model directory written by :func:`save_model`."""
    try:
        model = shared.load_model_dir(model_dir, nthread=nthread)
    except shared.ArtifactError as exc:
        raise ArtifactError(str(exc)) from None
    return LoadedModel(model.booster, model.manifest, model.schema, model.best_iteration)
