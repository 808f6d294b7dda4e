"""The compacted snapshot of the window state, so that a restart does not re-read the logs.

A snapshot holds every version's hourly cells (drift window, count, approvals, labels), the
request-id index, the outcomes waiting for their prediction and the stamps of the newest
prediction and outcome files it covers. A restart loads it and folds only the files written
after those stamps (:meth:`~finpredict.monitor.store.RecordStore.files_after`): its time depends on
the retained state, not on the history. Layout under ``data_dir``::

    snapshot/CURRENT              the name of the complete generation (written last, atomically)
    snapshot/<generation>/        meta.json, cells.parquet, labels.parquet, index.parquet,
                                  waiting.parquet

A generation is written in full (every file fsync'ed) before ``CURRENT`` names it, then the older
ones are removed; a crash leaves the previous snapshot in force.
"""

from __future__ import annotations

import io
import json
import logging
import shutil
import uuid
from array import array
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import polars as pl

import drift_core
from finpredict.common.fsio import fsync_dir, write_atomic
from finpredict.monitor.labels import LabelIndex
from finpredict.monitor.windows import HourCell, VersionKey, VersionState, Windows

log = logging.getLogger("finpredict.monitor")
FORMAT = 1
_TS = pl.Datetime("us", "UTC")


@dataclass
class Snapshot:
    """A loaded snapshot: the stamps it covers and its tables."""

    predictions_stamp: str
    outcomes_stamp: str
    versions: list[dict[str, object]]
    cells: pl.DataFrame
    labels: pl.DataFrame
    index: pl.DataFrame
    waiting: pl.DataFrame


def _cells_frame(versions: dict[VersionKey, VersionState]) -> tuple[pl.DataFrame, pl.DataFrame]:
    cells: dict[str, list[object]] = {
        k: [] for k in ("model", "version", "hour", "count", "window", "approved")
    }
    labels: dict[str, list[object]] = {k: [] for k in ("model", "version", "hour", "n")}
    columns: dict[str, list[np.ndarray]] = {"score": [], "threshold": [], "delay_h": [], "defaulted": []}
    for (model, version), state in versions.items():
        for hour, cell in state.hours.items():
            cells["model"].append(model)
            cells["version"].append(version)
            cells["hour"].append(hour)
            cells["count"].append(cell.count)
            cells["window"].append(bytes(cell.window.to_bytes()) if cell.window is not None else None)
            cells["approved"].append(json.dumps(cell.approved))
            if len(cell.labels):
                labels["model"].append(model)
                labels["version"].append(version)
                labels["hour"].append(hour)
                labels["n"].append(len(cell.labels))
                columns["score"].append(np.frombuffer(cell.labels.scores, dtype=np.float64))
                columns["threshold"].append(np.frombuffer(cell.labels.thresholds, dtype=np.float64))
                columns["delay_h"].append(np.frombuffer(cell.labels.delays_h, dtype=np.float64))
                columns["defaulted"].append(np.frombuffer(cell.labels.defaulted, dtype=np.uint8))
    cells_df = pl.DataFrame(
        cells,
        schema={
            "model": pl.String,
            "version": pl.Int64,
            "hour": _TS,
            "count": pl.Int64,
            "window": pl.Binary,
            "approved": pl.String,
        },
    )
    sizes = labels.pop("n")
    keys = pl.DataFrame(labels, schema={"model": pl.String, "version": pl.Int64, "hour": _TS})
    keys = keys.select(pl.all().gather(pl.Series(np.repeat(np.arange(len(sizes), dtype=np.int64), sizes))))  # type: ignore[arg-type]
    empty = {"score": np.float64, "threshold": np.float64, "delay_h": np.float64, "defaulted": np.uint8}
    labels_df = keys.with_columns(
        **{
            name: pl.Series(np.concatenate(parts) if parts else np.empty(0, dtype=empty[name]))
            for name, parts in columns.items()
        }
    )
    return cells_df, labels_df


