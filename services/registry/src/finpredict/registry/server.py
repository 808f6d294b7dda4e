"""Assembles the registry service on the shared server skeleton."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common.auth import BearerAuthInterceptor, TokenSpecError, parse_tokens
from finpredict.common.config import ConfigError, env_var_name
from finpredict.common.server import ServiceBinding
from finpredict.registry.config import RegistrySettings
from finpredict.registry.db import create_db_engine, migrate
from finpredict.registry.repo import Repository
from finpredict.registry.service import (
    METHOD_ROLES,
    ROLE_IMPLIES,
    SERVICE,
    SWEPT_UPLOADS,
    RegistryServicer,
    WandbLinker,
)
from finpredict.registry.store import ArtifactStore, LocalArtifactStore, StoreError

log = logging.getLogger("finpredict.registry")


@dataclass
class Registry:
    """Everything ``run_service`` needs to serve the registry."""

    bindings: list[ServiceBinding]
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]]
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)


def open_store(settings: RegistrySettings) -> ArtifactStore:
    """The configured artifact store: a local folder, or an S3 bucket (probed, not required to
    answer: while S3 is down the registry serves metadata and refuses artifact RPCs UNAVAILABLE)."""
    where = settings.resolved_artifact_store()
    if isinstance(where, Path):
        return LocalArtifactStore(where)
    from finpredict.registry.s3store import S3ArtifactStore  # boto3 only when configured

    store = S3ArtifactStore.from_settings(settings, where)
    try:
        store.probe()
    except StoreError as exc:
        log.warning("the S3 artifact store does not answer yet", extra={"error": str(exc)})
    else:
        log.info(
            "artifact store on S3", extra={"location": where.uri(), "endpoint": settings.s3_endpoint_url}
        )
    return store


def build(settings: RegistrySettings) -> Registry:
    """Opens the database (migrating it), sweeps the artifact store and wires the servicer."""
    settings.validate_extra()
    try:
        tokens = parse_tokens(settings.tokens.get_secret_value())
    except TokenSpecError as exc:
        raise ConfigError(f"{env_var_name(RegistrySettings, 'tokens')}: {exc}") from None
    if not tokens:
        log.warning(
            "no tokens configured: every registry RPC will be refused (set %s)",
            env_var_name(RegistrySettings, "tokens"),
        )
    engine = create_db_engine(settings.resolved_database_url())
    if settings.migrate_on_start:
        migrate(engine)
    store = open_store(settings)
    swept = store.sweep()
    SWEPT_UPLOADS.inc(swept)
    if swept:
        log.info("removed unfinished uploads", extra={"count": swept})
    servicer = RegistryServicer(
        Repository(engine),
        store,
        chunk_size=settings.chunk_size,
        max_artifact_bytes=settings.max_artifact_bytes,
        wandb=WandbLinker(settings.wandb_mode, settings.wandb_registry_path),
        watch_poll_s=settings.watch_poll_s,
    )

    async def dispose() -> None:
        engine.dispose()

    return Registry(
        bindings=[
            ServiceBinding(
                SERVICE,
                lambda server: registry_pb2_grpc.add_RegistryServiceServicer_to_server(servicer, server),
            )
        ],
        interceptors=[BearerAuthInterceptor(tokens, METHOD_ROLES, role_implies=ROLE_IMPLIES)],
        on_drain=[servicer.close],
        on_shutdown=[dispose],
    )
