"""Fetching reference profiles (and feature schemas) from the registry, off the request path.

On first sight of a model version without a cached profile, the engine asks for it
(:meth:`~finpredict.monitor.engine.Engine.take_wanted`); :class:`ProfileFetcher` runs one task per
version: ``GetVersion`` on the registry, the profile's sha256 checked against the one the registry
recorded at registration and the profile decoded
(:func:`finpredict.common.reference_profile.verified_profile`, as the gateway's catalog does), the
cache written, then ``on_ready``. While the
registry is unavailable (or answers with a profile that fails its checksum) it retries with
exponential backoff and jitter, forever: the version's records are kept meanwhile. A version the
registry does not know, or that has no profile, is final: ``on_missing`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc

import drift_core
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.channel import create_channel
from finpredict.common.reference_profile import ProfileError, verified_profile
from finpredict.monitor import metrics as m
from finpredict.monitor.profiles import ProfileCache, Reference, reference
from finpredict.monitor.windows import VersionKey

log = logging.getLogger("finpredict.monitor.fetch")

_RETRY_CODES = {
    grpc.StatusCode.UNAVAILABLE: "unavailable",
    grpc.StatusCode.DEADLINE_EXCEEDED: "unavailable",
    grpc.StatusCode.UNAUTHENTICATED: "denied",
    grpc.StatusCode.PERMISSION_DENIED: "denied",
}


# One fetch failed; ``reason`` is the counter's label, ``final`` when retrying cannot help.
FetchFailedError = ProfileError


class ProfileFetcher:
    """Fetches the profiles of the versions it is given, each once, retrying until it succeeds."""

    def __init__(
        self,
        target: str,
        token: str,
        cache: ProfileCache,
        on_ready: Callable[[VersionKey, Reference], Awaitable[None]],
        on_missing: Callable[[VersionKey, str], Awaitable[None]],
        retry_initial_s: float = 1.0,
        retry_max_s: float = 300.0,
        tls_ca_file: Path | None = None,
        timeout_s: float = 10.0,
    ) -> None:
        self.target = target
        self.metadata = bearer_metadata(token) if token else ()
        self.cache = cache
        self.on_ready = on_ready
        self.on_missing = on_missing
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.tls_ca_file = tls_ca_file
        self.timeout_s = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._tasks: dict[VersionKey, asyncio.Task[None]] = {}

    def want(self, keys: list[VersionKey]) -> None:
        """Starts fetching each version not being fetched already (returns at once)."""
        for key in keys:
            if key not in self._tasks:
                task = asyncio.create_task(self._run(key), name=f"profile {key[0]} v{key[1]}")
                self._tasks[key] = task
                task.add_done_callback(functools.partial(self._done, key))

    def _done(self, key: VersionKey, _task: asyncio.Task[None]) -> None:
        self._tasks.pop(key, None)

    @property
    def fetching(self) -> list[VersionKey]:
        return sorted(self._tasks)

    async def close(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        for task in list(self._tasks.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._channel is not None:
            await self._channel.close(None)

    async def _run(self, key: VersionKey) -> None:
        delay = self.retry_initial_s
        attempt = 0
        while True:
            attempt += 1
            try:
                ref = await self.fetch(key)
            except FetchFailedError as exc:
                m.PROFILE_FETCHES.labels(exc.reason).inc()
                if exc.final:
                    log.warning(
                        "no reference profile in the registry",
                        extra={"model": key[0], "version": key[1], "reason": exc.reason, "detail": str(exc)},
                    )
                    await self.on_missing(key, exc.reason)
                    return
                wait = min(delay, self.retry_max_s) * random.uniform(0.8, 1.2)
                log.warning(
                    "reference profile fetch failed, retrying",
                    extra={
                        "model": key[0],
                        "version": key[1],
                        "reason": exc.reason,
                        "detail": str(exc),
                        "attempt": attempt,
                        "retry_in_s": round(wait, 2),
                    },
                )
                await asyncio.sleep(wait)
                delay = min(delay * 2, self.retry_max_s)
                continue
            m.PROFILE_FETCHES.labels("ok").inc()
            await self.on_ready(key, ref)
            return

    def _stub(self) -> Any:  # the generated stubs are typed for the blocking API, not grpc.aio
        if self._channel is None:
            self._channel = create_channel(self.target, tls_ca_file=self.tls_ca_file)
        return registry_pb2_grpc.RegistryServiceStub(self._channel)  # type: ignore[no-untyped-call]

    async def fetch(self, key: VersionKey) -> Reference:
        """One attempt: the version from the registry, checked, decoded and cached."""
        model, version = key
        try:
            resp = await self._stub().GetVersion(
                registry_pb2.GetVersionRequest(model=model, version=version),
                metadata=self.metadata,
                timeout=self.timeout_s,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise FetchFailedError("not_found", exc.details() or "", final=True) from None
            reason = _RETRY_CODES.get(exc.code(), "error")
            raise FetchFailedError(reason, f"{exc.code().name}: {exc.details()}") from None
        v = resp.version
        got = verified_profile(v, drift_core.Profile.from_bytes)
        try:
            await asyncio.to_thread(self.cache.store, model, version, got.blob, got.sha256, v.feature_schema)
        except OSError as exc:  # used all the same; fetched again after a restart
            log.error(
                "reference profile not cached", extra={"model": model, "version": version, "error": str(exc)}
            )
        return reference(got.profile, v.feature_schema)
