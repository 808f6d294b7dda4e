"""Helpers of the CLI tests: a real registry and a real gateway with no model server (no Ray), and
an in-process stand-in ScoringService for the scoring command's success path."""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc
from typer import Typer
from typer.testing import CliRunner, Result

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.testing import ServiceProcess, start_service
from finpredict.features import FeatureSchema
from finpredict.modelio import build_manifest, sha256_hex
from finpredict.modelio.artifact import manifest_json
from finpredict.modelio.testing import TrainedModel

# Registry: the test's operator and the gateway's controller (admin: it moves `production`).
REGISTRY_ADMIN = "cli-registry-admin-0123456789"
REGISTRY_CONTROLLER = "cli-registry-controller-0123456789"
REGISTRY_TOKENS = f"{REGISTRY_ADMIN}=alice:admin,{REGISTRY_CONTROLLER}=rollout-controller:admin"
# Gateway: an operator (admin) and a scoring client (reader).
ADMIN_TOKEN = "cli-gateway-admin-0123456789"
READER_TOKEN = "cli-gateway-reader-0123456789"
GATEWAY_TOKENS = f"{ADMIN_TOKEN}=ops:admin,{READER_TOKEN}=lending-app:reader"

_names = itertools.count(1)
_KINDS = {
    "numeric": types_pb2.FEATURE_TYPE_NUMERIC,
    "integer": types_pb2.FEATURE_TYPE_INTEGER,
    "categorical": types_pb2.FEATURE_TYPE_CATEGORICAL,
}
PASSING_GATES = [
    types_pb2.GateResult(
        name="auc_roc",
        value=0.8,
        threshold=0.7,
        comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL,
        passed=True,
    )
]


def unique(prefix: str) -> str:
    return f"{prefix}-{os.getpid()}-{next(_names)}"


def free_port() -> int:
    """A loopback port nothing listens on (the gateway's model server in these tests)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def schema_proto(schema: FeatureSchema) -> types_pb2.FeatureSchema:
    out = types_pb2.FeatureSchema()
    for f in schema.features:
        spec = out.features.add(
            name=f.name, type=_KINDS[f.kind], nullable=f.nullable, categories=list(f.categories)
        )
        if f.min is not None:
            spec.min = f.min
        if f.max is not None:
            spec.max = f.max
    return out


class RegistryAdmin:
    """The operator's calls to the registry: models, versions with passing gates, aliases."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        self.md = bearer_metadata(REGISTRY_ADMIN)

    def create_model(self, name: str) -> None:
        self.stub.CreateModel(registry_pb2.CreateModelRequest(name=name), metadata=self.md, timeout=30)

    def register(self, name: str, trained: TrainedModel, threshold: float = 0.5) -> int:
        manifest = build_manifest(trained.raw, trained.schema, {"best_iteration": 0})
        header = registry_pb2.VersionHeader(
            model=name,
            artifact_format="xgboost-ubj",
            manifest_json=manifest_json(manifest),
            artifact_sha256=sha256_hex(trained.raw),
            feature_schema=schema_proto(trained.schema),
            threshold=threshold,
            gate_results=PASSING_GATES,
        )
        raw = trained.raw
        reqs = [registry_pb2.RegisterVersionRequest(header=header)] + [
            registry_pb2.RegisterVersionRequest(chunk=raw[i : i + 65536]) for i in range(0, len(raw), 65536)
        ]
        resp = self.stub.RegisterVersion(iter(reqs), metadata=self.md, timeout=60)
        return int(resp.version.version)

    def set_production(self, name: str, version: int) -> None:
        req = registry_pb2.SetAliasRequest(model=name, alias="production", version=version, reason="test")
        self.stub.SetAlias(req, metadata=self.md, timeout=30)

    def production(self, name: str) -> int:
        req = registry_pb2.GetVersionRequest(model=name, alias="production")
        return int(self.stub.GetVersion(req, metadata=self.md, timeout=30).version.version)

    def close(self) -> None:
        self.channel.close()


