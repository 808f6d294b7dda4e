"""The ingest path of ``IngestPredictions``: requests decoded column by column, and group commit.

* **Decoding.** A request's bytes are read by drift_core's ``decode_prediction_batch`` straight into
  the columns the monitor stores (:func:`decode_request`), with no Python object per record or
  feature; the few requests it leaves to protobuf (malformed bytes, an edge case for the review
  queue, a feature sent both as a number and as a category, a field number it does not know) are
  decoded as messages and validated record by record, as before.
  :class:`ColumnarIngestInterceptor` hands the method its request bytes for that.
* **Group commit.** :class:`GroupCommit` queues the batches of every stream; while one group is
  being written and folded, the batches that arrive wait and form the next group, which is
  validated, written (one file, one fsync per partition) and folded by one engine call. A
  batch is acknowledged once its group is on disk, as before; concurrent streams share the fsync
  instead of waiting for each other's.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import grpc
import numpy as np
import polars as pl

import drift_core
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.common.decoding import tolerant
from finpredict.common.interceptors import rebuild_handler
from finpredict.monitor.records import MAX_EVENT_TIME, IngestBatch, reason_codes_json
from finpredict.monitor.store import FEATURE_PREFIX

INGEST_METHOD = "/finpredict.monitor.v1.MonitorService/IngestPredictions"
MAX_GROUP_RECORDS = 20_000  # most records committed by one engine call
_MAX_S = int(MAX_EVENT_TIME.timestamp())
_TIME = pl.Datetime("us", "UTC")

R = TypeVar("R")


def decode_request(data: bytes) -> pl.DataFrame | pb.IngestPredictionsRequest:
    """A serialized ``IngestPredictionsRequest``: its records as stored (``predictions_frame``'s
    layout), or the parsed message when drift_core leaves it to protobuf (``DecodeError`` when
    it is not one)."""
    cols = drift_core.decode_prediction_batch(data)
    if cols is None:
        return pb.IngestPredictionsRequest.FromString(data)
    return frame_from_columns(cols)


def frame_from_columns(cols: dict[str, Any]) -> pl.DataFrame:
    """The stored frame of ``decode_prediction_batch``'s columns: a record's time as
    ``datetime.fromtimestamp(seconds + nanos / 1e9)`` (the epoch outside 1970 to 9000, which
    validation refuses), NaN numbers as missing, features sorted by name."""
    seconds, nanos = cols["seconds"], cols["nanos"]
    valid = (seconds >= 0) & (seconds < _MAX_S) & (nanos >= 0) & (nanos < 1_000_000_000)
    t = np.where(valid, seconds + nanos / 1e9, 0.0)
    frac, whole = np.modf(t)
    us = whole.astype(np.int64) * 1_000_000 + np.round(frac * 1e6).astype(np.int64)
    n = cols["n"]
    reasons: list[str | None] = [None] * n
    if cols["reason_codes"]:
        by_row: dict[int, list[tuple[str, str, float, str]]] = {}
        for row, *code in cols["reason_codes"]:
            by_row.setdefault(row, []).append(tuple(code))  # type: ignore[arg-type]
        for row, codes in by_row.items():
            reasons[row] = reason_codes_json(codes)
    series = [
        pl.Series("request_id", cols["request_id"], dtype=pl.String),
        pl.Series("entity_id", cols["entity_id"], dtype=pl.String),
        pl.Series("model", cols["model"], dtype=pl.String),
        pl.Series("version", cols["version"], dtype=pl.Int64),
        pl.Series("variant", cols["variant"], dtype=pl.String),
        pl.Series("score", cols["score"], dtype=pl.Float64),
        pl.Series("threshold", cols["threshold"], dtype=pl.Float64),
        pl.Series("latency_ms", cols["latency_ms"], dtype=pl.Float64),
        pl.Series("trace_id", cols["trace_id"], dtype=pl.String),
        pl.Series("time", us, dtype=pl.Int64).cast(_TIME),
        pl.Series("reason_codes", reasons, dtype=pl.String),
        pl.Series("rollout_id", cols["rollout_id"], dtype=pl.String),
        pl.Series("experiment_id", cols["experiment_id"], dtype=pl.String),
    ]
    for name, column in sorted(cols["features"], key=lambda f: f[0]):
        if isinstance(column, np.ndarray):
            series.append(pl.Series(FEATURE_PREFIX + name, column, dtype=pl.Float64, nan_to_null=True))
        else:
            series.append(pl.Series(FEATURE_PREFIX + name, column, dtype=pl.String))
    return pl.DataFrame(series)


class ColumnarIngestInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Gives ``IngestPredictions`` its requests through :func:`decode_request` (a request that is not
    a message still answers ``INVALID_ARGUMENT``, see ``finpredict.common.decoding``)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any]]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any]:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method != INGEST_METHOD:
            return handler
        return rebuild_handler(
            handler, lambda behavior: behavior, request_deserializer=tolerant(decode_request)
        )


class GroupCommit(Generic[R]):
    """Batches submitted by concurrent callers, handed to ``commit`` in groups: one group at a time,
    each of the batches that waited meanwhile (at most :data:`MAX_GROUP_RECORDS` records, whole
    batches), in the order submitted. ``commit`` returns one result per batch, or raises for all
    of them."""

    def __init__(self, commit: Callable[[list[IngestBatch]], Awaitable[list[R]]]) -> None:
        self._commit = commit
        self._queue: deque[tuple[IngestBatch, asyncio.Future[R]]] = deque()
        self._worker: asyncio.Task[None] | None = None

    async def submit(self, batch: IngestBatch) -> R:
        """``batch``'s result, once the group it joined is committed."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[R] = loop.create_future()
        self._queue.append((batch, done))
        if self._worker is None or self._worker.done():
            self._worker = loop.create_task(self._run())
        return await done

    async def _run(self) -> None:
        while self._queue:
            group: list[tuple[IngestBatch, asyncio.Future[R]]] = []
            size = 0
            while self._queue and (not group or size + len(self._queue[0][0]) <= MAX_GROUP_RECORDS):
                item = self._queue.popleft()
                group.append(item)
                size += len(item[0])
            try:
                results: Sequence[R] = await self._commit([b for b, _ in group])
            except Exception as exc:  # every batch of the group failed (nothing acknowledged)
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            for (_, done), result in zip(group, results, strict=True):
                if not done.done():  # a caller that went away: its records are stored all the same
                    done.set_result(result)
