"""Shared plumbing of the pipeline stages: params, paths, the dataset schema, errors, hashing."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
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
SOURCE_FILE = Path("data/raw/source.json")  # what the ingest stage read (lineage: training_data)
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


def read_text(path: Path, missing: str = "not found") -> str:
    """A file's UTF-8 text; a missing file or bytes that are not UTF-8 are a :class:`PipelineError`
    naming the file (and the line of the first bad byte)."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PipelineError(f"{path}: {missing}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise PipelineError(
            f"{path}: line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})"
        ) from None


def parse_yaml(path: Path, text: str) -> Any:
    """YAML (or JSON, a subset) of ``path``; a syntax error names the file, line and column. An
    error found at the end of the file points at the last line with content (what is unfinished)."""
    try:
        return yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = ", ".join(p for p in (exc.context, exc.problem) if p)
        if mark is None:
            raise PipelineError(f"{path}: invalid YAML: {what}") from None
        lines = text.splitlines()
        line, column = mark.line, mark.column
        if line >= len(lines) or not lines[line].strip():  # at the end: the unfinished line
            line = next((i for i in range(min(line, len(lines)) - 1, -1, -1) if lines[i].strip()), 0)
            column = len(lines[line]) if lines else 0
        raise PipelineError(f"{path}: line {line + 1} column {column + 1}: invalid YAML: {what}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{path}: invalid YAML: {exc}") from None


def parse_json(path: Path, text: str) -> Any:
    """JSON of ``path``; a syntax error names the file, line and column."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise PipelineError(
            f"{path}: line {exc.lineno} column {exc.colno}: invalid JSON: {exc.msg}"
        ) from None


def load_params(path: Path = PARAMS_FILE) -> dict[str, Any]:
    """Reads ``params.yaml``."""
    data = parse_yaml(path, read_text(path, "not found (run the stages from the repository root)"))
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: expected a mapping at the top level")
    return data


def param_line(path: Path, keys: Sequence[str]) -> int | None:
    """The 1-based line of the value at ``keys`` (nested mapping keys) in a YAML file, if found."""
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return None
        node = next((v for k, v in node.value if getattr(k, "value", None) == key), None)
        if node is None:
            return None
    return int(node.start_mark.line) + 1


def param_number(
    params: Mapping[str, Any], keys: Sequence[str], kind: type[int] | type[float], default: Any = None
) -> Any:
    """The number at ``keys`` of ``params.yaml`` (``default`` when absent); a value that is not a
    number of that kind is a :class:`PipelineError` naming the file, the key and its line."""
    value: Any = params
    for key in keys:
        value = value.get(key) if isinstance(value, Mapping) else None
    if value is None:
        if default is None:
            raise PipelineError(f"{PARAMS_FILE}: {'.'.join(keys)} is missing")
        return default
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if is_int or (kind is float and isinstance(value, float)):
        return kind(value)
    line = param_line(PARAMS_FILE, keys)
    where = f"{PARAMS_FILE}: line {line}" if line else str(PARAMS_FILE)
    expected = "an integer" if kind is int else "a number"
    raise PipelineError(f"{where}: {'.'.join(keys)}: expected {expected}, got {value!r}")


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
        text = read_text(path, "schema file not found")
        data = parse_json(path, text) if path.suffix == ".json" else parse_yaml(path, text)
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
