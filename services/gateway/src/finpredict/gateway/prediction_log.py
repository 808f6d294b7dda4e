"""The prediction log: every scored application goes to the monitor, never in the request path.

:meth:`PredictionLog.offer` puts a record in a bounded in-memory buffer and returns at once.
One background task sends batches with ``IngestPredictions``. When the monitor is slow or
down, the batch in hand is retried with capped backoff (the monitor de-duplicates by request
id, so a retry after a lost acknowledgement is harmless) while new records fill the buffer;
once it is full, new records are dropped and counted in
``finpredict_gateway_prediction_log_dropped_total{reason="buffer_full"}``. A batch the monitor
refuses for good (a non-retryable status) is dropped and counted as ``send_failed``; so is the
batch in hand when the sender hits any other error (it then starts again, counted in
``..._sender_restarts_total``), and, at shutdown, every record not acknowledged by then, the
batch in flight included. So ``sent + dropped`` always equals the records offered: nothing is
dropped silently, and scoring never waits for the monitor.
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
        self._inflight: list[monitor_pb2.PredictionRecord] = []  # the batch being sent
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self.sent = 0
        self.dropped = 0

    def offer(self, record: monitor_pb2.PredictionRecord) -> bool:
        """Queues ``record``; False (and counted) when the buffer is full or the log is closed."""
        if self._closed:
            self._drop(1, "send_failed")
            return False
        if len(self._buffer) >= self._capacity:
            self._drop(1, "buffer_full")
            return False
        self._buffer.append(record)
        metrics.LOG_BUFFER_RECORDS.set(len(self._buffer))
        if len(self._buffer) >= self._batch:
            self._wakeup.set()
        return True

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="prediction-log")

    async def close(self, timeout_s: float = 5.0) -> None:
        """Sends what is buffered (for up to ``timeout_s``), then stops. Every record the monitor
        has not acknowledged by then, the batch in flight included, is counted as dropped, so
        ``sent + dropped`` is every record offered; both are logged."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._closed = True
        n = len(self._inflight) + len(self._buffer)
        if n:
            self._inflight = []
            self._buffer.clear()
            self._drop(n, "send_failed")
            log.warning("prediction records not delivered at shutdown", extra={"count": n})
        metrics.LOG_BUFFER_RECORDS.set(0)
        log.info(
            "prediction log closed: %d records sent, %d dropped",
            self.sent,
            self.dropped,
            extra={"sent": self.sent, "dropped": self.dropped},
        )

    def _drop(self, n: int, reason: str) -> None:
        if n:
            self.dropped += n
            metrics.LOG_DROPPED_TOTAL.labels(reason).inc(n)

    async def _run(self) -> None:
        """Sends until closed. Any unexpected error (not only a refused call) drops and counts the
        batch in hand, and the sender starts again: nothing stops the log but :meth:`close`."""
        while True:
            try:
                await self._send_all()
                return
            except Exception:
                n = len(self._inflight)
                self._inflight = []
                self._drop(n, "send_failed")
                metrics.LOG_SENDER_RESTARTS_TOTAL.inc()
                log.exception("prediction log sender failed; restarting", extra={"count": n})
                await asyncio.sleep(self._flush_s)

    async def _wait(self, seconds: float) -> None:
        self._wakeup.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wakeup.wait(), seconds)

    async def _send_all(self) -> None:
        backoff = 0.05
        while True:
            if not self._inflight:
                if not self._buffer:
                    if self._closing:
                        return
                    await self._wait(self._flush_s)
                    continue
                if len(self._buffer) < self._batch and not self._closing:
                    await self._wait(self._flush_s)  # give a partial batch a moment to fill
                n = min(self._batch, len(self._buffer))
                self._inflight = [self._buffer.popleft() for _ in range(n)]
                metrics.LOG_BUFFER_RECORDS.set(len(self._buffer))
            batch = self._inflight
            try:
                rejected = await self._send(batch)
            except grpc.aio.AioRpcError as exc:
                if exc.code() in _RETRYABLE and not (self._closing and backoff >= self._max_backoff):
                    log.info("monitor unavailable, will retry", extra={"grpc_code": exc.code().name})
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._max_backoff)
                    continue
                self._inflight = []
                self._drop(len(batch), "send_failed")
                log.warning(
                    "prediction records refused by the monitor",
                    extra={"count": len(batch), "grpc_code": exc.code().name},
                )
            else:
                self._inflight = []
                self.sent += len(batch) - rejected
                metrics.LOG_SENT_TOTAL.inc(len(batch) - rejected)
            backoff = 0.05

    async def _send(self, batch: list[monitor_pb2.PredictionRecord]) -> int:
        """Sends one batch; returns how many records the monitor rejected (counted as dropped)."""

        async def requests() -> Any:
            yield monitor_pb2.IngestPredictionsRequest(records=batch)

        resp = await self._stub.IngestPredictions(requests(), timeout=self._timeout, metadata=self._metadata)
        if resp.rejected:
            n = int(resp.rejected)
            self._drop(n, "rejected")
            log.warning(
                "monitor rejected prediction records",
                extra={"count": n, "first_rejection": resp.first_rejection},
            )
        return int(resp.rejected)