def write_snapshot(
    data_dir: Path, predictions_stamp: str, outcomes_stamp: str, windows: Windows, index: LabelIndex
) -> Path:
    """Durably writes a new generation and makes it the current one; returns its directory."""
    root = data_dir / "snapshot"
    root.mkdir(parents=True, exist_ok=True)
    gen = root / f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    gen.mkdir()
    cells, labels = _cells_frame(windows.versions)
    tables = {
        "cells": cells,
        "labels": labels,
        "index": index.predictions_frame(),
        "waiting": index.waiting_frame(),
    }
    for name, frame in tables.items():
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd")
        write_atomic(gen / f"{name}.parquet", buf.getvalue())
    meta = {
        "format": FORMAT,
        "predictions_stamp": predictions_stamp,
        "outcomes_stamp": outcomes_stamp,
        "versions": [
            {
                "model": k[0],
                "version": k[1],
                "max_event": s.max_event.isoformat() if s.max_event else None,
            }
            for k, s in windows.versions.items()
        ],
    }
    write_atomic(gen / "meta.json", json.dumps(meta).encode())
    fsync_dir(root)
    write_atomic(root / "CURRENT", gen.name.encode())
    for old in root.iterdir():  # older generations, and what a crash left half-written
        if old.is_dir() and old != gen:
            shutil.rmtree(old, ignore_errors=True)
        elif old.is_file() and old.name != "CURRENT":
            old.unlink(missing_ok=True)
    return gen


def load_snapshot(data_dir: Path) -> Snapshot | None:
    """The current snapshot, or None (none yet, or unreadable: the logs are read instead)."""
    root = data_dir / "snapshot"
    try:
        gen = root / (root / "CURRENT").read_text().strip()
        meta = json.loads((gen / "meta.json").read_text())
        if meta.get("format") != FORMAT:
            raise ValueError(f"format {meta.get('format')!r}, expected {FORMAT}")
        tables = {n: pl.read_parquet(gen / f"{n}.parquet") for n in ("cells", "labels", "index", "waiting")}
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
        log.warning("snapshot unreadable: rebuilding from the logs", extra={"error": str(exc)})
        return None
    return Snapshot(
        meta["predictions_stamp"],
        meta["outcomes_stamp"],
        meta["versions"],
        tables["cells"],
        tables["labels"],
        tables["index"],
        tables["waiting"],
    )


def restore(snap: Snapshot, windows: Windows, index: LabelIndex) -> None:
    """Rebuilds the cells, the index and the waiting outcomes of a snapshot."""
    for v in snap.versions:
        state = windows.version((str(v["model"]), int(str(v["version"]))))
        if v["max_event"]:
            state.max_event = datetime.fromisoformat(str(v["max_event"]))
    for model, version, hour, count, blob, approved in snap.cells.iter_rows():
        state = windows.version((model, version))
        window = None
        if blob is not None and state.profile is not None:
            window = state.profile.window()
            window.merge(drift_core.Window.from_bytes(blob))  # shares the version's profile
        state.hours[hour] = HourCell(window, count, approved=json.loads(approved))
        if state.evaluated_until is None or hour < state.evaluated_until:
            state.evaluated_until = hour
    for (model, version, hour), part in snap.labels.partition_by(
        ["model", "version", "hour"], as_dict=True, maintain_order=True
    ).items():
        assert isinstance(hour, datetime)
        labels = windows.versions[(str(model), int(str(version)))].hours[hour].labels
        labels.scores.frombytes(part["score"].to_numpy().tobytes())
        labels.thresholds.frombytes(part["threshold"].to_numpy().tobytes())
        labels.delays_h.frombytes(part["delay_h"].to_numpy().tobytes())
        labels.defaulted.extend(array("B", part["defaulted"].to_numpy().astype(np.uint8).tobytes()))
    index.load_predictions(snap.index)
    index.load_waiting(snap.waiting)
