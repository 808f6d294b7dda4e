"""The prediction log: every scored application goes to the monitor, never in the request path.

:meth:`PredictionLog.offer` puts a record in a bounded in-memory buffer and returns at once.
One background task sends batches with ``IngestPredictions``. When the monitor is slow or
down, the batch in hand is retried with capped backoff (the monitor de-duplicates by request
id, so a retry after a lost acknowledgement is harmless) while new records fill the buffer;
once it is full, new records are dropped and counted in
``finpredict_gateway_prediction_log_dropped_total{reason="buffer_full"}``. A batch the monitor
refuses for good (a non-retryable status) is dropped and counted as ``send_failed``. Nothing
is dropped silently, and scoring never waits for the monitor.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from typing import Any

import grpc

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.gateway import metrics

log = logging.getLogger("finpredict.gateway.prediction_log")

_RETRYABLE = frozenset(
    {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED}
)


class PredictionLog:
    """A bounded buffer drained to the monitor by one task."""

    def __init__(
        self,
        stub: Any,
        *,
        capacity: int = 50_000,
        batch_records: int = 500,
        flush_s: float = 0.5,
        timeout_s: float = 5.0,
        max_backoff_s: float = 2.0,
        metadata: tuple[tuple[str, str], ...] = (),
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._capacity = capacity
        self._batch = batch_records
        self._flush_s = flush_s
        self._timeout = timeout_s
        self._max_backoff = max_backoff_s
        self._buffer: deque[monitor_pb2.PredictionRecord] = deque()
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self.sent = 0
        self.dropped = 0

    def offer(self, record: monitor_pb2.PredictionRecord) -> bool:
        """Queues ``record``; False (and counted) when the buffer is full."""
        if len(self._buffer) >= self._capacity:
            self.dropped += 1
            metrics.LOG_DROPPED_TOTAL.labels("buffer_full").inc()
            return False
        self._buffer.append(record)
        metrics.LOG_BUFFER_RECORDS.set(len(self._buffer))
        if len(self._buffer) >= self._batch:
            self._wakeup.set()
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Sends what is buffered (for up to ``timeout_s``), then stops; the rest is counted as dropped."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        if self._buffer:
            n = len(self._buffer)
            self._buffer.clear()
            self.dropped += n
            metrics.LOG_DROPPED_TOTAL.labels("send_failed").inc(n)
            log.warning("prediction records not delivered at shutdown", extra={"count": n})

    async def _run(self) -> None:
        backoff = 0.05
        batch: list[monitor_pb2.PredictionRecord] = []
        while True:
            if not batch:
                if not self._buffer:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._flush_s)
                    continue
                if len(self._buffer) < self._batch and not self._closing:
                    # give a partial batch a moment to fill
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), self._flush_s)
                while self._buffer and len(batch) < self._batch:
                    batch.append(self._buffer.popleft())
                metrics.LOG_BUFFER_RECORDS.set(len(self._buffer))
            try:
                rejected = await self._send(batch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _RETRYABLE and not (self._closing and backoff >= self._max_backoff):
                    log.info("monitor unavailable, will retry", extra={"grpc_code": exc.code().name})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self.dropped += len(batch)
                metrics.LOG_DROPPED_TOTAL.labels("send_failed").inc(len(batch))
                log.warning(
                    "prediction records refused by the monitor",
                    extra={"count": len(batch), "grpc_code": exc.code().name},
                )
            else:
                self.sent += len(batch) - rejected
                metrics.LOG_SENT_TOTAL.inc(len(batch) - rejected)
            batch = []
            backoff = 0.05

    async def _send(self, batch: list[monitor_pb2.PredictionRecord]) -> int:
        """Sends one batch; returns how many records the monitor rejected (counted as dropped)."""

        async def requests() -> Any:
            yield monitor_pb2.IngestPredictionsRequest(records=batch)

        resp = await self._stub.IngestPredictions(requests(), timeout=self._timeout, metadata=self._metadata)
        if resp.rejected:
            n = int(resp.rejected)
            self.dropped += n
            metrics.LOG_DROPPED_TOTAL.labels("rejected").inc(n)
            log.warning(
                "monitor rejected prediction records",
                extra={"count": n, "first_rejection": resp.first_rejection},
            )
        return int(resp.rejected)
