"""What a local stack is made of: the finpredict services, the monitoring daemons, their start
order and default ports, and the probes that tell when each is ready."""

from __future__ import annotations

import urllib.error
import urllib.request

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from finpredict.common.addresses import ALERTMANAGER_PORT, LOCALHOST, PROMETHEUS_PORT

# The finpredict services, dependencies first (the console reads the other three).
SERVICES = ["registry", "model-server", "monitor", "gateway", "console"]
# Services that serve HTTP, not gRPC: their health is GET /healthz.
HTTP_SERVICES = frozenset({"console"})
# Monitoring daemons from the OS packages (optional: skipped with a warning when not installed).
DAEMONS = ["alertmanager", "prometheus"]
# Start order of everything: Alertmanager before the monitor (which posts to it), Prometheus
# last (it scrapes every service's metrics port).
COMPONENTS = ["registry", "alertmanager", "model-server", "monitor", "gateway", "console", "prometheus"]
DAEMON_BINARIES = {"prometheus": ("prometheus",), "alertmanager": ("prometheus-alertmanager", "alertmanager")}
DAEMON_PORTS = {"prometheus": PROMETHEUS_PORT, "alertmanager": ALERTMANAGER_PORT}
# Seconds each may take to become healthy: the model server starts Ray and deploys Serve.
START_TIMEOUT_S = {"model-server": 300.0}


def module(service: str) -> str:
    """The Python module that runs ``service`` (``python -m finpredict.model_server``)."""
    return f"finpredict.{service.replace('-', '_')}"


def env_prefix(service: str) -> str:
    """The prefix of ``service``'s settings (``FINPREDICT_MODEL_SERVER_``)."""
    return f"FINPREDICT_{service.replace('-', '_').upper()}_"


def grpc_healthy(target: str, timeout: float = 1.0) -> bool:
    """Whether the gRPC health service at ``target`` answers SERVING (within ``timeout`` seconds)."""
    try:
        with grpc.insecure_channel(target) as channel:
            request = health_pb2.HealthCheckRequest()
            status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=timeout).status
            return bool(status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def http_ok(url: str) -> bool:
    """Whether ``url`` answers 200 (a daemon's ``/-/ready``)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return bool(resp.status == 200)
    except urllib.error.HTTPError as err:  # 503 while starting
        err.close()
        return False
    except OSError:
        return False


def service_healthy(name: str, port: int) -> bool:
    """Whether the finpredict service ``name`` on loopback ``port`` is serving (gRPC health, or
    ``/healthz`` for an HTTP service)."""
    if name in HTTP_SERVICES:
        return http_ok(f"http://{LOCALHOST}:{port}/healthz")
    return grpc_healthy(f"{LOCALHOST}:{port}")
