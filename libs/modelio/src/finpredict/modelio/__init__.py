"""The model artifact shared by training and serving: XGBoost UBJ bytes plus a manifest.

Never pickle. :func:`build_manifest` / :func:`save_model` write the manifest format of the
training pipeline byte for byte (``format: "xgboost-ubj"``, ``model_file``, ``sha256``,
``size_bytes``, ``feature_schema``, ``model_features``, ``libraries``, ``training``);
:func:`load_model_bytes` verifies the sha256 and the manifest before XGBoost sees a byte and
loads the booster with ``nthread=1``; :class:`Model` predicts and explains (TreeSHAP reason codes).
"""

from finpredict.modelio.artifact import (
    ARTIFACT_FORMAT,
    ARTIFACT_FORMATS,
    MANIFEST_VERSION,
    ArtifactError,
    build_manifest,
    library_versions,
    load_model_bytes,
    load_model_dir,
    save_model,
    sha256_hex,
    verify_manifest,
)
from finpredict.modelio.model import Model, Predictions, ReasonCode, reason_codes

__all__ = [
    "ARTIFACT_FORMAT",
    "ARTIFACT_FORMATS",
    "MANIFEST_VERSION",
    "ArtifactError",
    "Model",
    "Predictions",
    "ReasonCode",
    "build_manifest",
    "library_versions",
    "load_model_bytes",
    "load_model_dir",
    "reason_codes",
    "save_model",
    "sha256_hex",
    "verify_manifest",
]
