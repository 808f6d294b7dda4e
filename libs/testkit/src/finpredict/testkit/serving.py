"""Helpers of the model-server tests: a dedicated Ray, a real registry, real models, gRPC calls."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG
from finpredict.modelio import build_manifest, sha256_hex
from finpredict.modelio.artifact import manifest_json
from finpredict.pipelines.register import schema_proto
from finpredict.testkit.models import TrainedModel
from finpredict.testkit.process import ServiceProcess, start_service, wait_for

ADMIN_TOKEN = "ms-admin-token-0123456789"
READER_TOKEN = "ms-reader-token-0123456789"
TOKENS = f"{ADMIN_TOKEN}=alice:admin,{READER_TOKEN}=model-server:reader"
VENV_BIN = Path(sys.executable).parent


# ----- Ray ---------------------------------------------------------------------------------------


@dataclass
class RayCluster:
    address: str
    proc: subprocess.Popen[bytes]
    temp_dir: Path
    marker: str  # in the environment of every process of this cluster (to find our replicas)

    def replica_pids(self, app: str = "model-server") -> list[int]:
        """Pids of this cluster's replica processes of ``app`` (found by the cluster marker)."""
        out = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes()
                if f"ServeReplica:{app}:".encode() not in cmd:
                    continue
                if f"FP_TEST_RAY={self.marker}".encode() not in (entry / "environ").read_bytes():
                    continue
            except OSError:
                continue
            out.append(int(entry.name))
        return sorted(out)


@contextlib.contextmanager
def ray_cluster(env: dict[str, str], num_cpus: int = 2) -> Iterator[RayCluster]:
    """``ray start --head --block`` with its own temp dir and ports; stopped by its own pid."""
    temp_dir = Path(tempfile.mkdtemp(prefix="fpray-"))
    marker = uuid.uuid4().hex
    port = free_port()
    full_env = {
        **os.environ,
        **env,
        "FP_TEST_RAY": marker,
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
    }
    log = (temp_dir / "ray-start.log").open("wb")
    proc = subprocess.Popen(
        [
            str(VENV_BIN / "ray"), "start", "--head", "--block",
            f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
            f"--temp-dir={temp_dir}", "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}", f"--min-worker-port={free_port()}",
            "--max-worker-port=0",
        ],
        env=full_env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    cluster = RayCluster(f"127.0.0.1:{port}", proc, temp_dir, marker)

    def up() -> bool:
        if proc.poll() is not None:
            raise RuntimeError((temp_dir / "ray-start.log").read_text(errors="replace"))
        return "Ray runtime started" in (temp_dir / "ray-start.log").read_text(errors="replace")

    try:
        wait_for(up, 120, "ray start --head")
        yield cluster
    finally:
        # `ray start --block` tears down the processes it started when it gets SIGTERM.
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # our own session only
                proc.wait(timeout=10)
        log.close()
        shutil.rmtree(temp_dir, ignore_errors=True)


# ----- registry ----------------------------------------------------------------------------------


def register_requests(
    name: str,
    trained: TrainedModel,
    threshold: float = 0.5,
    *,
    gate_results: Sequence[types_pb2.GateResult] = (),
    corrupt: bool = False,
) -> list[registry_pb2.RegisterVersionRequest]:
    """A RegisterVersion stream of ``trained`` (its manifest, schema and artifact in 64 KiB chunks);
    with ``corrupt`` the uploaded bytes differ from the manifest's sha256 (one bit flipped)."""
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
        gate_results=gate_results,
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
        """Registers ``trained``; with ``corrupt`` the uploaded bytes differ from the manifest's sha256."""
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


def serve_config_for_tests(path: Path, replicas: int = 2) -> Path:
    """The packaged serve_config.yaml, sized for the test machine (fixed replica count)."""
    config: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    dep = config["applications"][0]["deployments"][0]
    dep["autoscaling_config"] = {
        "min_replicas": replicas,
        "max_replicas": replicas,
        "target_ongoing_requests": 16,
    }
    dep["ray_actor_options"] = {"num_cpus": 0.5}
    dep["health_check_period_s"] = 2
    config["applications"][0]["args"]["watch_aliases"] = ["production", "canary"]
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
    tmp: Path, ray: RayCluster, registry: Registry, timeout: float = 300
) -> tuple[ServiceProcess, int]:
    config = serve_config_for_tests(tmp / "serve_config.yaml")
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
