"""Shared plumbing of the pipeline stages: params, paths, the dataset schema, errors, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.features import CREDIT_SCHEMA, FeatureSchema, SchemaError
from finpredict.pipelines import dgp


class PipelineError(Exception):
    """A stage cannot go on; the message says why (file, column, rule). Exit status 2."""


class GateFailedError(PipelineError):
    """At least one quality gate failed. Exit status 3."""


# Paths relative to the repository root (the working directory of every DVC stage).
RAW_DATA = Path("data/raw/loans.parquet")
RAW_SCHEMA = Path("data/raw/dataset_schema.json")
EXTERNAL_DIR = Path("data/external")
VALIDATION_REPORT = Path("reports/validation.json")
FEATURES_DIR = Path("data/features")
MODEL_DIR = Path("models/model")
MODEL_FILE = MODEL_DIR / "model.ubj"
MANIFEST_FILE = MODEL_DIR / "manifest.json"
PROFILE_FILE = Path("models/reference_profile.bin")
METRICS_FILE = Path("reports/metrics.json")
GATES_FILE = Path("reports/gates.json")
PLOTS_DIR = Path("reports/plots")
WANDB_FILE = Path("reports/wandb.json")
REGISTRATION_FILE = Path("reports/registration.json")
PARAMS_FILE = Path("params.yaml")
DVC_LOCK = Path("dvc.lock")


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Reads ``params.yaml``."""
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (run the stages from the repository root)") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data


def section(params: Mapping[str, Any], name: str) -> dict[str, Any]:
    value = params.get(name)
    if not isinstance(value, dict):
        raise PipelineError(f"{PARAMS_FILE}: section {name!r} is missing or not a mapping")
    return value


@dataclass(frozen=True)
class DatasetSchema:
    """The feature schema plus the dataset columns that are not model features."""

    features: FeatureSchema
    label: str = dgp.LABEL
    protected_attribute: str = dgp.PROTECTED
    timestamp: str = dgp.TIMESTAMP
    id_column: str | None = dgp.ID
    min_rows: int = 1000

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.features.to_dict(),
            "label": self.label,
            "protected_attribute": self.protected_attribute,
            "timestamp": self.timestamp,
            "id_column": self.id_column,
            "min_rows": self.min_rows,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "schema") -> DatasetSchema:
        try:
            features = FeatureSchema.from_dict(d)
        except SchemaError as exc:
            raise PipelineError(f"{where}: {exc}") from None
        try:
            return cls(
                features=features,
                label=str(d.get("label", dgp.LABEL)),
                protected_attribute=str(d.get("protected_attribute", dgp.PROTECTED)),
                timestamp=str(d.get("timestamp", dgp.TIMESTAMP)),
                id_column=None if d.get("id_column") is None else str(d["id_column"]),
                min_rows=int(d.get("min_rows", 1000)),
            )
        except (TypeError, ValueError) as exc:
            raise PipelineError(f"{where}: {exc}") from None

    @classmethod
    def load(cls, path: Path) -> DatasetSchema:
        try:
            text = path.read_text()
        except FileNotFoundError:
            raise PipelineError(f"{path}: schema file not found") from None
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        if not isinstance(data, dict):
            raise PipelineError(f"{path}: expected a mapping")
        return cls.from_dict(data, where=str(path))


def default_dataset_schema(min_rows: int = 1000) -> DatasetSchema:
    return DatasetSchema(features=CREDIT_SCHEMA, min_rows=min_rows)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    """The md5 DVC 3 records for a file (plain md5 of the bytes)."""
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
    os.replace(tmp, path)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PipelineError(f"{path}: not found (did the previous stage run?)") from None


def git_commit() -> str:
    """The commit of the working tree (``HEAD``); empty outside a git repository."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True, timeout=30
        )
        return out.stdout.strip()
    except (subprocess.SubprocessError, OSError):
        return ""


def run_stage(name: str, fn: Callable[[], None]) -> None:
    """Runs a stage's main; a :class:`PipelineError` prints a clean report and exits non-zero."""
    try:
        fn()
    except GateFailedError as exc:
        print(f"[{name}] FAILED: {exc}", file=sys.stderr)
        sys.exit(3)
    except PipelineError as exc:
        print(f"[{name}] FAILED: {exc}", file=sys.stderr)
        sys.exit(2)
