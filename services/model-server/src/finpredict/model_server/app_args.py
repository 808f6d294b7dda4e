"""Typed arguments of the Serve application (the ``args`` block of ``serve_config.yaml``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from finpredict.common import addresses


class AppArgs(BaseModel):
    """What ``build_app(args)`` accepts; unknown keys are refused (typos fail at deploy time).

    Secrets and the OTLP endpoint are not arguments: each replica reads them from its own
    environment (:class:`~finpredict.model_server.config.ReplicaSettings`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    registry_target: str = Field(default=addresses.REGISTRY_ADDRESS, description="host:port of the registry.")
    registry_timeout_s: float = Field(default=30.0, gt=0, description="Deadline of registry calls.")
    max_models_per_replica: int = Field(default=4, ge=1, description="LRU bound of loaded versions.")
    batching: bool = Field(default=True, description="Coalesce concurrent requests with @serve.batch.")
    max_rows_per_request: int = Field(default=1024, ge=1, description="Larger requests are refused.")
    max_top_k: int = Field(default=10, ge=0, description="Largest top_k accepted.")
    watch_aliases: list[str] = Field(
        default_factory=list,
        description="Alias names (e.g. production, canary) whose new targets are preloaded on each replica "
        "as soon as the registry announces the move (WatchAliases). Empty disables watching.",
    )
    watch_models: list[str] = Field(
        default_factory=list, description="Models whose alias events are watched; empty means every model."
    )
    preload: list[str] = Field(
        default_factory=list, description="'model:version' ids loaded on replica start (before ready)."
    )


def parse_args(args: dict[str, Any] | AppArgs | None) -> AppArgs:
    if isinstance(args, AppArgs):
        return args
    return AppArgs.model_validate(args or {})


def model_id(name: str, version: int) -> str:
    """The multiplexed model id of a version (also the ``multiplexed_model_id`` call metadata)."""
    return f"{name}:{version}"


def parse_model_id(value: str) -> tuple[str, int]:
    name, sep, version = value.rpartition(":")
    if not sep or not name or not version.isdigit() or int(version) <= 0:
        raise ValueError(f"model id {value!r} is not '<model>:<version>'")
    return name, int(version)
