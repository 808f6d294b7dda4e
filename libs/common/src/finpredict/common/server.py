"""The gRPC server skeleton every finpredict service runs on.

- ``grpc.aio`` server with the observability interceptor (plus any service interceptors),
- the standard ``grpc.health.v1.Health`` service and server reflection (method symbols too),
- ``INVALID_ARGUMENT`` for requests whose bytes are not a protobuf message,
- Prometheus ``/metrics`` over HTTP,
- plaintext by default, TLS or mutual TLS by settings,
- graceful drain on SIGTERM/SIGINT: health goes NOT_SERVING, new RPCs keep being served for
  ``drain_delay_s`` (so load balancers notice), then in-flight RPCs get ``shutdown_grace_s`` to
  finish, then shutdown hooks run and the process exits 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from finpredict.common.config import ServiceSettings
from finpredict.common.decoding import DecodeErrorInterceptor
from finpredict.common.interceptors import ObservabilityInterceptor
from finpredict.common.logging import configure_logging
from finpredict.common.metrics import start_metrics_server
from finpredict.common.reflection import enable_reflection
from finpredict.common.telemetry import configure_tracing, shutdown_tracing

log = logging.getLogger("finpredict.server")


@dataclass(frozen=True)
class ServiceBinding:
    """A gRPC service to mount: its full name (for health and reflection) and how to add it."""

    full_name: str
    add_to_server: Callable[[grpc.aio.Server], None]


@dataclass
class ServiceRunner:
    """Runs one finpredict service until it is told to stop, then drains it."""

    name: str
    settings: ServiceSettings
    bindings: Sequence[ServiceBinding]
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = ()
    on_shutdown: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    port: int = 0
    metrics_port: int = -1
    _server: grpc.aio.Server | None = None
    _health: HealthServicer | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    # Run when draining starts, before in-flight RPCs get their grace period (e.g. to end
    # long-lived server streams so they do not hold the shutdown for the whole grace).
    on_drain: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # Run inside the event loop before the services are mounted (open channels, start tasks).
    on_start: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def start(self) -> int:
        """Runs the start hooks, binds and starts the server; returns the bound gRPC port."""
        s = self.settings
        for start_hook in self.on_start:
            await start_hook()
        server = grpc.aio.server(
            # Innermost last: undecodable requests are refused after authentication.
            interceptors=[ObservabilityInterceptor(self.name), *self.interceptors, DecodeErrorInterceptor()],
            options=[
                ("grpc.max_send_message_length", s.max_message_bytes),
                ("grpc.max_receive_message_length", s.max_message_bytes),
                ("grpc.so_reuseport", 0),
                # Clients ping idle streams every 30 s (channel.py); accept that instead of
                # answering GOAWAY "too_many_pings" (gRPC's default minimum is 5 minutes).
                ("grpc.http2.min_ping_interval_without_data_ms", 20_000),
                ("grpc.keepalive_permit_without_calls", 1),
            ],
        )
        for binding in self.bindings:
            binding.add_to_server(server)
        self._health = HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        names = [b.full_name for b in self.bindings]
        enable_reflection([*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name], server)
        address = f"{s.host}:{s.port}"
        if s.tls_cert_file is not None and s.tls_key_file is not None:
            creds = grpc.ssl_server_credentials(
                [(s.tls_key_file.read_bytes(), s.tls_cert_file.read_bytes())],
                root_certificates=s.tls_client_ca_file.read_bytes() if s.tls_client_ca_file else None,
                require_client_auth=s.tls_client_ca_file is not None,
            )
            self.port = server.add_secure_port(address, creds)
        else:
            self.port = server.add_insecure_port(address)
        if self.port == 0:
            raise RuntimeError(f"could not bind gRPC server to {address}")
        await server.start()
        self._server = server
        if s.metrics_port >= 0:
            self.metrics_port = start_metrics_server(s.host, s.metrics_port)
        for name in ["", *names]:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        ready = {
            "service": self.name,
            "pid": os.getpid(),
            "host": s.host,
            "port": self.port,
            "metrics_port": self.metrics_port,
            "tls": s.tls_cert_file is not None,
        }
        if s.ready_file is not None:
            tmp = s.ready_file.with_suffix(s.ready_file.suffix + ".tmp")
            tmp.write_text(json.dumps(ready))
            tmp.replace(s.ready_file)  # atomic: readers never see a half-written file
        log.info("serving", extra=ready)
        return self.port

    def request_stop(self) -> None:
        """Asks the runner to drain and stop (what SIGTERM does)."""
        self._stop.set()

    async def drain(self) -> None:
        """Health NOT_SERVING, wait the drain delay, let in-flight RPCs finish, run hooks."""
        assert self._server is not None
        assert self._health is not None
        log.info(
            "draining",
            extra={
                "drain_delay_s": self.settings.drain_delay_s,
                "shutdown_grace_s": self.settings.shutdown_grace_s,
            },
        )
        await self._health.enter_graceful_shutdown()
        if self.settings.drain_delay_s > 0:
            await asyncio.sleep(self.settings.drain_delay_s)
        for hook in self.on_drain:
            try:
                await hook()
            except Exception:
                log.exception("drain hook failed")
        await self._server.stop(self.settings.shutdown_grace_s)
        for hook in self.on_shutdown:
            try:
                await hook()
            except Exception:
                log.exception("shutdown hook failed")
        log.info("stopped")

    async def run(self) -> None:
        """Starts, waits for SIGTERM/SIGINT (or :meth:`request_stop`), then drains."""
        await self.start()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)
        await self._stop.wait()
        await self.drain()
        shutdown_tracing()


def run_service(
    name: str,
    settings: ServiceSettings,
    bindings: Sequence[ServiceBinding],
    interceptors: Sequence[grpc.aio.ServerInterceptor[Any, Any]] = (),
    on_shutdown: Sequence[Callable[[], Awaitable[None]]] = (),
    on_drain: Sequence[Callable[[], Awaitable[None]]] = (),
    on_start: Sequence[Callable[[], Awaitable[None]]] = (),
) -> None:
    """Configures logs and tracing, then runs the service in a fresh event loop until stopped."""
    configure_logging(name, settings.log_level, settings.log_format)
    configure_tracing(name, settings.otlp_endpoint)
    runner = ServiceRunner(
        name,
        settings,
        bindings,
        interceptors,
        list(on_shutdown),
        on_drain=list(on_drain),
        on_start=list(on_start),
    )
    asyncio.run(runner.run())
