"""Helpers of the model-server tests: a dedicated Ray, a real registry, real models, gRPC calls."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.features import records_to_matrix
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG
from finpredict.modelio import build_manifest, sha256_hex
from finpredict.modelio.artifact import manifest_json
from finpredict.pipelines.register import schema_proto
from finpredict.stack import ray_nodes
from finpredict.testkit.evaluation import PASSING_GATES, lineage, reference_profile
from finpredict.testkit.models import TrainedModel
from finpredict.testkit.process import ServiceProcess, start_service, wait_for

ADMIN_TOKEN = "ms-admin-token-0123456789"
READER_TOKEN = "ms-reader-token-0123456789"
TOKENS = f"{ADMIN_TOKEN}=alice:admin,{READER_TOKEN}=model-server:reader"


# ----- Ray ---------------------------------------------------------------------------------------


HEAD = "head"
RAY_START_LOG = "ray-start.log"  # each node's `ray start` output, in its temp dir
NODE_MARKER = "FP_TEST_RAY_NODE"  # which node of the cluster a process belongs to


@dataclass
class RayNode:
    """A worker node (``ray start --address --block``, its own session) of a :class:`RayCluster`."""

    name: str
    proc: subprocess.Popen[bytes]
    temp_dir: Path
    marker: str

    def pids(self) -> list[int]:
        """Every live process of this node: ``ray start``, raylet, agents, workers, replicas."""
        return _marked_pids(f"FP_TEST_RAY={self.marker}", f"{NODE_MARKER}={self.name}")

    def kill(self) -> list[int]:
        """Takes the node away at once, as a lost machine: SIGKILL to its ``ray start`` session
        (raylet, agents) and to each of its workers and replicas (Ray gives each worker its own
        process group, so the session alone would leave them to notice the raylet's death).
        Returns the pids it killed."""
        pids = self.pids()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        return pids

    def served_calls(self, app: str = "model-server") -> int:
        """Calls this node's replicas of ``app`` answered (see :func:`served_calls`)."""
        return served_calls(self.temp_dir, app)


@dataclass
class RayCluster:
    address: str
    proc: subprocess.Popen[bytes]
    temp_dir: Path
    marker: str  # in the environment of every process of this cluster (to find our replicas)
    workers: list[RayNode] = field(default_factory=list)

    def replica_pids(self, app: str = "model-server", node: str | None = None) -> list[int]:
        """Pids of this cluster's replica processes of ``app`` (found by the cluster marker), on
        ``node`` only when given (:data:`HEAD` or a worker's name)."""
        markers = [f"FP_TEST_RAY={self.marker}"] + ([f"{NODE_MARKER}={node}"] if node else [])
        return _marked_pids(*markers, cmdline=f"ServeReplica:{app}:")

    def replicas_by_node(self, app: str = "model-server") -> dict[str, list[int]]:
        """Replica pids of ``app`` per node name (nodes without one are left out)."""
        nodes = [HEAD] + [w.name for w in self.workers]
        return {n: pids for n in nodes if (pids := self.replica_pids(app, n))}


def served_calls(temp_dir: Path, app: str = "model-server") -> int:
    """Calls answered by the replicas of ``app`` on the node whose ``--temp-dir`` is ``temp_dir``:
    the lines of their Serve access logs (``... -- CALL model-server OK 1.2ms``)."""
    pattern = re.compile(rf" -- CALL {re.escape(app)} \S+ [\d.]+ms$")
    logs = (temp_dir / "session_latest" / "logs" / "serve").glob("replica_*.log")
    lines = (line for log in logs for line in log.read_text(errors="replace").splitlines())
    return sum(1 for line in lines if pattern.search(line))


def _marked_pids(*markers: str, cmdline: str = "") -> list[int]:
    """Live (not zombie) processes whose environment holds every ``markers`` entry and whose
    command line contains ``cmdline``."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if cmdline and cmdline.encode() not in (entry / "cmdline").read_bytes():
                continue
            environ = (entry / "environ").read_bytes().split(b"\0")
            if not all(m.encode() in environ for m in markers):
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
        except OSError:
            continue
        out.append(int(entry.name))
    return sorted(out)


@contextlib.contextmanager
def ray_cluster(
    env: dict[str, str], num_cpus: int = 2, *, workers: int = 0, worker_cpus: int = 1
) -> Iterator[RayCluster]:
    """``ray start --head --block`` with its own temp dir and ports, and ``workers`` worker nodes
    (``ray start --address --block``, ``worker_cpus`` each) on the same host; each stopped by
    its own pid. Several nodes on one host: each worker's Serve proxy gets its own ports."""
    temp_dir = Path(tempfile.mkdtemp(prefix="fpray-"))
    marker = uuid.uuid4().hex
    port = free_port()
    full_env = {**os.environ, **env, "FP_TEST_RAY": marker, NODE_MARKER: HEAD, **ray_nodes.BASE_ENV}
    proc = _ray_start(temp_dir, full_env, ray_nodes.head_args(port, num_cpus))
    cluster = RayCluster(f"127.0.0.1:{port}", proc, temp_dir, marker)
    try:
        _wait_started(proc, temp_dir, "ray start --head")
        for i in range(workers):
            cluster.workers.append(_start_worker(cluster, full_env, f"worker{i + 1}", worker_cpus))
        yield cluster
    finally:
        for node in reversed(cluster.workers):
            _stop(node.proc)
            shutil.rmtree(node.temp_dir, ignore_errors=True)
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _start_worker(cluster: RayCluster, env: dict[str, str], name: str, num_cpus: int) -> RayNode:
    temp_dir = Path(tempfile.mkdtemp(prefix=f"fpray-{name}-"))
    node_env = {**env, NODE_MARKER: name, **ray_nodes.worker_env()}
    proc = _ray_start(temp_dir, node_env, ray_nodes.worker_args(cluster.address, num_cpus))
    node = RayNode(name, proc, temp_dir, cluster.marker)
    try:
        _wait_started(proc, temp_dir, f"ray start --address ({name})")
    except BaseException:
        _stop(proc)
        shutil.rmtree(temp_dir, ignore_errors=True)
        raise
    return node


def _ray_start(temp_dir: Path, env: dict[str, str], args: list[str]) -> subprocess.Popen[bytes]:
    with (temp_dir / RAY_START_LOG).open("wb") as log:
        return subprocess.Popen(
            ray_nodes.start_argv(temp_dir, args),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _wait_started(proc: subprocess.Popen[bytes], temp_dir: Path, what: str) -> None:
    log = temp_dir / RAY_START_LOG

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(log.read_text(errors="replace"))
        return ray_nodes.started(log)

    wait_for(up, 120, what)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # `ray start --block` tears down the processes it started when it gets SIGTERM.
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # our own session only
            proc.wait(timeout=10)


# ----- registry ----------------------------------------------------------------------------------


_PROFILES: dict[str, bytes] = {}


def training_profile(trained: TrainedModel) -> bytes:
    """The reference profile of ``trained``: its training records and its scores on them (cached)."""
    key = sha256_hex(trained.raw)
    if key not in _PROFILES:
        x = records_to_matrix(trained.records, trained.schema)
        scores = trained.booster.inplace_predict(x)
        _PROFILES[key] = reference_profile(trained.records, [float(s) for s in scores])
    return _PROFILES[key]


def register_requests(
    name: str,
    trained: TrainedModel,
    threshold: float = 0.5,
    *,
    gate_results: Sequence[types_pb2.GateResult] = PASSING_GATES,
    trigger: str = "manual",
    corrupt: bool = False,
) -> list[registry_pb2.RegisterVersionRequest]:
    """A RegisterVersion stream of ``trained`` (its manifest, schema and artifact in 64 KiB chunks)
    with what the pipeline registers: by default the four passing gates, lineage and a reference
    profile (:mod:`finpredict.testkit.evaluation`), so `production` may point at it. With
    ``corrupt`` the uploaded bytes differ from the manifest's sha256 (one bit flipped)."""
    manifest = build_manifest(trained.raw, trained.schema, {"best_iteration": 0})
    raw = trained.raw
    if corrupt:
        bad = bytearray(raw)
        bad[len(bad) // 2] ^= 0x01
        raw = bytes(bad)
    header = registry_pb2.VersionHeader(
        model=name,
        artifact_format="xgboost-ubj",
        manifest_json=manifest_json(manifest),
        artifact_sha256=sha256_hex(raw),
        feature_schema=schema_proto(trained.schema),
        threshold=threshold,
        metrics={g.name: g.value for g in gate_results},
        gate_results=gate_results,
        lineage=lineage(trigger),
        reference_profile=training_profile(trained),
    )
    return [registry_pb2.RegisterVersionRequest(header=header)] + [
        registry_pb2.RegisterVersionRequest(chunk=raw[i : i + 65536]) for i in range(0, len(raw), 65536)
    ]


class Registry:
    def __init__(self, proc: ServiceProcess) -> None:
        self.proc = proc
        self.channel = grpc.insecure_channel(proc.target)
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        self.md = bearer_metadata(ADMIN_TOKEN)

    @property
    def target(self) -> str:
        return self.proc.target

    def create_model(self, name: str) -> None:
        self.stub.CreateModel(registry_pb2.CreateModelRequest(name=name), metadata=self.md, timeout=30)

    def register(
        self, name: str, trained: TrainedModel, threshold: float = 0.5, *, corrupt: bool = False
    ) -> int:
        """Registers ``trained`` as the pipeline would (passing gates, lineage, profile: `production`
        may point at it); with ``corrupt`` the uploaded bytes differ from the manifest's sha256."""
        reqs = register_requests(name, trained, threshold, corrupt=corrupt)
        resp = self.stub.RegisterVersion(iter(reqs), metadata=self.md, timeout=60)
        return int(resp.version.version)

    def set_alias(self, name: str, alias: str, version: int) -> None:
        self.stub.SetAlias(
            registry_pb2.SetAliasRequest(model=name, alias=alias, version=version, reason="test"),
            metadata=self.md,
            timeout=30,
        )

    def close(self) -> None:
        self.channel.close()


# ----- model server ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServeOptions:
    """How a test deploys the model server, over the packaged serve_config.yaml: a fixed replica
    count, or ``autoscaling`` (an ``autoscaling_config``, e.g. with short delays); ``deployment``
    and ``args`` override the deployment's options and the application's arguments."""

    replicas: int = 2
    autoscaling: Mapping[str, Any] | None = None
    deployment: Mapping[str, Any] = field(default_factory=dict)
    args: Mapping[str, Any] = field(default_factory=dict)


def serve_config_for_tests(path: Path, options: ServeOptions | None = None) -> Path:
    """The packaged serve_config.yaml, sized for the test machine (by default a fixed replica count)."""
    options = options or ServeOptions()
    config: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    app = config["applications"][0]
    dep = app["deployments"][0]
    dep["autoscaling_config"] = dict(options.autoscaling or {}) or {
        "min_replicas": options.replicas,
        "max_replicas": options.replicas,
        "target_ongoing_requests": 16,
    }
    dep["ray_actor_options"] = {"num_cpus": 0.5}
    dep["health_check_period_s"] = 2
    dep.update(options.deployment)
    app["args"]["watch_aliases"] = ["production", "canary"]
    app["args"].update(options.args)
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class ModelServerClient:
    def __init__(self, target: str) -> None:
        self.target = target
        self.channel = grpc.insecure_channel(target)
        self.stub = pb_grpc.ModelServerServiceStub(self.channel)

    def predict(
        self,
        name: str,
        version: int,
        rows: list[dict[str, Any]],
        *,
        route: bool = True,
        timeout: float = 60,
        **kwargs: Any,
    ) -> pb.PredictResponse:
        md: tuple[tuple[str, str], ...] = (("application", "model-server"),)
        if route:
            md += (("multiplexed_model_id", f"{name}:{version}"),)
        req = pb.PredictRequest(
            model=types_pb2.ModelRef(name=name, version=version), rows=to_rows(rows), **kwargs
        )
        return self.stub.Predict(req, metadata=md, timeout=timeout)  # type: ignore[no-any-return]

    def load(self, name: str, version: int, timeout: float = 120) -> pb.LoadModelResponse:
        md = (("application", "model-server"), ("multiplexed_model_id", f"{name}:{version}"))
        req = pb.LoadModelRequest(model=types_pb2.ModelRef(name=name, version=version))
        return self.stub.LoadModel(req, metadata=md, timeout=timeout)  # type: ignore[no-any-return]

    def loaded(self) -> list[tuple[str, int]]:
        resp = self.stub.ListLoadedModels(
            pb.ListLoadedModelsRequest(), metadata=(("application", "model-server"),), timeout=30
        )
        return [(m.name, m.version) for m in resp.models]

    def close(self) -> None:
        self.channel.close()


def to_rows(records: list[dict[str, Any]]) -> list[pb.FeatureRow]:
    rows = []
    for rec in records:
        row = pb.FeatureRow()
        for k, v in rec.items():
            if v is None:
                row.features[k].Clear()
                row.features[k].SetInParent()
            elif isinstance(v, str):
                row.features[k].category = v
            else:
                row.features[k].number = float(v)
        rows.append(row)
    return rows


def start_model_server(
    tmp: Path, ray: RayCluster, registry: Registry, timeout: float = 300, options: ServeOptions | None = None
) -> tuple[ServiceProcess, int]:
    config = serve_config_for_tests(tmp / "serve_config.yaml", options)
    env = {
        "FINPREDICT_MODEL_SERVER_RAY_ADDRESS": ray.address,
        "FINPREDICT_MODEL_SERVER_SERVE_CONFIG": str(config),
        "FINPREDICT_MODEL_SERVER_SERVE_GRPC_PORT": "0",
        "FINPREDICT_MODEL_SERVER_SERVE_HTTP_PORT": "0",
        "FINPREDICT_MODEL_SERVER_REGISTRY_TARGET": registry.target,
        "FINPREDICT_MODEL_SERVER_LOG_FORMAT": "text",
        "FINPREDICT_MODEL_SERVER_SHUTDOWN_GRACE_S": "2",
        "RAY_AUTH_MODE": "disabled",
    }
    proc = start_service("model-server", tmp, env=env, timeout=timeout)
    ready_file = tmp / "model-server.ready.json"

    def port() -> int | None:
        info = json.loads(ready_file.read_text())
        return int(info["serve_grpc_port"]) if "serve_grpc_port" in info else None

    return proc, wait_for(port, 30, "serve gRPC port in the ready file")


@dataclass
class Served:
    """A model server deployed on the test Ray, with its client, Ray and registry."""

    proc: ServiceProcess
    client: ModelServerClient
    ray: RayCluster
    registry: Registry
