"""The console's view of the platform: gRPC stubs of the registry, the gateway's rollout admin API
and the monitor, over channels that use TLS when a CA is configured.

Reads carry the console's own (reader) token per service. Admin actions carry the token of the
person who signed in instead (:meth:`Backends.as_user`), so the gateway authorises and audits
them under that person's subject, never the console's.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import grpc

from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.channel import create_channel
from finpredict.console import metrics
from finpredict.console.config import ConsoleSettings

T = TypeVar("T")


class BackendError(Exception):
    """A backend call failed; the message names the service and the gRPC status, never a token."""

    def __init__(self, service: str, code: grpc.StatusCode, details: str) -> None:
        self.service = service
        self.code = code
        super().__init__(f"{service}: {code.name}: {details}")


def _metadata(token: str) -> tuple[tuple[str, str], ...]:
    return bearer_metadata(token) if token else ()


@dataclass
class Backends:
    """Stubs and call metadata of the three services the console reads."""

    registry: registry_pb2_grpc.RegistryServiceStub
    rollouts: rollout_pb2_grpc.RolloutServiceStub
    monitor: monitor_pb2_grpc.MonitorServiceStub
    metadata: dict[str, tuple[tuple[str, str], ...]]
    timeout_s: float
    channels: list[grpc.aio.Channel] = field(default_factory=list)

    @classmethod
    def connect(cls, s: ConsoleSettings) -> Backends:
        def channel(target: str) -> grpc.aio.Channel:
            return create_channel(
                target,
                tls_ca_file=s.tls_ca_file,
                tls_cert_file=s.tls_client_cert_file,
                tls_key_file=s.tls_client_key_file,
                max_message_bytes=s.max_message_bytes,
            )

        registry, gateway, monitor = (
            channel(t) for t in (s.registry_target, s.gateway_target, s.monitor_target)
        )
        return cls(
            registry=registry_pb2_grpc.RegistryServiceStub(registry),
            rollouts=rollout_pb2_grpc.RolloutServiceStub(gateway),
            monitor=monitor_pb2_grpc.MonitorServiceStub(monitor),
            metadata={
                "registry": _metadata(s.registry_token.get_secret_value()),
                "gateway": _metadata(s.gateway_token.get_secret_value()),
                "monitor": _metadata(s.monitor_token.get_secret_value()),
            },
            timeout_s=s.call_timeout_s,
            channels=[registry, gateway, monitor],
        )

    async def call(
        self, service: str, method: Callable[..., T], request: Any, *, token: str | None = None
    ) -> T:
        """One unary call to ``service`` with the console's token (or ``token``, a signed-in
        person's); :class:`BackendError` when it fails. (The generated stubs are typed for sync
        channels: on an aio channel the call returns an awaitable of the response.)"""
        md = _metadata(token) if token is not None else self.metadata[service]
        try:
            return await cast(Awaitable[T], method(request, metadata=md, timeout=self.timeout_s))
        except grpc.aio.AioRpcError as exc:
            metrics.BACKEND_ERRORS.labels(service, exc.code().name).inc()
            raise BackendError(service, exc.code(), exc.details() or "") from None

    async def close(self) -> None:
        for ch in self.channels:
            await ch.close(None)
