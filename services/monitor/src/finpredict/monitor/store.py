"""The durable prediction and outcome logs: append-only Parquet files, written atomically.

Layout under ``data_dir``::

    predictions/model=<name>/version=<v>/hour=<YYYYMMDDTHH>/<stamp>-<pid>-<seq>.parquet
    outcomes/day=<YYYYMMDD>/<stamp>-<pid>-<seq>.parquet      (the day the outcome was observed)

Every file is written to a temporary name, fsync'ed, renamed into place and the directory
fsync'ed, so a batch is acknowledged only once it survives a crash (``kill -9`` or power loss),
and a reader never sees a half-written file. Feature columns are prefixed with ``f.``.

A file's *stamp* (``YYYYMMDDTHHMMSSffffff``, the wall clock when written) is strictly increasing
within a store and never below the floor it is given at start-up, so "every file written after a
snapshot" is the files whose stamp is above the snapshot's (:meth:`RecordStore.files_after`).

An hour's files are compacted into one (:meth:`RecordStore.compact`): ``<stamp>.compact.parquet``
holds every file of its directory up to its stamp (the newest of them), and supersedes them: a
reader ignores them (:func:`live_files`) even when a crash left them behind, and the next
compaction removes them. Whole hours (and outcome days) older than the retention period are
deleted (:meth:`RecordStore.prune`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.common.fsio import fsync_dir
from finpredict.common.production_snapshot import FEATURE_PREFIX as SNAPSHOT_FEATURE_PREFIX

FEATURE_PREFIX = SNAPSHOT_FEATURE_PREFIX  # feature columns of the logs (and of production snapshots)
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")
STAMP_FORMAT = "%Y%m%dT%H%M%S%f"
STAMP_LEN = 21  # YYYYMMDDTHHMMSSffffff
COMPACT_SUFFIX = ".compact.parquet"

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
    "reason_codes": pl.String(),  # JSON (see records.reason_codes_json); absent in older files
    # the rollout / experiment whose arm (variant) served the prediction; absent in older files
    "rollout_id": pl.String(),
    "experiment_id": pl.String(),
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


def read_files(paths: list[Path]) -> pl.DataFrame | None:
    """Stored files as one frame (columns unioned), or None when there are none."""
    frames = [read_parquet(p) for p in paths]
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def hour_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%dT%H")


def day_key(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y%m%d")


def stamp_of(path: Path) -> str:
    """The stamp a stored file was named with."""
    return path.name[:STAMP_LEN]


def _is_compact(path: Path) -> bool:
    return path.name.endswith(COMPACT_SUFFIX)


def live_files(directory: Path) -> list[Path]:
    """The files of one partition directory a reader must read, in stamp order: the newest compacted
    file and the files written after it (what it superseded is skipped)."""
    try:
        names = sorted(
            (p for p in directory.iterdir() if p.name.endswith(".parquet")),
            key=lambda p: (stamp_of(p), p.name),
        )
    except FileNotFoundError:
        return []
    compacted = [p for p in names if _is_compact(p)]
    if not compacted:
        return names
    newest = compacted[-1]
    bound = stamp_of(newest)
    return [newest, *(p for p in names if stamp_of(p) > bound)]


def _partition_time(name: str, prefix: str, fmt: str) -> datetime | None:
    try:
        return datetime.strptime(name.removeprefix(prefix), fmt).replace(tzinfo=UTC)
    except ValueError:
        return None


class RecordStore:
    """Append-only Parquet logs of one monitor."""

    def __init__(self, data_dir: Path, floor: str = "", writer: bool = True) -> None:
        """The logs under ``data_dir``; a reader (``writer=False``, e.g. a command line beside a
        running monitor) neither creates folders nor removes what a crashed writer left."""
        self.root = data_dir
        self.predictions = data_dir / "predictions"
        self.outcomes = data_dir / "outcomes"
        self._seq = 0
        self._last = floor  # the highest stamp written (or known to exist): the next is above it
        self.outcomes_stamp = ""  # the highest stamp of an outcome file written (or known to exist)
        self._lock = threading.Lock()
        if not writer:
            return
        for d in (self.predictions, self.outcomes):
            d.mkdir(parents=True, exist_ok=True)
        for leftover in self.root.rglob("*.parquet.tmp"):  # a crash between write and rename
            leftover.unlink(missing_ok=True)

    @property
    def last_stamp(self) -> str:
        return self._last

    def raise_floor(self, stamp: str) -> None:
        """Files named from now on sort after ``stamp`` (a file found on disk, or a snapshot's)."""
        with self._lock:
            self._last = max(self._last, stamp)

    def _name(self) -> str:
        with self._lock:
            self._seq += 1
            stamp = datetime.now(UTC).strftime(STAMP_FORMAT)
            if stamp <= self._last:  # the wall clock stepped back, or two writes in one microsecond
                last = datetime.strptime(self._last, STAMP_FORMAT).replace(tzinfo=UTC)
                stamp = (last + timedelta(microseconds=1)).strftime(STAMP_FORMAT)
            self._last = stamp
            return f"{stamp}-{os.getpid()}-{self._seq:08d}.parquet"

    def _write(self, frame: pl.DataFrame, directory: Path, name: str | None = None) -> Path:
        new_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        final = directory / (name or self._name())
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

    # ------------------------------------------------------------------ writing

    def partition_dir(self, model: str, version: int, hour: str) -> Path:
        return self.predictions / f"model={_SAFE.sub('_', model)}" / f"version={version}" / f"hour={hour}"

    def append_predictions(self, model: str, version: int, hour: str, frame: pl.DataFrame) -> Path:
        """Durably appends one partition's records (returns once fsync'ed)."""
        return self._write(frame, self.partition_dir(model, version, hour))

    def append_outcomes(self, frame: pl.DataFrame, day: str) -> Path:
        """Durably appends outcomes observed on ``day`` (``YYYYMMDD``)."""
        path = self._write(frame, self.outcomes / f"day={day}")
        self.outcomes_stamp = max(self.outcomes_stamp, stamp_of(path))
        return path

    # ------------------------------------------------------------------ reading

    def hour_dirs(
        self, model: str | None = None, version: int | None = None
    ) -> Iterator[tuple[Path, datetime]]:
        """Every prediction partition directory (of one version when given) and its hour."""
        model_glob = f"model={_SAFE.sub('_', model)}" if model is not None else "model=*"
        version_glob = f"version={version}" if version is not None else "version=*"
        for d in sorted(self.predictions.glob(f"{model_glob}/{version_glob}/hour=*")):
            hour = _partition_time(d.name, "hour=", "%Y%m%dT%H")
            if hour is not None:
                yield d, hour

    def day_dirs(self) -> Iterator[tuple[Path, datetime]]:
        for d in sorted(self.outcomes.glob("day=*")):
            day = _partition_time(d.name, "day=", "%Y%m%d")
            if day is not None:
                yield d, day

    def prediction_files(self, since: datetime | None = None, until: datetime | None = None) -> list[Path]:
        """The live prediction files (of hours from ``since`` to ``until``), in stamp order."""
        files = [
            f
            for d, h in self.hour_dirs()
            if (since is None or h >= since) and (until is None or h <= until)
            for f in live_files(d)
        ]
        return sorted(files, key=stamp_of)

    def outcome_files(self, since: datetime | None = None) -> list[Path]:
        """The outcome files (of days from ``since`` on), in stamp order; files of the flat layout of
        earlier releases (``outcomes/<stamp>.parquet``) too."""
        files = [f for d, day in self.day_dirs() if since is None or day >= since for f in live_files(d)]
        files += [f for f in self.outcomes.glob("*.parquet") if f.is_file()]
        return sorted(files, key=stamp_of)

    @staticmethod
    def files_after(files: list[Path], stamp: str) -> list[Path]:
        """The files written after the one stamped ``stamp`` (all of them when it is empty)."""
        return [f for f in files if stamp_of(f) > stamp]

    def read_predictions(self) -> pl.DataFrame:
        """Every stored prediction (feature columns as stored, missing ones null)."""
        frame = read_files(self.prediction_files())
        return frame if frame is not None else pl.DataFrame(schema=PREDICTION_COLUMNS)

    def read_outcomes(self) -> pl.DataFrame:
        frame = read_files(self.outcome_files())
        return frame if frame is not None else pl.DataFrame(schema=OUTCOME_COLUMNS)

    # ------------------------------------------------------------------ compaction and retention

    def compact(self, directory: Path) -> bool:
        """Rewrites the live files of one partition as one ``<stamp>.compact.parquet`` (the newest
        stamp among them), then removes what it superseded. Returns whether it wrote a file."""
        files = live_files(directory)
        if len(files) > 1:
            frame = read_files(files)
            assert frame is not None
            self._write(frame, directory, stamp_of(files[-1]) + COMPACT_SUFFIX)
        kept = set(live_files(directory))
        removed = False
        for f in directory.glob("*.parquet"):
            if f not in kept:
                f.unlink(missing_ok=True)
                removed = True
        if removed:
            fsync_dir(directory)
        return len(files) > 1

    def prune(self, horizon: datetime) -> int:
        """Deletes the prediction hours and outcome days that ended before ``horizon``; returns how
        many directories went."""
        gone = 0
        for d, hour in list(self.hour_dirs()):
            if hour + timedelta(hours=1) <= horizon:
                shutil.rmtree(d, ignore_errors=True)
                gone += 1
        for d, day in list(self.day_dirs()):
            if day + timedelta(days=1) <= horizon:
                shutil.rmtree(d, ignore_errors=True)
                gone += 1
        if gone:
            fsync_dir(self.outcomes)
            for version_dir in self.predictions.glob("model=*/version=*"):
                fsync_dir(version_dir)
        return gone
