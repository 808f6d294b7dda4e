"""The review queue: the edge cases an analyst should look at.

Three kinds of case:

* ``refused``: the gateway's validation refused the request (``INVALID_ARGUMENT`` naming the
  field). The gateway sends it down the prediction log, off the request path, as a record with
  ``review = REVIEW_KIND_REFUSED``; it was never scored, so :meth:`ReviewQueue.take` keeps it out
  of the predictions and stores it here only.
* ``canary_fallback``: the request was routed to the canary, which failed, and stable answered.
  Its record (``review = REVIEW_KIND_CANARY_FALLBACK``) is an ordinary prediction too.
* ``review_band``: a served score at most ``FINPREDICT_MONITOR_REVIEW_BAND`` from its decision
  threshold (a decision a hair's breadth either way). Nothing is stored for these: listing finds
  them in the prediction log of the range asked for, so a changed band applies to the past too.

Stored cases live in ``<data_dir>/review/`` (:class:`~finpredict.monitor.daylog.DayLog`, durable
before the batch is acknowledged, kept for the retention period) and are counted in
``finpredict_monitor_review_cases_total{kind}``. ``ListReviewCases`` (``finpredict review list``
and ``export``) gives the cases of a time range, newest first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import polars as pl

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.monitor import metrics as m
from finpredict.monitor.daylog import DayLog
from finpredict.monitor.records import (
    FULL_ERRNOS,
    MAX_EVENT_TIME,
    InvalidInputError,
    StorageError,
    model_name_problem,
)
from finpredict.monitor.store import RecordStore, live_files

REVIEW_DIR = "review"
KINDS: dict[pb.ReviewKind.ValueType, str] = {
    pb.REVIEW_KIND_REFUSED: "refused",
    pb.REVIEW_KIND_CANARY_FALLBACK: "canary_fallback",
    pb.REVIEW_KIND_REVIEW_BAND: "review_band",
}
KIND_VALUES = {name: value for value, name in KINDS.items()}
STORED_KINDS = (pb.REVIEW_KIND_REFUSED, pb.REVIEW_KIND_CANARY_FALLBACK)
REVIEW_COLUMNS: dict[str, pl.DataType] = {
    "kind": pl.String(),
    "request_id": pl.String(),
    "entity_id": pl.String(),
    "model": pl.String(),
    "version": pl.Int64(),
    "variant": pl.String(),
    "score": pl.Float64(),  # null for refused requests
    "threshold": pl.Float64(),
    "time": pl.Datetime("us", "UTC"),
    "detail": pl.String(),
}
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_RANGE = timedelta(days=31)
MAX_TEXT = 2000
_HOUR = timedelta(hours=1)
_MAX_S = int(MAX_EVENT_TIME.timestamp())


@dataclass(frozen=True)
class ReviewQuery:
    """A listing: the cases of ``[start, end)`` (of ``model`` when given) of ``kinds``."""

    start: datetime
    end: datetime
    kinds: frozenset[str]
    model: str = ""
    limit: int = DEFAULT_LIMIT


def check_query(
    model: str, start: datetime, end: datetime, kinds: Sequence[pb.ReviewKind.ValueType], limit: int
) -> ReviewQuery:
    """The query, its limit defaulted; :class:`InvalidInputError` naming the field otherwise."""
    if model and (problem := model_name_problem("model", model)) is not None:
        raise InvalidInputError(problem)
    if not start < end <= start + MAX_RANGE:
        raise InvalidInputError(f"end: must be after start, at most {MAX_RANGE.days} days later")
    for i, kind in enumerate(kinds):
        if kind not in KINDS:
            raise InvalidInputError(f"kinds[{i}]: one of {', '.join(KINDS.values())} (got {kind})")
    if not 0 <= limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit: must be in [0, {MAX_LIMIT}]")
    names = frozenset(KINDS[k] for k in kinds) or frozenset(KINDS.values())
    return ReviewQuery(start, end, names, model, limit or DEFAULT_LIMIT)


def _time(record: pb.PredictionRecord, now: datetime) -> datetime:
    ts = record.time
    if 0 < ts.seconds < _MAX_S and 0 <= ts.nanos < 1_000_000_000:
        return datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, UTC)
    return now


def _case_row(record: pb.PredictionRecord, now: datetime) -> dict[str, object]:
    refused = record.review == pb.REVIEW_KIND_REFUSED
    return {
        "kind": KINDS[record.review],
        "request_id": record.request_id[:256],
        "entity_id": record.entity_id[:256],
        "model": record.model.name[:256],
        "version": record.model.version,
        "variant": record.variant[:256],
        "score": None if refused else record.score,
        "threshold": None if refused else record.threshold,
        "time": _time(record, now),
        "detail": record.review_detail[:MAX_TEXT],
    }


def review_log(data_dir: Path, writer: bool = True) -> DayLog:
    """The stored review cases of the monitor whose data dir is ``data_dir``."""
    return DayLog(data_dir / REVIEW_DIR, REVIEW_COLUMNS, writer)


class ReviewQueue:
    """The stored cases and the review band."""

    def __init__(self, data_dir: Path, band: float) -> None:
        self.log = review_log(data_dir)
        self.band = band

    @staticmethod
    def split(
        records: Sequence[pb.PredictionRecord],
    ) -> tuple[Sequence[pb.PredictionRecord], list[pb.PredictionRecord]]:
        """The records that are predictions (``records`` itself when none is refused) and the
        edge cases among them (refused requests and canary fallbacks)."""
        cases = [r for r in records if r.review in STORED_KINDS]
        if not cases:
            return records, []
        return [r for r in records if r.review != pb.REVIEW_KIND_REFUSED], cases

    def store(self, cases: Sequence[pb.PredictionRecord], now: datetime) -> None:
        """Durably appends the cases (one file per day of their time); :class:`StorageError` when
        they cannot be written (the batch is not acknowledged: the gateway sends it again)."""
        rows = [_case_row(r, now) for r in cases]
        try:
            self.log.append(pl.DataFrame(rows, schema=REVIEW_COLUMNS), "time")
        except OSError as exc:
            m.STORE_WRITE_FAILURES.labels("full" if exc.errno in FULL_ERRNOS else "io").inc()
            raise StorageError(f"{len(rows)} review cases", exc) from exc
        for row in rows:
            m.REVIEW_CASES.labels(str(row["kind"])).inc()

    def prune(self, horizon: datetime | None) -> None:
        """Drops the days of cases older than the retention ``horizon``."""
        if horizon is not None:
            self.log.prune(horizon)


def band_cases(store: RecordStore, q: ReviewQuery, band: float) -> pl.DataFrame:
    """The served predictions of ``[q.start, q.end)`` whose score is at most ``band`` from its
    threshold (shadow scores were never served: not cases)."""
    in_band = (
        (pl.col("time") >= q.start)
        & (pl.col("time") < q.end)
        & ((pl.col("score") - pl.col("threshold")).abs() <= band)
        & (pl.col("variant") != "shadow")
    )
    hours = [d for d, hour in store.hour_dirs(q.model or None) if q.start - _HOUR < hour < q.end]
    columns = [c for c in REVIEW_COLUMNS if c not in ("kind", "detail")]
    frames = [pl.scan_parquet(f).select(columns).filter(in_band) for d in hours for f in live_files(d)]
    if not frames:
        return pl.DataFrame(schema=REVIEW_COLUMNS)
    found = pl.concat(frames).collect().unique("request_id", keep="first", maintain_order=True)
    distance = (pl.col("score") - pl.col("threshold")).abs()
    return found.with_columns(
        pl.lit("review_band").alias("kind"),
        pl.format(
            "score {} is {} from the threshold {} (review band {})",
            pl.col("score").round(4),
            distance.round(4),
            pl.col("threshold").round(4),
            pl.lit(band),
        ).alias("detail"),
    ).select(*REVIEW_COLUMNS)


def list_cases(store: RecordStore, log: DayLog, q: ReviewQuery, band: float) -> tuple[pl.DataFrame, bool]:
    """The cases matching ``q``, newest first, at most ``q.limit`` of them, and whether more matched."""
    frames = []
    if q.kinds & {"refused", "canary_fallback"}:
        stored = log.read(since=q.start, until=q.end).filter(
            (pl.col("time") >= q.start) & (pl.col("time") < q.end) & pl.col("kind").is_in(sorted(q.kinds))
        )
        # a batch the gateway sent again (its acknowledgement was lost) is stored twice: one case
        stored = stored.unique(["kind", "request_id"], keep="first", maintain_order=True)
        if q.model:
            stored = stored.filter(pl.col("model") == q.model)
        frames.append(stored)
    if "review_band" in q.kinds and band > 0:
        frames.append(band_cases(store, q, band))
    if not frames:
        return pl.DataFrame(schema=REVIEW_COLUMNS), False
    frame = pl.concat(frames).sort("time", "request_id", descending=True)
    return frame.head(q.limit), frame.height > q.limit
