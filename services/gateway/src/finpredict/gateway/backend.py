"""Calls to the model server: coalescing, deadlines, retries, and a circuit breaker per version.

Ray Serve's gRPC proxy costs more per call than an XGBoost predict of a few hundred rows, so
concurrent requests for the same model version are coalesced into one ``Predict``: a request
for a version with no call in flight goes at once; while one is in flight, new requests gather
and leave together when it returns (at most ``batch_window_ms`` later, or as soon as
``max_batch_rows`` are waiting), so batching costs nothing when idle and grows with load.
Shadow calls always wait a longer window (nobody awaits them).

Each attempt has its own deadline (``timeout_s``), and a call never outlives the deadline of the
client it serves (:func:`bound_by_client`). A predict is idempotent, so a failed attempt is
retried on a fresh one (which reaches whichever replica Serve picks next), up to ``retries``
times: after ``UNAVAILABLE`` (a replica or proxy went away), and, at most ``timeout_retries``
times, after an attempt ran out of its deadline (a replica lost with its node takes Ray seconds
to fail the calls it held), but only while the client's deadline leaves room for a full attempt;
nothing else is retried. After ``breaker_failures`` consecutive failures of a version (each
attempt that ran out of its full deadline counts) its circuit opens: calls fail fast with
UNAVAILABLE for ``breaker_cooldown_s``, then one probe call decides whether it closes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import grpc

from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.common.interceptors import outgoing_metadata
from finpredict.gateway import metrics

log = logging.getLogger("finpredict.gateway.backend")

# Failures that say something about the backend's health (they count towards the breaker).
_HEALTH_CODES = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)

# Ray Serve's gRPC proxy answers INTERNAL when the replica handling a call dies (its message is
# the ActorDiedError / ActorUnavailableError text): a replica went away, as UNAVAILABLE says.
_REPLICA_GONE = ("The actor died", "The actor experienced an error", "is unavailable: ")

# The time.monotonic() deadline of the client request being served (None: it has none).
_CLIENT_DEADLINE: ContextVar[float | None] = ContextVar("finpredict_gateway_client_deadline", default=None)


def bound_by_client(time_remaining: float | None) -> None:
    """Bounds the model-server calls made for the request being served (in this task and the
    tasks it starts) by its client's deadline: ``time_remaining`` is the servicer context's
    ``time_remaining()``, None when the client set no deadline."""
    _CLIENT_DEADLINE.set(None if time_remaining is None else time.monotonic() + time_remaining)


class BackendError(Exception):
    """A model-server call failed; ``code`` is the status to give the client."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Scored:
    """Predictions of one submitted group of rows, in submission order."""

    predictions: Sequence[pb.Prediction]
    threshold: float


@dataclass
class CircuitBreaker:
    """Closed → open after ``failures`` in a row → half-open after ``cooldown_s`` → closed on success."""

    failures: int
    cooldown_s: float
    consecutive: int = 0
    opened_at: float | None = None
    probing: bool = False

    def allow(self, now: float) -> bool:
        if self.opened_at is None:
            return True
        if now - self.opened_at < self.cooldown_s or self.probing:
            return False
        self.probing = True  # half-open: let exactly one call through
        return True

    def success(self) -> bool:
        """Records a success; True if this closed an open circuit."""
        was_open = self.opened_at is not None
        self.consecutive, self.opened_at, self.probing = 0, None, False
        return was_open

    def failure(self, now: float) -> bool:
        """Records a failure; True if this opened the circuit."""
        self.consecutive += 1
        self.probing = False
        if self.opened_at is not None:
            self.opened_at = now  # a failed probe keeps it open for another cooldown
            return False
        if self.consecutive >= self.failures:
            self.opened_at = now
            return True
        return False

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None


@dataclass
class _Pending:
    rows: list[pb.FeatureRow] = field(default_factory=list)
    waiters: list[tuple[int, int, asyncio.Future[Scored]]] = field(default_factory=list)
    # the latest deadline of the waiting clients (None once one has none): the call serves them all
    deadline: float | None = float("-inf")


