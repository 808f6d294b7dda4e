"""Small append-only logs of the monitor beside its prediction and outcome logs: analyst feedback
(:mod:`~finpredict.monitor.feedback`) and the review queue's stored cases
(:mod:`~finpredict.monitor.review`).

Layout under the log's folder: ``day=<YYYYMMDD>/<stamp>-<pid>-<seq>.parquet`` (the day of the
rows' time). A batch is acknowledged only once durable, like the outcome log: each file is written
to a temporary name, fsync'ed, renamed into place and its directory fsync'ed (a new day directory's
parent too), so a crash leaves the whole file or none of it. Whole days older than the monitor's
retention go (:meth:`DayLog.prune`).
"""

from __future__ import annotations

import io
import os
import shutil
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.common.fsio import fsync_dir, write_atomic
from finpredict.monitor.store import STAMP_FORMAT, day_key, read_files

_DAY = timedelta(days=1)


class DayLog:
    """Durable daily Parquet files of one kind of record with a fixed ``schema``."""

    def __init__(self, root: Path, schema: dict[str, pl.DataType], writer: bool = True) -> None:
        """The log under ``root``; a reader (``writer=False``, e.g. a command line beside a running
        monitor) neither creates folders nor removes what a crashed writer left."""
        self.root = root
        self.schema = schema
        self._seq = 0
        self._last = ""
        self._lock = threading.Lock()
        if writer:
            root.mkdir(parents=True, exist_ok=True)
            for leftover in root.rglob("*.tmp"):  # a crash between write and rename
                leftover.unlink(missing_ok=True)

    def _name(self) -> str:
        self._seq += 1
        self._last = max(datetime.now(UTC).strftime(STAMP_FORMAT), self._last)
        return f"{self._last}-{os.getpid()}-{self._seq:08d}.parquet"

    def append(self, frame: pl.DataFrame, time_column: str) -> None:
        """Durably appends ``frame``, one file per day of its ``time_column``; returns once every
        file is on disk (an ``OSError`` when one is not: the caller acknowledges nothing)."""
        with self._lock:
            days = frame.with_columns(pl.col(time_column).dt.truncate("1d").alias("_day")).partition_by(
                "_day", as_dict=True, maintain_order=True
            )
            for (day,), part in days.items():
                assert isinstance(day, datetime)
                self._append_day(part.select(*self.schema), day)

    def _append_day(self, frame: pl.DataFrame, day: datetime) -> None:
        directory = self.root / f"day={day_key(day)}"
        new_dir = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if new_dir:
            fsync_dir(self.root)
        buf = io.BytesIO()
        frame.write_parquet(buf, compression="zstd", statistics=True)
        write_atomic(directory / self._name(), buf.getvalue())

    def _days(self) -> list[tuple[Path, datetime]]:
        out = []
        for d in sorted(self.root.glob("day=*")):
            try:
                out.append((d, datetime.strptime(d.name.removeprefix("day="), "%Y%m%d").replace(tzinfo=UTC)))
            except ValueError:
                continue
        return out

    def files(self, since: datetime | None = None, until: datetime | None = None) -> list[Path]:
        """The files of the days from ``since`` to ``until`` (both included when given), oldest
        first (by name: the stamp, then the writer's sequence)."""
        files = [
            f
            for d, day in self._days()
            if (since is None or day + _DAY > since) and (until is None or day <= until)
            for f in d.glob("*.parquet")
        ]
        return sorted(files, key=lambda p: p.name)

    def read(self, since: datetime | None = None, until: datetime | None = None) -> pl.DataFrame:
        """The rows of those days in the order they were appended."""
        frame = read_files(self.files(since, until))
        if frame is None:
            return pl.DataFrame(schema=self.schema)
        return frame.select(pl.col(c).cast(t) for c, t in self.schema.items())

    def prune(self, horizon: datetime) -> int:
        """Deletes the days that ended before ``horizon``; returns how many went."""
        gone = 0
        with self._lock:
            for d, day in self._days():
                if day + _DAY <= horizon:
                    shutil.rmtree(d, ignore_errors=True)
                    gone += 1
            if gone:
                fsync_dir(self.root)
        return gone
