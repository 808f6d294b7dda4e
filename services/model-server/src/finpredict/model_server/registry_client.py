"""Fetches a model version from the registry: metadata, then the artifact, verified twice.

The registry streams the artifact after checking its own sha256; the model server checks the
bytes again against the registry's digest and against the manifest (``finpredict.modelio``)
before XGBoost parses them.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import grpc

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.channel import create_channel


class ArtifactFetchError(RuntimeError):
    """The registry refused or the downloaded bytes do not match; ``code`` is the gRPC status to return."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FetchedVersion:
    version: registry_pb2.ModelVersion
    raw: bytes


class RegistryClient:
    """A lazily opened aio channel to the registry with the replica's bearer token."""

    def __init__(self, target: str, token: str, timeout_s: float = 30.0) -> None:
        self._target = target
        self._token = token
        self._timeout = timeout_s
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None  # the generated stubs are typed for the sync API

    def stub(self) -> Any:
        if self._stub is None:
            self._channel = create_channel(self._target, max_message_bytes=64 * 1024 * 1024)
            self._stub = registry_pb2_grpc.RegistryServiceStub(self._channel)
        return self._stub

    def metadata(self) -> tuple[tuple[str, str], ...]:
        """The bearer token (the channel's interceptors add the trace context to every call)."""
        return tuple(bearer_metadata(self._token)) if self._token else ()

    async def fetch(self, name: str, version: int) -> FetchedVersion:
        where = f"{name}:{version}"
        stub = self.stub()
        try:
            got = await stub.GetVersion(
                registry_pb2.GetVersionRequest(model=name, version=version),
                metadata=self.metadata(),
                timeout=self._timeout,
            )
            mv = got.version
            if mv.status != registry_pb2.VERSION_STATUS_READY:
                raise ArtifactFetchError(grpc.StatusCode.FAILED_PRECONDITION, f"{where} is not READY")
            digest = hashlib.sha256()
            parts: list[bytes] = []
            expected_sha, expected_size = mv.artifact.sha256, mv.artifact.size_bytes
            call = stub.DownloadArtifact(
                registry_pb2.DownloadArtifactRequest(model=name, version=version),
                metadata=self.metadata(),
                timeout=self._timeout,
            )
            async for msg in call:
                if msg.sha256:
                    expected_sha, expected_size = msg.sha256, msg.size_bytes
                digest.update(msg.chunk)
                parts.append(msg.chunk)
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code not in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.DATA_LOSS):
                code = grpc.StatusCode.UNAVAILABLE
            raise ArtifactFetchError(code, f"registry refused {where}: {exc.details()}") from None
        raw = b"".join(parts)
        if len(raw) != expected_size or digest.hexdigest() != expected_sha:
            raise ArtifactFetchError(
                grpc.StatusCode.DATA_LOSS,
                f"artifact of {where}: got {len(raw)} bytes with sha256 {digest.hexdigest()}, "
                f"the registry announced {expected_size} bytes with sha256 {expected_sha}",
            )
        return FetchedVersion(mv, raw)

    def watch(self, model: str, after_event_id: int) -> Any:
        """The WatchAliases stream (an async iterator of ``WatchAliasesResponse``)."""
        return self.stub().WatchAliases(
            registry_pb2.WatchAliasesRequest(model=model, after_event_id=after_event_id),
            metadata=self.metadata(),
        )

    async def close(self) -> None:
        if self._channel is not None:
            await self._channel.close(None)
            self._channel = None
            self._stub = None