class ModelServerBackend:
    """One channel to the Serve gRPC ingress, shared by every request of the gateway; each call
    carries the trace context and request id of the request it serves (the channel has no client
    interceptors: ``create_channel(propagate=False)``)."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        application: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        timeout_retries: int = 1,
        batch_window_s: float = 0.002,
        max_batch_rows: int = 256,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 5.0,
    ) -> None:
        self._stub: Any = pb_grpc.ModelServerServiceStub(channel)  # typed for the sync API
        self._app = application
        self._timeout = timeout_s
        self._retries = retries
        self._timeout_retries = timeout_retries
        self._window = batch_window_s
        self._max_rows = max_batch_rows
        self._breaker_args = (breaker_failures, breaker_cooldown_s)
        self._breakers: dict[tuple[str, int], CircuitBreaker] = {}
        # (model, version, explain, top_k), deferred -> requests waiting to be sent together
        self._pending: dict[tuple[tuple[str, int, bool, int], bool], _Pending] = {}
        self._inflight: dict[tuple[str, int, bool, int], int] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def breaker(self, model: str, version: int) -> CircuitBreaker:
        key = (model, version)
        if key not in self._breakers:
            self._breakers[key] = CircuitBreaker(*self._breaker_args)
        return self._breakers[key]

    def is_available(self, model: str, version: int) -> bool:
        return not self.breaker(model, version).is_open

    async def predict(
        self,
        model: str,
        version: int,
        rows: Sequence[pb.FeatureRow],
        *,
        explain: bool = False,
        top_k: int = 0,
        defer_s: float | None = None,
    ) -> Scored:
        """Scores ``rows`` with ``model``:``version``.

        A request for a version with no call in flight goes out at once. While a call is in
        flight, new requests wait (at most ``batch_window_s``, or until ``max_batch_rows``)
        and leave together as soon as it returns: batching costs nothing when idle and grows
        with load. ``defer_s`` always waits that long (for shadow traffic, which no one awaits,
        so it is not bound by the client's deadline either).
        """
        key = (model, version, explain, top_k)
        window = self._window if defer_s is None else defer_s
        deadline = _CLIENT_DEADLINE.get() if defer_s is None else None
        if window <= 0 or len(rows) >= self._max_rows:
            return await self._tracked(key, list(rows), deadline)
        pkey = (key, defer_s is not None)
        if defer_s is None and not self._inflight.get(key) and pkey not in self._pending:
            return await self._tracked(key, list(rows), deadline)
        pending = self._pending.get(pkey)
        if pending is None:
            pending = self._pending[pkey] = _Pending()
            asyncio.get_running_loop().call_later(window, self._flush, pkey, pending)
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        pending.waiters.append((len(pending.rows), len(rows), future))
        pending.rows.extend(rows)
        if pending.deadline is not None:
            pending.deadline = None if deadline is None else max(pending.deadline, deadline)
        if len(pending.rows) >= self._max_rows:
            self._flush(pkey, pending)
        return await future

    async def _tracked(
        self, key: tuple[str, int, bool, int], rows: list[pb.FeatureRow], deadline: float | None
    ) -> Scored:
        """One model-server call, counted in flight; when it ends, waiting requests go at once."""
        self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            return await self._call(key[0], key[1], rows, key[2], key[3], deadline)
        finally:
            self._inflight[key] -= 1
            pending = self._pending.get((key, False))
            if pending is not None:
                self._flush((key, False), pending)

    def _flush(self, pkey: tuple[tuple[str, int, bool, int], bool], pending: _Pending) -> None:
        if self._pending.get(pkey) is not pending:
            return  # already flushed (size reached, or a call returned, before the timer fired)
        del self._pending[pkey]
        task = asyncio.get_running_loop().create_task(self._run_batch(pkey[0], pending))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_batch(self, key: tuple[str, int, bool, int], pending: _Pending) -> None:
        try:
            scored = await self._tracked(key, pending.rows, pending.deadline)
        except BaseException as exc:  # every waiter gets the failure, none hangs
            for _, _, fut in pending.waiters:
                if not fut.done():
                    fut.set_exception(
                        exc
                        if isinstance(exc, Exception)
                        else BackendError(grpc.StatusCode.CANCELLED, "gateway is shutting down")
                    )
            if not isinstance(exc, Exception):
                raise
            return
        for start, count, fut in pending.waiters:
            if not fut.done():
                fut.set_result(Scored(scored.predictions[start : start + count], scored.threshold))

    async def _call(
        self,
        model: str,
        version: int,
        rows: list[pb.FeatureRow],
        explain: bool,
        top_k: int,
        deadline: float | None,
    ) -> Scored:
        """Attempts the call until one answers, a failure is final, or ``deadline`` (the client's)
        leaves no room for another attempt."""
        breaker = self.breaker(model, version)
        if not breaker.allow(time.monotonic()):
            raise BackendError(
                grpc.StatusCode.UNAVAILABLE, f"circuit to {model}:{version} is open after repeated failures"
            )
        request = pb.PredictRequest(
            model=types_pb2.ModelRef(name=model, version=version), rows=rows, explain=explain, top_k=top_k
        )
        metadata = outgoing_metadata(
            (("application", self._app), ("multiplexed_model_id", f"{model}:{version}"))
        )
        metrics.BACKEND_BATCH_ROWS.observe(len(rows))
        retries = timeouts = 0
        while True:
            left = float("inf") if deadline is None else deadline - time.monotonic()
            # an attempt cut short by the client's deadline says nothing about the backend
            full_attempt = left >= self._timeout
            try:
                resp = await self._stub.Predict(
                    request, metadata=metadata, timeout=max(min(self._timeout, left), 0.001)
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.INTERNAL and any(
                    m in (exc.details() or "") for m in _REPLICA_GONE
                ):
                    code = grpc.StatusCode.UNAVAILABLE  # the replica died mid-call: retry on another
                left = float("inf") if deadline is None else deadline - time.monotonic()
                timed_out = code == grpc.StatusCode.DEADLINE_EXCEEDED
                if timed_out and full_attempt:
                    self._failed(breaker, model, version, code)  # every attempt too slow counts
                if retries < self._retries and self._may_retry(code, full_attempt, timeouts, left, breaker):
                    retries += 1
                    timeouts += timed_out
                    metrics.BACKEND_RETRIES_TOTAL.labels(model).inc()
                    if not timed_out:  # back off a little before trying the next replica
                        with contextlib.suppress(asyncio.TimeoutError):
                            await asyncio.sleep(min(0.01 * 2**retries, max(left - 0.01, 0)))
                    continue
                if code not in _HEALTH_CODES:
                    breaker.success()  # the backend answered; the request itself was refused
                elif not timed_out:
                    self._failed(breaker, model, version, code)
                raise BackendError(code, f"model server {model}:{version}: {exc.details()}") from None
            if breaker.success():
                metrics.CIRCUIT_OPEN.labels(model, str(version)).set(0)
                log.info("circuit closed", extra={"model": model, "version": version})
            if len(resp.predictions) != len(rows):
                raise BackendError(
                    grpc.StatusCode.INTERNAL,
                    f"model server returned {len(resp.predictions)} predictions for {len(rows)} rows",
                )
            return Scored(resp.predictions, float(resp.threshold))

    def _may_retry(
        self, code: grpc.StatusCode, full_attempt: bool, timeouts: int, left: float, breaker: CircuitBreaker
    ) -> bool:
        """Whether a failed attempt goes again, with ``left`` seconds to the client's deadline."""
        if code == grpc.StatusCode.UNAVAILABLE:
            return left > 0.01
        return (
            code == grpc.StatusCode.DEADLINE_EXCEEDED
            and full_attempt  # not the client's deadline
            and timeouts < self._timeout_retries
            and left >= self._timeout  # room for a full attempt
            and not breaker.is_open  # this or other calls' slow attempts opened it
        )

    @staticmethod
    def _failed(breaker: CircuitBreaker, model: str, version: int, code: grpc.StatusCode) -> None:
        """Counts a failure of the backend towards ``breaker``."""
        if breaker.failure(time.monotonic()):
            metrics.CIRCUIT_OPEN.labels(model, str(version)).set(1)
            log.warning("circuit opened", extra={"model": model, "version": version, "grpc_code": code.name})

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
