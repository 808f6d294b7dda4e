"""Training data from production: the logged predictions of a time window joined with their
outcomes, as one Parquet snapshot the training pipeline's ``production`` source reads.

A prediction of the window ``[start, end)`` (event time) is *matured* when its outcome window has
passed by ``as_of``: ``time + maturity <= as_of``. Only matured predictions count: those with an
outcome observed by ``as_of`` are exported (their label is the outcome's ``defaulted``); matured
ones without an outcome are excluded as *unlabelled*, and every prediction not matured yet is
excluded as *unmatured* (even when an early outcome arrived: keeping only early defaults would
bias the labels). An outcome observed after ``as_of`` does not count, so the same window and
``as_of`` give the same rows however late the export runs. The first outcome of a request wins,
as in the monitor's label matching (:mod:`finpredict.monitor.labels`).

The snapshot's columns and metadata are the contract with ``finpredict.pipelines.production``
(:mod:`finpredict.common.production_snapshot`).

``feedback_label`` is an analyst's corrected label: that of the request's latest feedback recorded
by ``as_of`` when it is an override with one (:func:`~finpredict.monitor.feedback.override_labels`),
else null; ``label_overridden`` flags those rows. A corrected label makes a matured prediction
labelled even without an outcome, and the training label is the corrected one where there is one
(the pipeline's ``production`` source). The window, ``as_of``, the maturity and the counts
(``ExportStats``) are the Parquet file's key-value metadata, as JSON.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.common.fsio import write_atomic
from finpredict.common.production_snapshot import METADATA_KEY, SNAPSHOT_COLUMNS, ExportStats
from finpredict.monitor.feedback import feedback_log, override_labels
from finpredict.monitor.store import (
    FEATURE_PREFIX,
    OUTCOME_COLUMNS,
    PREDICTION_COLUMNS,
    RecordStore,
    live_files,
    read_files,
    stamp_of,
)

_HOUR = timedelta(hours=1)


def _predictions(store: RecordStore, start: datetime, end: datetime, model: str) -> pl.DataFrame:
    hours = [d for d, hour in store.hour_dirs(model or None) if start - _HOUR < hour < end]
    frame = read_files(sorted((f for d in hours for f in live_files(d)), key=stamp_of))
    if frame is None:
        return pl.DataFrame(schema=PREDICTION_COLUMNS)
    frame = frame.filter((pl.col("time") >= start) & (pl.col("time") < end))
    return frame.unique("request_id", keep="first", maintain_order=True)


def _outcomes(store: RecordStore, since: datetime, as_of: datetime) -> pl.DataFrame:
    """The outcomes observed from the day of ``since`` to ``as_of``, in arrival order."""
    frame = read_files(store.outcome_files(since.replace(hour=0, minute=0, second=0, microsecond=0)))
    if frame is None:
        return pl.DataFrame(schema=OUTCOME_COLUMNS)
    return frame.filter(pl.col("observed_at") <= as_of)


def export_window(
    store: RecordStore,
    start: datetime,
    end: datetime,
    as_of: datetime,
    maturity: timedelta,
    model: str = "",
) -> tuple[pl.DataFrame, ExportStats]:
    """The snapshot rows of ``[start, end)`` (of ``model``, or every model) as of ``as_of``, and
    what was taken and left out."""
    preds = _predictions(store, start, end, model)
    outcomes = _outcomes(store, start, as_of)
    by_request = (
        outcomes.filter(pl.col("request_id") != "")
        .unique("request_id", keep="first", maintain_order=True)
        .select("request_id", pl.col("defaulted").alias("_d_rid"), pl.col("observed_at").alias("_o_rid"))
    )
    by_entity = (
        outcomes.filter((pl.col("request_id") == "") & pl.col("prediction_time").is_not_null())
        .unique(["entity_id", "prediction_time"], keep="first", maintain_order=True)
        .select(
            "entity_id",
            pl.col("prediction_time").alias("time"),
            pl.col("defaulted").alias("_d_ent"),
            pl.col("observed_at").alias("_o_ent"),
        )
    )
    overrides = override_labels(feedback_log(store.root, writer=False), start, as_of).rename(
        {"corrected_label": "feedback_label"}
    )
    joined = (
        preds.join(by_request, on="request_id", how="left")
        .join(by_entity, on=["entity_id", "time"], how="left")
        .join(overrides, on="request_id", how="left")
    )
    joined = joined.with_columns(
        pl.coalesce("_d_rid", "_d_ent").alias("defaulted"),
        pl.coalesce("_o_rid", "_o_ent").alias("observed_at"),
        pl.col("feedback_label").is_not_null().alias("label_overridden"),
    ).drop("_d_rid", "_d_ent", "_o_rid", "_o_ent")
    matured = joined.filter(pl.col("time") + maturity <= as_of)
    labelled = matured.filter(pl.col("defaulted").is_not_null() | pl.col("feedback_label").is_not_null())
    features = sorted(c for c in labelled.columns if c.startswith(FEATURE_PREFIX))
    rows = labelled.select(*SNAPSHOT_COLUMNS, *features).sort("time", "request_id")
    coverage = rows.height / matured.height if matured.height else 0.0
    stats = ExportStats(
        window_start=start.isoformat(),
        window_end=end.isoformat(),
        as_of=as_of.isoformat(),
        maturity_days=maturity / timedelta(days=1),
        model=model,
        rows=rows.height,
        excluded_unmatured=joined.height - matured.height,
        excluded_unlabelled=matured.height - rows.height,
        label_coverage=round(coverage, 6),
        feedback_labels=rows.filter(pl.col("feedback_label").is_not_null()).height,
    )
    return rows, stats


def write_snapshot(path: Path, rows: pl.DataFrame, stats: ExportStats) -> None:
    """Writes the snapshot atomically (a reader sees the old file or the new one, never a part),
    the stats in its metadata."""
    buf = io.BytesIO()
    rows.write_parquet(
        buf, compression="zstd", statistics=True, metadata={METADATA_KEY: json.dumps(stats.to_json())}
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, buf.getvalue())
