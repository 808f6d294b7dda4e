"""Helpers shared by the security tests (imported by name; conftest puts this folder on sys.path)."""

from __future__ import annotations

import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from prometheus_client.parser import text_string_to_metric_families

from finpredict.common.testing import ServiceProcess


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


def scrape(proc: ServiceProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=10) as resp:
        return resp.read().decode()  # type: ignore[no-any-return]


def metric_value(proc: ServiceProcess, sample: str, **labels: str) -> float:
    """The value of one sample on the service's /metrics (0 when the series does not exist yet)."""
    for family in text_string_to_metric_families(scrape(proc)):
        for s in family.samples:
            if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return 0.0


def files_under(*roots: Path) -> list[Path]:
    return sorted(p for root in roots if root.exists() for p in root.rglob("*") if p.is_file())
