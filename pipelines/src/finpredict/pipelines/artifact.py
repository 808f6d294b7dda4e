"""The model artifact: XGBoost's own UBJ file plus a manifest JSON. Never pickle.

The manifest records the format, the model file's sha256 and size, the feature schema (input
features, derived features, model input order), the library versions that wrote it and the
training summary. :func:`load_model` verifies the manifest before use: the file's sha256, the
format, the number of model features, and the XGBoost major version.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from finpredict.features import FeatureSchema, SchemaError
from finpredict.pipelines._xgb import xgb
from finpredict.pipelines.common import PipelineError

ARTIFACT_FORMAT = "xgboost-ubj"
MANIFEST_VERSION = 1


class ArtifactError(PipelineError):
    """The model artifact does not match its manifest."""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "xgboost": xgb.__version__,
        "numpy": _version("numpy"),
        "polars": _version("polars"),
        "finpredict-features": _version("finpredict-features"),
        "finpredict-pipelines": _version("finpredict-pipelines"),
    }


def save_model(
    booster: xgb.Booster, out_dir: Path, schema: FeatureSchema, training: dict[str, Any]
) -> dict[str, Any]:
    """Writes ``model.ubj`` and ``manifest.json`` into ``out_dir``; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = out_dir / "model.ubj"
    raw = bytes(booster.save_raw(raw_format="ubj"))
    model_path.write_bytes(raw)
    manifest = {
        "manifest_version": MANIFEST_VERSION,
        "format": ARTIFACT_FORMAT,
        "model_file": model_path.name,
        "sha256": hashlib.sha256(raw).hexdigest(),
        "size_bytes": len(raw),
        "feature_schema": schema.to_dict(),
        "model_features": schema.model_feature_names,
        "libraries": library_versions(),
        "training": training,
        "created_at": datetime.now(UTC).isoformat(),
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


@dataclass(frozen=True)
class LoadedModel:
    booster: xgb.Booster
    manifest: dict[str, Any]
    schema: FeatureSchema
    best_iteration: int | None


def verify_manifest(model_bytes: bytes, manifest: dict[str, Any], where: str = "manifest") -> FeatureSchema:
    """Checks the manifest against the model bytes (no XGBoost needed); returns the schema."""
    if manifest.get("format") != ARTIFACT_FORMAT:
        raise ArtifactError(f"{where}: format {manifest.get('format')!r}, expected {ARTIFACT_FORMAT!r}")
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != manifest.get("sha256"):
        raise ArtifactError(
            f"{where}: sha256 of the model file is {digest}, the manifest says {manifest.get('sha256')}"
        )
    try:
        schema = FeatureSchema.from_dict(manifest["feature_schema"])
    except (KeyError, SchemaError) as exc:
        raise ArtifactError(f"{where}: bad feature schema ({exc})") from None
    if schema.model_feature_names != manifest.get("model_features"):
        raise ArtifactError(f"{where}: model_features do not match the feature schema")
    return schema


def load_model(model_dir: Path, nthread: int = 1) -> LoadedModel:
    """Loads and verifies a model directory written by :func:`save_model`."""
    manifest_path = model_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{manifest_path}: not found") from None
    model_path = model_dir / str(manifest.get("model_file", "model.ubj"))
    raw = model_path.read_bytes()
    schema = verify_manifest(raw, manifest, where=str(manifest_path))
    written = str(manifest.get("libraries", {}).get("xgboost", "0")).split(".")[0]
    if written != xgb.__version__.split(".")[0]:
        raise ArtifactError(f"{manifest_path}: written by XGBoost {written}.x, this is {xgb.__version__}")
    booster = xgb.Booster(params={"nthread": nthread})
    booster.load_model(bytearray(raw))
    if booster.num_features() != len(schema.model_feature_names):
        raise ArtifactError(
            f"{model_path}: the model takes {booster.num_features()} features, "
            f"the manifest declares {len(schema.model_feature_names)}"
        )
    best = manifest.get("training", {}).get("best_iteration")
    return LoadedModel(booster, manifest, schema, None if best is None else int(best))
