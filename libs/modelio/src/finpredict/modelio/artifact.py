"""Writing, verifying and loading model artifacts (XGBoost UBJ/JSON + manifest; never pickle).

The manifest is the training pipeline's format (``pipelines/.../artifact.py``), key for key:

``manifest_version``, ``format`` (``"xgboost-ubj"``; ``"xgboost-json"`` is accepted too),
``model_file``, ``sha256``, ``size_bytes``, ``feature_schema`` (``FeatureSchema.to_dict()``),
``model_features``, ``libraries``, ``training``, ``created_at``; written as
``json.dumps(manifest, indent=2, sort_keys=True) + "\\n"``.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import xgboost as xgb

from finpredict.features import FeatureSchema, SchemaError
from finpredict.modelio.model import Model

ARTIFACT_FORMAT = "xgboost-ubj"
ARTIFACT_FORMATS = ("xgboost-ubj", "xgboost-json")
MANIFEST_VERSION = 1


class ArtifactError(ValueError):
    """The artifact does not match its manifest (checksum, format, schema, library version)."""


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def library_versions() -> dict[str, str]:
    """The library versions recorded in a manifest (same keys as the training pipeline)."""
    return {
        "python": platform.python_version(),
        "xgboost": xgb.__version__,
        "numpy": _version("numpy"),
        "polars": _version("polars"),
        "finpredict-features": _version("finpredict-features"),
        "finpredict-pipelines": _version("finpredict-pipelines"),
    }


def build_manifest(
    raw: bytes,
    schema: FeatureSchema,
    training: dict[str, Any],
    *,
    model_file: str = "model.ubj",
    fmt: str = ARTIFACT_FORMAT,
) -> dict[str, Any]:
    """The manifest of the model bytes ``raw``."""
    if fmt not in ARTIFACT_FORMATS:
        raise ArtifactError(f"format {fmt!r} is not one of {ARTIFACT_FORMATS}")
    return {
        "manifest_version": MANIFEST_VERSION,
        "format": fmt,
        "model_file": model_file,
        "sha256": sha256_hex(raw),
        "size_bytes": len(raw),
        "feature_schema": schema.to_dict(),
        "model_features": schema.model_feature_names,
        "libraries": library_versions(),
        "training": training,
        "created_at": datetime.now(UTC).isoformat(),
    }


def manifest_json(manifest: dict[str, Any]) -> str:
    """The manifest text exactly as the training pipeline writes it."""
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"


def save_model(
    booster: xgb.Booster, out_dir: Path, schema: FeatureSchema, training: dict[str, Any]
) -> dict[str, Any]:
    """Writes ``model.ubj`` and ``manifest.json`` into ``out_dir``; returns the manifest."""
    out_dir.mkdir(parents=True, exist_ok=True)
    raw = bytes(booster.save_raw(raw_format="ubj"))
    (out_dir / "model.ubj").write_bytes(raw)
    manifest = build_manifest(raw, schema, training)
    (out_dir / "manifest.json").write_text(manifest_json(manifest))
    return manifest


def verify_manifest(raw: bytes, manifest: dict[str, Any], where: str = "manifest") -> FeatureSchema:
    """Checks the manifest against the model bytes before they are parsed; returns the schema."""
    fmt = manifest.get("format")
    if fmt not in ARTIFACT_FORMATS:
        raise ArtifactError(f"{where}: format {fmt!r}, expected one of {list(ARTIFACT_FORMATS)}")
    expected = manifest.get("sha256")
    size = manifest.get("size_bytes")
    if size is not None and size != len(raw):
        raise ArtifactError(f"{where}: the model file has {len(raw)} bytes, the manifest says {size}")
    digest = sha256_hex(raw)
    if digest != expected:
        raise ArtifactError(f"{where}: sha256 of the model file is {digest}, the manifest says {expected}")
    try:
        schema = FeatureSchema.from_dict(manifest["feature_schema"])
    except (KeyError, TypeError, SchemaError) as exc:
        raise ArtifactError(f"{where}: bad feature schema ({exc})") from None
    if schema.model_feature_names != manifest.get("model_features"):
        raise ArtifactError(f"{where}: model_features do not match the feature schema")
    written = str(manifest.get("libraries", {}).get("xgboost", "0")).split(".")[0]
    if written != xgb.__version__.split(".")[0]:
        raise ArtifactError(f"{where}: written by XGBoost {written}.x, this is {xgb.__version__}")
    return schema


def load_model_bytes(
    raw: bytes, manifest: dict[str, Any] | str, *, nthread: int = 1, where: str = "artifact"
) -> Model:
    """Verifies ``raw`` against ``manifest`` (dict or JSON text), then loads the booster."""
    if isinstance(manifest, str):
        try:
            doc = json.loads(manifest)
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{where}: manifest is not valid JSON ({exc.msg})") from None
        if not isinstance(doc, dict):
            raise ArtifactError(f"{where}: manifest must be a JSON object")
        manifest = doc
    schema = verify_manifest(raw, manifest, where)
    booster = xgb.Booster(params={"nthread": nthread})
    try:
        booster.load_model(bytearray(raw))
    except xgb.core.XGBoostError as exc:
        raise ArtifactError(f"{where}: XGBoost cannot parse the model ({str(exc).splitlines()[0]})") from None
    booster.set_param({"nthread": nthread})
    if booster.num_features() != len(schema.model_feature_names):
        raise ArtifactError(
            f"{where}: the model takes {booster.num_features()} features, "
            f"the manifest declares {len(schema.model_feature_names)}"
        )
    best = manifest.get("training", {}).get("best_iteration")
    return Model(booster, schema, manifest, sha256_hex(raw), None if best is None else int(best))


def load_model_dir(model_dir: Path, *, nthread: int = 1) -> Model:
    """Loads and verifies a directory written by :func:`save_model` (or the training pipeline)."""
    manifest_path = model_dir / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ArtifactError(f"{manifest_path}: not found") from None
    raw = (model_dir / str(manifest.get("model_file", "model.ubj"))).read_bytes()
    return load_model_bytes(raw, manifest, nthread=nthread, where=str(manifest_path))
