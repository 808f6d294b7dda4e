"""Analyst feedback on scored decisions: recorded durably, the latest per request is its verdict,
and an override's corrected label is the training label of production snapshots.

Feedback arrives through ``RecordFeedback`` (from the gateway, which stamps the caller's token
subject as the actor and the time). It is checked (:mod:`finpredict.common.feedback`, each refusal
naming its field), then appended to ``<data_dir>/feedback/`` (:class:`~finpredict.monitor.daylog.
DayLog`: fsync'ed before the answer) and counted in ``finpredict_monitor_feedback_total{verdict}``,
whose overridden share is the override rate (alert ``FinpredictOverrideRateHigh``). A request's
latest feedback is its verdict; an exact repeat of it (same verdict, label, reason and actor: a
retried call) is a duplicate, neither stored nor counted again. Feedback is kept for the monitor's
retention, like the prediction log it refers to.

:func:`override_labels` gives the export (:mod:`~finpredict.monitor.export`) the corrected label
of every request whose latest feedback by ``as_of`` is an override with one.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

from finpredict.api.common.v1 import types_pb2
from finpredict.common.feedback import VERDICTS, recorded_time
from finpredict.monitor import metrics as m
from finpredict.monitor.daylog import DayLog
from finpredict.monitor.records import FULL_ERRNOS, StorageError

FEEDBACK_DIR = "feedback"
FEEDBACK_COLUMNS: dict[str, pl.DataType] = {
    "request_id": pl.String(),
    "verdict": pl.String(),  # confirmed | disputed | overridden
    "corrected_label": pl.Boolean(),  # true: defaulted; only with overridden
    "reason": pl.String(),
    "actor": pl.String(),
    "recorded_at": pl.Datetime("us", "UTC"),
}


@dataclass(frozen=True)
class FeedbackCounts:
    """What became of a batch: recorded, ignored as repeats, and recorded for unknown requests."""

    recorded: int = 0
    duplicates: int = 0
    unknown: int = 0


def _fingerprint(verdict: str, label: bool | None, reason: str, actor: str) -> bytes:
    text = "\x00".join((verdict, "" if label is None else str(label), reason, actor))
    return hashlib.blake2b(text.encode(), digest_size=16).digest()


def feedback_log(data_dir: Path, writer: bool = True) -> DayLog:
    """The feedback log of the monitor whose data dir is ``data_dir``."""
    return DayLog(data_dir / FEEDBACK_DIR, FEEDBACK_COLUMNS, writer)


class FeedbackStore:
    """The feedback log and the latest feedback of each request (for idempotency)."""

    def __init__(self, data_dir: Path) -> None:
        self.log = feedback_log(data_dir)
        self._latest: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        latest = self._read_latest()
        with self._lock:
            self._latest = latest

    def _read_latest(self) -> dict[str, bytes]:
        """Each request's latest feedback fingerprint, from the log."""
        frame = self.log.read()
        latest = {
            row["request_id"]: _fingerprint(
                row["verdict"], row["corrected_label"], row["reason"], row["actor"]
            )
            for row in frame.iter_rows(named=True)
        }
        return latest

    def record(
        self, items: Sequence[types_pb2.Feedback], known: Sequence[bool], now: datetime
    ) -> FeedbackCounts:
        """Durably appends the feedback (checked by the caller) that is not a repeat of its
        request's latest; ``known``: whether the monitor has logged each one's request.
        :class:`StorageError` when the log cannot be written (nothing of the batch is kept)."""
        rows: list[dict[str, object]] = []
        prints: dict[str, bytes] = {}
        duplicates = unknown = 0
        with self._lock:
            for fb, is_known in zip(items, known, strict=True):
                verdict = VERDICTS[fb.verdict]
                label = fb.corrected_label if fb.HasField("corrected_label") else None
                fp = _fingerprint(verdict, label, fb.reason, fb.actor)
                if prints.get(fb.request_id, self._latest.get(fb.request_id)) == fp:
                    duplicates += 1
                    continue
                prints[fb.request_id] = fp
                unknown += not is_known
                rows.append(
                    {
                        "request_id": fb.request_id,
                        "verdict": verdict,
                        "corrected_label": label,
                        "reason": fb.reason,
                        "actor": fb.actor,
                        "recorded_at": recorded_time(fb, now),
                    }
                )
            if rows:
                frame = pl.DataFrame(rows, schema=FEEDBACK_COLUMNS)
                try:
                    self.log.append(frame, "recorded_at")
                except OSError as exc:
                    m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
                    raise StorageError(f"{len(rows)} feedback records", exc) from exc
                self._latest.update(prints)
        for row in rows:
            m.FEEDBACK.labels(str(row["verdict"])).inc()
        m.FEEDBACK_DUPLICATE.inc(duplicates)
        return FeedbackCounts(len(rows), duplicates, unknown)

    def prune(self, horizon: datetime | None) -> None:
        """Drops the days of feedback older than the retention ``horizon`` (and forgets them)."""
        if horizon is None:
            return
        # one step under the lock: a record() between the removal and the reload would compare
        # against fingerprints of feedback that is gone
        with self._lock:
            if self.log.prune(horizon):
                self._latest = self._read_latest()


def override_labels(log: DayLog, since: datetime, as_of: datetime) -> pl.DataFrame:
    """``request_id``, ``corrected_label``: the requests whose latest feedback recorded from the
    day of ``since`` to ``as_of`` is an override with a corrected label."""
    frame = log.read(since=since, until=as_of).filter(pl.col("recorded_at") <= as_of)
    latest = frame.unique("request_id", keep="last", maintain_order=True)
    return latest.filter(
        (pl.col("verdict") == "overridden") & pl.col("corrected_label").is_not_null()
    ).select("request_id", "corrected_label")
