"""Harness of the security tests: a call's status whatever its kind, downloads, files under a store."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc


def call_code(
    rpc: Any, request: Any, metadata: Sequence[tuple[str, str]] = (), timeout: float = 10
) -> grpc.StatusCode:
    """The status of one call (OK when it returns); streams are consumed."""
    try:
        result = rpc(
            iter(request) if isinstance(request, list) else request, metadata=tuple(metadata), timeout=timeout
        )
        if hasattr(result, "__iter__") and not hasattr(result, "SerializeToString"):
            for _ in result:
                pass
    except grpc.RpcError as exc:
        return exc.code()  # type: ignore[attr-defined,no-any-return]
    return grpc.StatusCode.OK


def download_bytes(
    rpc: Any, request: Any, metadata: Sequence[tuple[str, str]] = (), timeout: float = 10
) -> tuple[grpc.StatusCode, bytes]:
    """The status of a DownloadArtifact-like stream and the bytes it sent before ending."""
    chunks: list[bytes] = []
    try:
        for msg in rpc(request, metadata=tuple(metadata), timeout=timeout):
            chunks.append(msg.chunk)
    except grpc.RpcError as exc:
        return exc.code(), b"".join(chunks)  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, b"".join(chunks)


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())
