"""What the gateway knows of the registry: `production` per model and each version's schema.

Versions are immutable, so their schema, threshold and reference profile are cached for the life
of the process. The profile is checked against the sha256 the registry recorded and decoded
(:func:`finpredict.common.reference_profile.verified_profile`, as the monitor does); a version
without a usable one still serves, and its rollouts fall back to comparing scores with stable's.
The `production` alias is cached for ``alias_ttl_s`` and kept when the registry cannot be
reached (serving goes on with the last version it knew; a model it never resolved answers
UNAVAILABLE). Alias moves made by this gateway (promotion) invalidate the cache at once.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.common.reference_profile import ProfileError, verified_profile
from finpredict.gateway.inputs import ProfileColumns

log = logging.getLogger("finpredict.gateway.catalog")

PRODUCTION = "production"


class CatalogError(Exception):
    """The registry answered with an error for a model or version; ``code`` is what to return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class VersionInfo:
    """What routing and validation need of one model version."""

    model: str
    version: int
    schema: types_pb2.FeatureSchema
    threshold: float
    columns: ProfileColumns | None = None  # its reference profile's columns (None: no usable profile)

    @property
    def feature_names(self) -> list[str]:
        return [spec.name for spec in self.schema.features]

    @functools.cached_property
    def specs(self) -> dict[str, types_pb2.FeatureSpec]:
        """The schema's features by name (built once per version)."""
        return {spec.name: spec for spec in self.schema.features}


class Catalog:
    """Cached reads of the registry for the request path."""

    def __init__(
        self,
        stub: Any,
        metadata: Callable[[], tuple[tuple[str, str], ...]],
        alias_ttl_s: float = 1.0,
        timeout_s: float = 2.0,
    ) -> None:
        self._stub = stub
        self._metadata = metadata
        self._ttl = alias_ttl_s
        self._timeout = timeout_s
        self._versions: dict[tuple[str, int], VersionInfo] = {}
        self._production: dict[str, tuple[int, float]] = {}  # model -> (version, fetched at)
        self._locks: dict[str, asyncio.Lock] = {}
        self._refreshing: dict[str, asyncio.Task[None]] = {}

    async def production(self, model: str) -> int:
        """The version `production` points at.

        Cached for ``alias_ttl_s``; after that the cached value is still answered at once while
        one background task refreshes it, so a slow or hung registry never stalls scoring. Only
        a model never resolved waits for the registry.
        """
        cached = self._production.get(model)
        if cached is not None:
            if time.monotonic() - cached[1] >= self._ttl and model not in self._refreshing:
                task = asyncio.get_running_loop().create_task(self._refresh(model))
                self._refreshing[model] = task
                task.add_done_callback(lambda _t: self._refreshing.pop(model, None))
            return cached[0]
        lock = self._locks.setdefault(model, asyncio.Lock())
        async with lock:
            cached = self._production.get(model)
            if cached is not None:
                return cached[0]
            return await self._resolve(model)

    async def _refresh(self, model: str) -> None:
        try:
            await self._resolve(model)
        except CatalogError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE and model in self._production:
                log.warning(
                    "registry unreachable, serving the last known production version",
                    extra={"model": model, "version": self._production[model][0]},
                )

    async def _resolve(self, model: str) -> int:
        try:
            got = await self._stub.GetVersion(
                registry_pb2.GetVersionRequest(model=model, alias=PRODUCTION),
                metadata=self._metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                self._production.pop(model, None)
                raise CatalogError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"model {model!r} has no production version (or does not exist)",
                ) from None
            raise _error(exc, f"{model}@production") from None
        self._remember(got.version)
        self._production[model] = (int(got.version.version), time.monotonic())
        return int(got.version.version)

    def invalidate(self, model: str) -> None:
        self._production.pop(model, None)

    async def version(self, model: str, version: int) -> VersionInfo:
        """Schema and threshold of ``model`` version ``version`` (cached forever)."""
        info = self._versions.get((model, version))
        if info is not None:
            return info
        try:
            got = await self._stub.GetVersion(
                registry_pb2.GetVersionRequest(model=model, version=version),
                metadata=self._metadata(),
                timeout=self._timeout,
            )
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                raise CatalogError(
                    grpc.StatusCode.NOT_FOUND, f"model {model!r} has no version {version}"
                ) from None
            raise _error(exc, f"{model}:{version}") from None
        return self._remember(got.version)

    def _remember(self, v: registry_pb2.ModelVersion) -> VersionInfo:
        known = self._versions.get((v.model, int(v.version)))
        if known is not None:
            return known
        columns = None
        try:
            columns = ProfileColumns(verified_profile(v, drift_core.Profile.from_bytes).profile)
        except ProfileError as exc:
            level = logging.INFO if exc.reason == "no_profile" else logging.ERROR
            log.log(
                level,
                "no reference profile: its rollouts compare scores with stable's",
                extra={"model": v.model, "version": v.version, "reason": exc.reason, "detail": str(exc)},
            )
        info = VersionInfo(v.model, int(v.version), v.feature_schema, float(v.threshold), columns)
        self._versions[(info.model, info.version)] = info
        return info

    async def set_production(self, model: str, version: int, expected: int, reason: str) -> None:
        """Moves `production` with compare-and-set (raises the registry's error as is)."""
        await self._stub.SetAlias(
            registry_pb2.SetAliasRequest(
                model=model, alias=PRODUCTION, version=version, expected_version=expected, reason=reason
            ),
            metadata=self._metadata(),
            timeout=self._timeout,
        )
        self.invalidate(model)


def _error(exc: grpc.aio.AioRpcError, what: str) -> CatalogError:
    """The status for a failed registry lookup: a name the registry refuses is the caller's
    error (never worth a retry); anything else means the registry is unavailable."""
    if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
        return CatalogError(grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {exc.details()}")
    return CatalogError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable looking up {what}")
