"""Reference profiles of model versions, cached on disk (``profiles_dir``).

One version is three files under ``<profiles_dir>/<model>/``: ``<version>.bin`` (drift_core's
``Profile.to_bytes()``, as the pipeline's profile stage writes it and the registry stores it),
``<version>.sha256`` (the checksum the registry recorded for it) and ``<version>.schema.json``
(the version's feature schema, ``finpredict.common.v1.FeatureSchema`` as JSON). The profile is
written last, so a crash never leaves a profile without its checksum; a profile whose checksum
file disagrees with it is not used (and fetched again). A ``.bin`` put there by hand, without the
other two, is used as is.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import json_format

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.common.fsio import write_atomic
from finpredict.monitor.drift_input import SCORE_COLUMN
from finpredict.monitor.records import MODEL_NAME_RE

log = logging.getLogger("finpredict.monitor")


@dataclass(frozen=True)
class Reference:
    """What the monitor compares a version's traffic with: its profile, and which features are
    numbers and which categories (from the profile, then the schema for features it lacks)."""

    profile: drift_core.Profile
    numeric: frozenset[str]
    categorical: frozenset[str]


def reference(profile: drift_core.Profile, schema: types_pb2.FeatureSchema | None = None) -> Reference:
    numeric: set[str] = set()
    categorical: set[str] = set()
    for name in profile.feature_names:
        if name != SCORE_COLUMN:
            (categorical if profile.is_categorical(name) else numeric).add(name)
    for spec in schema.features if schema is not None else ():
        if spec.name not in numeric and spec.name not in categorical:
            kind = categorical if spec.type == types_pb2.FEATURE_TYPE_CATEGORICAL else numeric
            kind.add(spec.name)
    return Reference(profile, frozenset(numeric), frozenset(categorical))


class ProfileCache:
    """The profiles on disk, one directory per model."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _paths(self, model: str, version: int) -> tuple[Path, Path, Path] | None:
        if not MODEL_NAME_RE.match(model):  # a name from a request never escapes the folder
            return None
        base = self.root / model
        return base / f"{version}.bin", base / f"{version}.sha256", base / f"{version}.schema.json"

    def load(self, model: str, version: int) -> Reference | None:
        """The cached reference of a version, or None (absent, unreadable or failing its checksum)."""
        paths = self._paths(model, version)
        if paths is None or not paths[0].exists():
            return None
        blob_path, sha_path, schema_path = paths
        try:
            blob = blob_path.read_bytes()
            if sha_path.exists() and hashlib.sha256(blob).hexdigest() != sha_path.read_text().strip():
                log.error("cached reference profile fails its checksum", extra={"path": str(blob_path)})
                return None
            schema = None
            if schema_path.exists():
                schema = json_format.Parse(schema_path.read_text(), types_pb2.FeatureSchema())
            return reference(drift_core.Profile.from_bytes(blob), schema)
        except (OSError, ValueError, json_format.ParseError) as exc:  # DriftCoreError is a ValueError
            log.error("bad cached reference profile", extra={"path": str(blob_path), "error": str(exc)})
            return None

    def store(
        self, model: str, version: int, blob: bytes, sha256: str, schema: types_pb2.FeatureSchema
    ) -> None:
        """Durably writes a version's profile, checksum and schema (the profile last)."""
        paths = self._paths(model, version)
        if paths is None:
            raise ValueError(f"{model!r} is not a model name")
        blob_path, sha_path, schema_path = paths
        blob_path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(sha_path, sha256.encode())
        write_atomic(schema_path, json_format.MessageToJson(schema, indent=None).encode())
        write_atomic(blob_path, blob)
