"""Calls to the model server: coalescing, deadlines, retries, and a circuit breaker per version.

Ray Serve's gRPC proxy costs more per call than an XGBoost predict of a few hundred rows, so
concurrent requests for the same model version are coalesced into one ``Predict``: a request
for a version with no call in flight goes at once; while one is in flight, new requests gather
and leave together when it returns (at most ``batch_window_ms`` later, or as soon as
``max_batch_rows`` are waiting), so batching costs nothing when idle and grows with load.
Shadow calls always wait a longer window (nobody awaits them). Each call has a deadline.
``UNAVAILABLE`` (a replica or proxy went away) is retried, since a predict is idempotent, and the
retry reaches whichever replica Serve picks next; nothing else is retried. After
``breaker_failures`` consecutive failures of a version its circuit opens: calls fail fast with
UNAVAILABLE for ``breaker_cooldown_s``, then one probe call decides whether it closes again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc

from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
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


class ModelServerBackend:
    """One channel to the Serve gRPC ingress, shared by every request of the gateway."""

    def __init__(
        self,
        channel: grpc.aio.Channel,
        application: str,
        *,
        timeout_s: float = 2.0,
        retries: int = 2,
        batch_window_s: float = 0.002,
        max_batch_rows: int = 256,
        breaker_failures: int = 5,
        breaker_cooldown_s: float = 5.0,
    ) -> None:
        self._stub: Any = pb_grpc.ModelServerServiceStub(channel)  # typed for the sync API
        self._app = application
        self._timeout = timeout_s
        self._retries = retries
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
        with load. ``defer_s`` always waits that long (for shadow traffic, which no one awaits).
        """
        key = (model, version, explain, top_k)
        window = self._window if defer_s is None else defer_s
        if window <= 0 or len(rows) >= self._max_rows:
            return await self._tracked(key, list(rows))
        pkey = (key, defer_s is not None)
        if defer_s is None and not self._inflight.get(key) and pkey not in self._pending:
            return await self._tracked(key, list(rows))
        pending = self._pending.get(pkey)
        if pending is None:
            pending = self._pending[pkey] = _Pending()
            asyncio.get_running_loop().call_later(window, self._flush, pkey, pending)
        future: asyncio.Future[Scored] = asyncio.get_running_loop().create_future()
        pending.waiters.append((len(pending.rows), len(rows), future))
        pending.rows.extend(rows)
        if len(pending.rows) >= self._max_rows:
            self._flush(pkey, pending)
        return await future

    async def _tracked(self, key: tuple[str, int, bool, int], rows: list[pb.FeatureRow]) -> Scored:
        """One model-server call, counted in flight; when it ends, waiting requests go at once."""
        self._inflight[key] = self._inflight.get(key, 0) + 1
        try:
            return await self._call(key[0], key[1], rows, key[2], key[3])
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
            scored = await self._tracked(key, pending.rows)
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
        self, model: str, version: int, rows: list[pb.FeatureRow], explain: bool, top_k: int
    ) -> Scored:
        breaker = self.breaker(model, version)
        if not breaker.allow(time.monotonic()):
            raise BackendError(
                grpc.StatusCode.UNAVAILABLE, f"circuit to {model}:{version} is open after repeated failures"
            )
        request = pb.PredictRequest(
            model=types_pb2.ModelRef(name=model, version=version), rows=rows, explain=explain, top_k=top_k
        )
        metadata = (("application", self._app), ("multiplexed_model_id", f"{model}:{version}"))
        metrics.BACKEND_BATCH_ROWS.observe(len(rows))
        deadline = time.monotonic() + self._timeout
        attempt = 0
        while True:
            try:
                resp = await self._stub.Predict(
                    request, metadata=metadata, timeout=max(deadline - time.monotonic(), 0.001)
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code == grpc.StatusCode.INTERNAL and any(
                    m in (exc.details() or "") for m in _REPLICA_GONE
                ):
                    code = grpc.StatusCode.UNAVAILABLE  # the replica died mid-call: retry on another
                retry = (
                    code == grpc.StatusCode.UNAVAILABLE
                    and attempt < self._retries
                    and deadline - time.monotonic() > 0.01
                )
                if retry:
                    attempt += 1
                    metrics.BACKEND_RETRIES_TOTAL.labels(model).inc()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.sleep(min(0.01 * 2**attempt, max(deadline - time.monotonic(), 0)))
                    continue
                if code in _HEALTH_CODES and breaker.failure(time.monotonic()):
                    metrics.CIRCUIT_OPEN.labels(model, str(version)).set(1)
                    log.warning(
                        "circuit opened", extra={"model": model, "version": version, "grpc_code": code.name}
                    )
                elif code not in _HEALTH_CODES:
                    breaker.success()  # the backend answered; the request itself was refused
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

    async def close(self) -> None:
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
