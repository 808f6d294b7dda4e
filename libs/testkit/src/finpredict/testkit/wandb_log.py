"""Reads the records of an offline W&B run file (``run-<id>.wandb``) without the W&B service.

The file is a LevelDB-style log: a 7-byte header (``:W&B``, magic, version), then 32 KiB
blocks of chunks, each with a 7-byte header (crc32, length, type: 1 full, 2 first, 3 middle,
4 last) carrying a serialised ``wandb_internal_pb2.Record``.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from wandb.proto import wandb_internal_pb2 as pb

BLOCK = 32768


def records(path: Path) -> Iterator[Any]:
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B run file"
    pos, buf = 7, b""
    while pos + 7 <= len(data):
        left = BLOCK - (pos % BLOCK)
        if left < 7:
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            yield _parse(chunk)
        elif kind == 2:
            buf = chunk
        elif kind == 3:
            buf += chunk
        elif kind == 4:
            yield _parse(buf + chunk)
            buf = b""


def _parse(raw: bytes) -> Any:
    rec = pb.Record()  # type: ignore[attr-defined]  # (wandb ships its protos without stubs)
    rec.ParseFromString(raw)
    return rec


def summary(path: Path) -> dict[str, Any]:
    """The run's final summary (flat keys only)."""
    out: dict[str, Any] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "summary":
            for item in rec.summary.update:
                if item.key:
                    out[item.key] = json.loads(item.value_json)
    return out


def config(path: Path) -> dict[str, Any]:
    """The run's config as given to ``wandb.init`` (the run record)."""
    out: dict[str, Any] = {}
    for rec in records(path):
        if rec.WhichOneof("record_type") == "run":
            for item in rec.run.config.update:
                if item.key:
                    out[item.key] = json.loads(item.value_json)
    return out


def artifacts(path: Path) -> list[Any]:
    return [rec.artifact for rec in records(path) if rec.WhichOneof("record_type") == "artifact"]