@dataclass
class CliStack:
    registry: ServiceProcess
    gateway: ServiceProcess
    admin: RegistryAdmin
    trained: tuple[TrainedModel, TrainedModel]

    @property
    def target(self) -> str:
        return str(self.gateway.target)

    def model(self, prefix: str = "cli") -> str:
        """A fresh model with v1 in production and v2 registered (the candidate)."""
        name = unique(prefix)
        self.admin.create_model(name)
        v1 = self.admin.register(name, self.trained[0])
        self.admin.register(name, self.trained[1])
        self.admin.set_production(name, v1)
        return name


@contextmanager
def cli_stack(tmp: Path, trained: tuple[TrainedModel, TrainedModel]) -> Iterator[CliStack]:
    """A registry and a gateway whose model server address has nothing behind it (no monitor)."""
    registry = start_service(
        "registry",
        tmp / "registry",
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "registry" / "data"),
            "FINPREDICT_REGISTRY_TOKENS": REGISTRY_TOKENS,
            "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
            "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "1",
        },
    )
    try:
        gateway = start_service(
            "gateway",
            tmp / "gateway",
            env={
                "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
                "FINPREDICT_GATEWAY_DATA_DIR": str(tmp / "gateway" / "data"),
                "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry.target,
                "FINPREDICT_GATEWAY_REGISTRY_TOKEN": REGISTRY_CONTROLLER,
                "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": f"127.0.0.1:{free_port()}",
                "FINPREDICT_GATEWAY_MONITOR_TARGET": "",
                "FINPREDICT_GATEWAY_BACKEND_RETRIES": "0",
                # No traffic flows here, so the analysis loop has nothing to do; a long tick also keeps
                # it from racing PromoteRollout (both call the controller's _promote concurrently:
                # the loser's CAS conflict then marks a promoted rollout ABORTED).
                "FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "3600",
                "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
                "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "1",
            },
        )
    except BaseException:
        registry.stop()
        raise
    admin = RegistryAdmin(registry.target)
    try:
        yield CliStack(registry, gateway, admin, trained)
    finally:
        admin.close()
        gateway.stop()
        registry.stop()


def invoke(app: Typer, args: list[str], target: str, token: str) -> Result:
    """Runs a CLI command in-process with the gateway target and token from the environment."""
    env = {"FINPREDICT_GATEWAY_TARGET": target, "FINPREDICT_TOKEN": token, "COLUMNS": "250"}
    return CliRunner().invoke(app, args, env=env)


class FakeScoring(spb_grpc.ScoringServiceServicer):
    """A stand-in ScoringService that records what it got: the CLI's success path without Ray."""

    def __init__(self) -> None:
        self.batches: list[list[spb.Application]] = []

    def _score(self, model: str, app: spb.Application, explain: bool, top_k: int) -> spb.Score:
        debt = app.features["debt"].number if "debt" in app.features else 0.0
        score = min(debt / 100_000, 1.0)
        return spb.Score(
            request_id=f"req-{app.entity_id}",
            entity_id=app.entity_id,
            score=score,
            decision=spb.DECISION_DECLINE if score >= 0.5 else spb.DECISION_APPROVE,
            threshold=0.5,
            model=types_pb2.ModelRef(name=model, version=7),
            variant=spb.VARIANT_CANARY,
            reason_codes=[
                types_pb2.ReasonCode(code=f"R{i:02d}", feature="debt", contribution=0.5 - i / 10)
                for i in range(top_k if explain else 0)
            ],
        )

    def Score(self, request: spb.ScoreRequest, context: grpc.ServicerContext) -> spb.ScoreResponse:
        self.batches.append([request.application])
        top_k = request.top_k or 4
        return spb.ScoreResponse(
            result=self._score(request.model, request.application, request.explain, top_k)
        )

    def ScoreBatch(
        self, request: spb.ScoreBatchRequest, context: grpc.ServicerContext
    ) -> spb.ScoreBatchResponse:
        self.batches.append(list(request.applications))
        top_k = request.top_k or 4
        return spb.ScoreBatchResponse(
            results=[self._score(request.model, a, request.explain, top_k) for a in request.applications]
        )


@contextmanager
def fake_scoring() -> Iterator[tuple[str, FakeScoring]]:
    """An in-process ScoringService on loopback (no auth); yields its target and the servicer."""
    servicer = FakeScoring()
    server = grpc.server(ThreadPoolExecutor(max_workers=2))
    spb_grpc.add_ScoringServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None).wait()
