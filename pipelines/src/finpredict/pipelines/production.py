"""The ``production`` source of the ingest stage: a snapshot of labelled production predictions.

The snapshot is what ``finpredict drift export`` (or the monitor's retraining trigger, with
``FINPREDICT_MONITOR_RETRAIN_SNAPSHOT``) writes: the matured predictions of a window joined with
their outcomes (see ``finpredict.monitor.export``), one Parquet file with the window and the
counts in its metadata. It lives under ``data/production/`` (``data.production.snapshot`` of
``params.yaml``), a dependency of the ingest stage, so DVC re-runs the pipeline when a new
snapshot arrives and ``dvc.lock`` records its md5.

The snapshot is checked against the feature schema (every non-nullable feature logged, numbers
as numbers and categories as text) and, when ``data.production.window_start`` / ``window_end``
are set, against the window they name; then it becomes the dataset the next stages read: the
features without their ``f.`` prefix, the label (an analyst's corrected label where there is one,
else the outcome), the prediction time as the timestamp, the request id as the id and the
protected attribute, which must have been logged with the predictions (the fairness gate needs
it; it is not a model feature): the scoring client sends it in the application's ``attributes``,
which the gateway logs beside the features and never passes to the model.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl

from finpredict.common.production_snapshot import FEATURE_PREFIX, METADATA_KEY, STATS_FIELDS
from finpredict.pipelines.common import DatasetSchema, PipelineError, md5_file

REQUIRED = {
    "request_id": pl.String,
    "time": pl.Datetime,
    "defaulted": pl.Boolean,
    "feedback_label": pl.Boolean,
}


def read_stats(path: Path) -> dict[str, Any]:
    """The export's stats from the snapshot's metadata."""
    try:
        meta = pl.read_parquet_metadata(path)
    except FileNotFoundError:
        raise PipelineError(
            f"{path}: production snapshot not found (write it with `finpredict drift export --out {path}`)"
        ) from None
    except Exception as exc:
        raise PipelineError(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})") from None
    if METADATA_KEY not in meta:
        raise PipelineError(f"{path}: not a production snapshot (no {METADATA_KEY!r} metadata)")
    try:
        stats = json.loads(meta[METADATA_KEY])
        missing = [k for k in STATS_FIELDS if k not in stats]
    except (ValueError, TypeError):
        stats, missing = {}, list(STATS_FIELDS)
    if missing:
        raise PipelineError(f"{path}: the {METADATA_KEY!r} metadata lacks {', '.join(missing)}")
    return dict(stats)


def _utc(text: str) -> datetime:
    """An ISO 8601 time (a date, or a time without a zone, is UTC)."""
    t = datetime.fromisoformat(text)
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _same_time(a: str, b: str) -> bool:
    try:
        return _utc(a) == _utc(b)
    except ValueError:
        return False


def check_window(path: Path, stats: dict[str, Any], start: str, end: str) -> None:
    """A :class:`PipelineError` when ``params.yaml`` names a window the snapshot was not exported for."""
    for key, wanted in (("window_start", start), ("window_end", end)):
        if wanted and not _same_time(str(stats[key]), wanted):
            raise PipelineError(
                f"{path}: exported for the window [{stats['window_start']}, {stats['window_end']}), but "
                f"params.yaml data.production.{key} is {wanted}: export that window again"
            )


def _kind_problem(column: str, dtype: pl.DataType, kind: str) -> str | None:
    if kind == "categorical":
        ok = dtype in (pl.String, pl.Null)
        expected = "text (a category)"
    else:
        ok = dtype.is_numeric() or dtype == pl.Null
        expected = "numbers"
    return None if ok else f"{column}: expected {expected}, got {dtype}"


def to_dataset(path: Path, snapshot: pl.DataFrame, schema: DatasetSchema) -> pl.DataFrame:
    """The snapshot as the dataset of ``schema``; a :class:`PipelineError` naming every column that
    is missing or of the wrong kind."""
    problems = [
        f"{name}: missing" if name not in snapshot.columns else f"{name}: expected {dtype}"
        for name, dtype in REQUIRED.items()
        if name not in snapshot.columns or not isinstance(snapshot.schema[name], dtype)
    ]
    prot = FEATURE_PREFIX + schema.protected_attribute
    if prot not in snapshot.columns and not snapshot.height:  # nothing exported: validation says so
        snapshot = snapshot.with_columns(pl.lit(None, pl.String).alias(prot))
    if prot not in snapshot.columns:
        problems.append(
            f"{prot}: missing (the protected attribute, which the fairness gate needs, was not logged "
            "with the predictions: send it in the scoring request's Application.attributes"
            f'["{schema.protected_attribute}"])'
        )
    columns: list[pl.Expr] = []
    for spec in schema.features.features:
        column = FEATURE_PREFIX + spec.name
        if column not in snapshot.columns or snapshot[column].null_count() == snapshot.height:
            if not spec.nullable and snapshot.height:
                problems.append(f"{column}: missing (feature {spec.name} is not nullable)")
            dtype: Any = pl.String if spec.kind == "categorical" else pl.Float64
            columns.append(pl.lit(None, dtype).alias(spec.name))
            continue
        problem = _kind_problem(column, snapshot.schema[column], spec.kind)
        if problem is not None:
            problems.append(problem)
            continue
        expr = pl.col(column)
        if spec.kind == "integer":
            expr = expr.cast(pl.Float64).round(0).cast(pl.Int64)
        elif spec.kind == "numeric":
            expr = expr.cast(pl.Float64)
        columns.append(expr.alias(spec.name))
    if problems:
        raise PipelineError(f"{path}: not a snapshot of this feature schema: " + "; ".join(problems))
    label = pl.coalesce("feedback_label", "defaulted").cast(pl.Int8)
    out = [
        pl.col("request_id").alias(schema.id_column or "request_id"),
        pl.col("time").alias(schema.timestamp),
    ]
    return snapshot.select(
        *out, *columns, pl.col(prot).alias(schema.protected_attribute), label.alias(schema.label)
    )


def ingest(path: Path, schema: DatasetSchema, start: str, end: str) -> tuple[pl.DataFrame, dict[str, Any]]:
    """The dataset of the snapshot at ``path`` and the source record the register stage puts into
    the version's lineage (window, counts, label coverage, the snapshot's md5)."""
    stats = read_stats(path)
    check_window(path, stats, start, end)
    try:
        snapshot = pl.read_parquet(path)
    except Exception as exc:
        raise PipelineError(f"{path}: cannot read ({type(exc).__name__}: {exc})") from None
    if snapshot.height != int(stats["rows"]):
        raise PipelineError(f"{path}: holds {snapshot.height} rows, its metadata says {stats['rows']}")
    dataset = to_dataset(path, snapshot, schema)
    source = {
        "source": "production",
        **{k: stats[k] for k in STATS_FIELDS if k != "model"},
        "snapshot_path": str(path),
        "snapshot_md5": md5_file(path),
    }
    return dataset, source
