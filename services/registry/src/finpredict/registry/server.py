"""Assembles the registry service's gRPC services on the shared server skeleton."""

from __future__ import annotations

from finpredict.common.server import ServiceBinding


def bindings() -> list[ServiceBinding]:
    """The gRPC services the registry mounts (besides health and reflection, which every service has)."""
    return []
