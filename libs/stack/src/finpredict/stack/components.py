"""What a local stack is made of: the finpredict services, the monitoring daemons, the cluster
profile's infrastructure, their start order per profile and default ports, and the probes that
tell when each is ready."""

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
# What the cluster profile runs besides: PostgreSQL (the registry's and the gateways' databases),
# the S3 server (artifacts, DVC remote), a Ray head and a second Ray node on this host.
INFRA = ["postgres", "s3", "ray-head", "ray-worker"]
RAY_NODES = ("ray-head", "ray-worker")
# Second replicas of a service: component name -> service.
REPLICAS = {"gateway-2": "gateway"}
# The components of each profile in start order: Alertmanager before the monitor (which posts to
# it), Prometheus last (it scrapes every service's metrics port); in the cluster profile the
# databases, S3 and Ray before the services that use them.
PROFILES = {
    "embedded": ["registry", "alertmanager", "model-server", "monitor", "gateway", "console", "prometheus"],
    "cluster": [
        "postgres", "s3", "registry", "alertmanager", "ray-head", "ray-worker", "model-server", "monitor",
        "gateway", "gateway-2", "console", "prometheus",
    ],
}  # fmt: skip
DEFAULT_PROFILE = "embedded"
# Every component (of any profile) in start order: what `down` and `status` look at.
COMPONENTS = PROFILES["cluster"]
DAEMON_BINARIES = {"prometheus": ("prometheus",), "alertmanager": ("prometheus-alertmanager", "alertmanager")}
DAEMON_PORTS = {"prometheus": PROMETHEUS_PORT, "alertmanager": ALERTMANAGER_PORT}
# The cluster profile's default ports (off the usual ones, so a system PostgreSQL, a MinIO or a
# Ray of one's own on this machine is left alone); the ray worker has none of its own.
INFRA_PORTS = {"postgres": 55432, "s3": 59000, "ray-head": 56379}
# Logical CPUs of each Ray node of the cluster profile (two in all, as the embedded local Ray).
RAY_NODE_CPUS = 1
# The cluster profile's databases (on its PostgreSQL) and buckets (on its S3 server).
DATABASES = ("registry", "gateway")
ARTIFACT_BUCKET = "finpredict-artifacts"
DVC_BUCKET = "finpredict-dvc"
# Seconds each may take to become healthy: the model server starts Ray and deploys Serve.
START_TIMEOUT_S = {"model-server": 300.0}


def service_of(name: str) -> str:
    """The finpredict service a component runs (``gateway-2`` runs the gateway)."""
    return REPLICAS.get(name, name)


def module(service: str) -> str:
    """The Python module that runs ``service`` (``python -m finpredict.model_server``)."""
    return f"finpredict.{service_of(service).replace('-', '_')}"


def env_prefix(service: str) -> str:
    """The prefix of ``service``'s settings (``FINPREDICT_MODEL_SERVER_``)."""
    return f"FINPREDICT_{service_of(service).replace('-', '_').upper()}_"


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
