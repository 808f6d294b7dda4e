"""The durable prediction and outcome logs: append-only Parquet files, written atomically.

Layout under ``data_dir``::

    predictions/model=<name>/version=<v>/hour=<YYYYMMDDTHH>/<seq>.parquet
    outcomes/<seq>.parquet

Every file is written to a temporary name, fsync'ed, renamed into place and the directory
fsync'ed, so a batch is acknowledged only once it survives a crash (``kill -9`` or power loss),
and a reader never sees a half-written file. Feature columns are prefixed with ``f.``.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import polars as pl

from finpredict.common.fsio import fsync_dir

FEATURE_PREFIX = "f."
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

PREDICTION_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "entity_id": pl.String(),
    "model": pl.String(),
    "version": pl.Int64(),
    "variant": pl.String(),
    "score": pl.Float64(),
    "threshold": pl.Float64(),
    "latency_ms": pl.Float64(),
    "trace_id": pl.String(),
    "time": pl.Datetime("us", "UTC"),
}
OUTCOME_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "entity_id": pl.String(),
    "defaulted": pl.Boolean(),
    "observed_at": pl.Datetime("us", "UTC"),
    "prediction_time": pl.Datetime("us", "UTC"),
}


class StoreReadError(Exception):
    """A stored file cannot be read back; the message names the file."""


def read_parquet(path: Path) -> pl.DataFrame:
    """One stored file; :class:`StoreReadError` naming it when it is not readable Parquet."""
    try:
        return pl.read_parquet(path)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise StoreReadError(f"{path}: not a readable Parquet file ({exc})") from None


def hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H")


class RecordStore:
    """Append-only Parquet logs of one monitor."""

    def __init__(self, data_dir: Path) -> None:
        self.root = data_dir
        self.predictions = data_dir / "predictions"
        self.outcomes = data_dir / "outcomes"
        for d in (self.predictions, self.outcomes):
            d.mkdir(parents=True, exist_ok=True)
        self._seq = 0
        self._lock = threading.Lock()
        for leftover in self.root.rglob("*.parquet.tmp"):  # a crash between write and rename
            leftover.unlink(missing_ok=True)

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%S%f')}-{os.getpid()}-{self._seq:08d}.parquet"

    def _write(self, frame: pl.DataFrame, directory: Path) -> Path:
        new_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / self._name()
        tmp = final.with_name(final.name + ".tmp")
        # Encode in memory, then write: an I/O failure (disk full, a file size limit) surfaces as
        # the OSError it is, and the partial file is removed at once.
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        try:
            with tmp.open("wb") as fh:
                fh.write(buf.getbuffer())
                fh.flush()
                os.fsync(fh.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        tmp.replace(final)
        fsync_dir(directory)
        if new_dir:  # the new partition directories themselves must survive too
            for parent in (directory.parent.parent, directory.parent, directory):
                if parent.is_relative_to(self.root):
                    fsync_dir(parent.parent)
        return final

    def partition_dir(self, model: str, version: int, hour: str) -> Path:
        return self.predictions / f"model={_SAFE.sub('_', model)}" / f"version={version}" / f"hour={hour}"

    def append_predictions(self, model: str, version: int, hour: str, frame: pl.DataFrame) -> Path:
        """Durably appends one partition's records (returns once fsync'ed)."""
        return self._write(frame, self.partition_dir(model, version, hour))

    def append_outcomes(self, frame: pl.DataFrame) -> Path:
        return self._write(frame, self.outcomes)

    def prediction_files(self) -> Iterator[Path]:
        yield from sorted(self.predictions.glob("model=*/version=*/hour=*/*.parquet"))

    def outcome_files(self) -> list[Path]:
        return sorted(self.outcomes.glob("*.parquet"))

    def read_predictions(self) -> pl.DataFrame:
        """Every stored prediction (feature columns as stored, missing ones null)."""
        frames = [read_parquet(p) for p in self.prediction_files()]
        if not frames:
            return pl.DataFrame(schema=PREDICTION_COLUMNS)
        return pl.concat(frames, how="diagonal_relaxed")

    def read_outcomes(self) -> pl.DataFrame:
        frames = [read_parquet(p) for p in self.outcome_files()]
        if not frames:
            return pl.DataFrame(schema=OUTCOME_COLUMNS)
        return pl.concat(frames, how="diagonal_relaxed")
