"""The prediction log's accounting against a monitor stub: whatever happens to the sender, every
record offered is sent or counted as dropped, the batch in flight at shutdown included."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest

from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.gateway import metrics
from finpredict.gateway.prediction_log import PredictionLog


@dataclass
class Monitor:
    """``IngestPredictions`` of a stub monitor: ``errors`` are raised by the next calls (after
    reading the batch); ``hold`` makes calls wait; every batch received is kept."""

    errors: list[BaseException] = field(default_factory=list)
    hold: asyncio.Event | None = None
    rejected: int = 0
    batches: list[list[str]] = field(default_factory=list)
    received: asyncio.Event = field(default_factory=asyncio.Event)

    async def IngestPredictions(
        self, requests: AsyncIterator[monitor_pb2.IngestPredictionsRequest], **_: Any
    ) -> monitor_pb2.IngestPredictionsResponse:
        ids = [r.request_id async for batch in requests for r in batch.records]
        self.batches.append(ids)
        self.received.set()
        if self.hold is not None:
            await self.hold.wait()
        if self.errors:
            raise self.errors.pop(0)
        return monitor_pb2.IngestPredictionsResponse(
            accepted=len(ids) - self.rejected, rejected=self.rejected
        )


def records(n: int, start: int = 0) -> list[monitor_pb2.PredictionRecord]:
    return [monitor_pb2.PredictionRecord(request_id=f"r{start + i}") for i in range(n)]


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata())


async def test_the_sender_restarts_after_an_unexpected_error() -> None:
    monitor = Monitor(errors=[RuntimeError("a bug in the sender's path")])
    log = PredictionLog(monitor, batch_records=5, flush_s=0.01)
    restarts = metrics.LOG_SENDER_RESTARTS_TOTAL._value.get()
    log.start()
    for r in records(12):
        log.offer(r)
    await log.close()
    # the batch in hand when it failed is counted; the sender went on with the rest
    assert (log.sent, log.dropped) == (7, 5)
    assert monitor.batches == [[f"r{i}" for i in range(j, min(j + 5, 12))] for j in (0, 5, 10)]
    assert metrics.LOG_SENDER_RESTARTS_TOTAL._value.get() == restarts + 1


async def test_retryable_errors_are_retried_with_the_same_batch() -> None:
    monitor = Monitor(errors=[unavailable(), unavailable()])
    log = PredictionLog(monitor, batch_records=3, flush_s=0.01, max_backoff_s=0.5)
    log.start()
    for r in records(3):
        log.offer(r)
    await log.close()
    assert (log.sent, log.dropped) == (3, 0)
    assert monitor.batches == [["r0", "r1", "r2"]] * 3


async def test_closing_counts_the_batch_in_flight_and_the_buffer() -> None:
    monitor = Monitor(hold=asyncio.Event())  # the monitor never answers
    log = PredictionLog(monitor, batch_records=4, flush_s=0.01)
    log.start()
    for r in records(10):
        log.offer(r)

    await asyncio.wait_for(monitor.received.wait(), 5)  # a batch is in flight
    await log.close(timeout_s=0.1)
    assert (log.sent, log.dropped) == (0, 10)  # 4 in flight + 6 buffered
    assert not log.offer(records(1, start=10)[0])  # after close: refused, and counted
    assert (log.sent, log.dropped) == (0, 11)


async def test_rejected_records_are_counted_as_dropped() -> None:
    monitor = Monitor(rejected=2)
    log = PredictionLog(monitor, batch_records=5, flush_s=0.01)
    log.start()
    for r in records(5):
        log.offer(r)
    await log.close()
    assert (log.sent, log.dropped) == (3, 2)


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.INVALID_ARGUMENT])
async def test_a_refused_batch_is_dropped_and_the_next_one_sent(code: grpc.StatusCode) -> None:
    refused = grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata())
    monitor = Monitor(errors=[refused])
    log = PredictionLog(monitor, batch_records=2, flush_s=0.01)
    log.start()
    for r in records(4):
        log.offer(r)
    await log.close()
    assert (log.sent, log.dropped) == (2, 2)
    assert len(monitor.batches) == 2
