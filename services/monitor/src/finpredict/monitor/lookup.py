"""Looking logged predictions up: one request by its id, or an entity's requests in a time range.

This answers "which model scored this customer on 3 March, with what score and why": the
version and variant that answered, the score, the threshold (so the decision) and the reason
codes the client received, as the gateway logged them. A request id is looked up in every
stored hour (of one model when given); an entity in the hours its range covers only.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import polars as pl

from finpredict.monitor.records import InvalidInputError, model_name_problem
from finpredict.monitor.store import RecordStore, live_files, read_parquet

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
MAX_RANGE = timedelta(days=31)
MAX_ID = 256
HOUR = timedelta(hours=1)


@dataclass(frozen=True)
class Query:
    """A lookup: ``request_id``, or ``entity_id`` with ``start`` and ``end``; ``model`` narrows."""

    request_id: str = ""
    entity_id: str = ""
    start: datetime | None = None
    end: datetime | None = None
    model: str = ""
    limit: int = DEFAULT_LIMIT


def check_query(q: Query) -> Query:
    """``q`` with its limit defaulted; :class:`InvalidInputError` naming the field otherwise."""
    if not q.request_id and not q.entity_id:
        raise InvalidInputError("request_id or entity_id is required")
    for name, value in (("request_id", q.request_id), ("entity_id", q.entity_id)):
        if len(value) > MAX_ID or "\x00" in value:
            raise InvalidInputError(f"{name}: at most {MAX_ID} characters, without NUL characters")
    if q.model:
        problem = model_name_problem("model", q.model)
        if problem is not None:
            raise InvalidInputError(problem)
    if not q.request_id:
        if q.start is None or q.end is None:
            raise InvalidInputError("start and end: required when looking up by entity_id")
        if not q.start < q.end <= q.start + MAX_RANGE:
            raise InvalidInputError(f"end: must be after start, at most {MAX_RANGE.days} days later")
    if not 0 <= q.limit <= MAX_LIMIT:
        raise InvalidInputError(f"limit: must be in [0, {MAX_LIMIT}]")
    return Query(q.request_id, q.entity_id, q.start, q.end, q.model, q.limit or DEFAULT_LIMIT)


def lookup(store: RecordStore, q: Query) -> tuple[pl.DataFrame, bool]:
    """The stored predictions matching ``q`` (checked by :func:`check_query`), newest first, at
    most ``q.limit`` of them, and whether more matched."""
    if q.request_id:
        hours = list(store.hour_dirs(q.model or None))
        match = pl.col("request_id") == q.request_id
        if q.entity_id:
            match &= pl.col("entity_id") == q.entity_id
    else:
        assert q.start is not None
        assert q.end is not None
        hours = [(d, h) for d, h in store.hour_dirs(q.model or None) if q.start - HOUR < h < q.end]
        match = (pl.col("entity_id") == q.entity_id) & (pl.col("time") >= q.start) & (pl.col("time") < q.end)
    frames = [read_parquet(f).filter(match) for d, _hour in hours for f in live_files(d)]
    found = [f for f in frames if f.height]
    if not found:
        return pl.DataFrame(), False
    frame = pl.concat(found, how="diagonal_relaxed").unique("request_id", keep="first", maintain_order=True)
    frame = frame.sort("time", descending=True)
    return frame.head(q.limit), frame.height > q.limit
