"""The model-server process: the shared gRPC skeleton (health, reflection, metrics, drain) as
the control plane of a Ray Serve application whose gRPC ingress serves the predictions.

Health is NOT_SERVING until the Serve app is RUNNING, follows the app's status afterwards, and
goes NOT_SERVING on SIGTERM (drain), after which the app is deleted (or the local Ray stopped).
"""

from __future__ import annotations

import asyncio
import json
import logging
from dataclasses import dataclass, field

from grpc_health.v1 import health_pb2

from finpredict.common.server import ServiceBinding, ServiceRunner
from finpredict.model_server.config import ModelServerSettings
from finpredict.model_server.driver import ServeDriver

log = logging.getLogger("finpredict.model_server")
SERVICE = "finpredict.serving.v1.ModelServerService"


def bindings() -> list[ServiceBinding]:
    """gRPC services on the control port (besides health and reflection): none, predictions go to Serve."""
    return []


@dataclass
class ModelServerRunner(ServiceRunner):
    """A :class:`ServiceRunner` whose health follows the Serve application's status."""

    driver: ServeDriver | None = None
    status: str = "STARTING"
    _monitor: asyncio.Task[None] | None = field(default=None, repr=False)

    async def start(self) -> int:
        port = await super().start()
        assert self._health is not None
        # No await between the skeleton's SERVING and this: nobody can observe SERVING early.
        await self._health.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
        await self._health.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
        self._monitor = asyncio.get_running_loop().create_task(self._supervise())
        self.on_shutdown.insert(0, self._stop_serve)
        return port

    async def _supervise(self) -> None:
        assert isinstance(self.settings, ModelServerSettings)
        assert self._health is not None
        self.driver = ServeDriver(self.settings)
        try:
            await asyncio.to_thread(self.driver.start)
        except Exception:
            log.exception("could not deploy the Serve application")
            self.request_stop()
            return
        announced = False
        while not self._stop.is_set():
            try:
                self.status = await asyncio.to_thread(self.driver.app_status)
            except Exception as exc:
                self.status = f"UNKNOWN ({exc})"
            healthy = self.status == "RUNNING"
            state = (
                health_pb2.HealthCheckResponse.SERVING
                if healthy
                else health_pb2.HealthCheckResponse.NOT_SERVING
            )
            await self._health.set("", state)
            await self._health.set(SERVICE, state)
            if healthy and not announced:
                announced = True
                self._write_ready()
                log.info("serve app running", extra={"serve_grpc_port": self.driver.grpc_port})
            await asyncio.sleep(1.0)

    def _write_ready(self) -> None:
        s = self.settings
        if s.ready_file is None or self.driver is None:
            return
        info = json.loads(s.ready_file.read_text()) if s.ready_file.exists() else {}
        info.update(serve_grpc_port=self.driver.grpc_port, serve_http_port=self.driver.http_port,
                    serve_app=self.driver.settings.app_name)  # fmt: skip
        tmp = s.ready_file.with_suffix(s.ready_file.suffix + ".tmp")
        tmp.write_text(json.dumps(info))
        tmp.replace(s.ready_file)

    async def _stop_serve(self) -> None:
        if self._monitor is not None:
            self._monitor.cancel()
        if self.driver is not None:
            await asyncio.to_thread(self.driver.stop)
            log.info("serve app stopped")
