"""Helpers of the CLI tests: a real registry and a real gateway with no model server (no Ray), an
in-process stand-in ScoringService for the scoring command's success path, and an in-process
stand-in ModelServerService the gateway can score with (its protocol tests without Ray)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
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
from finpredict.api.serving.v1 import model_server_pb2 as mpb
from finpredict.api.serving.v1 import model_server_pb2_grpc as mpb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.testkit.evaluation import PASSING_GATES
from finpredict.testkit.models import TrainedModel
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceProcess, start_service
from finpredict.testkit.registry import start_registry
from finpredict.testkit.serving import register_requests

# Registry: the test's operator and the gateway's controller (admin: it moves `production`).
REGISTRY_ADMIN = "cli-registry-admin-0123456789"
REGISTRY_CONTROLLER = "cli-registry-controller-0123456789"
REGISTRY_TOKENS = f"{REGISTRY_ADMIN}=alice:admin,{REGISTRY_CONTROLLER}=rollout-controller:admin"
# Gateway: an operator (admin), a scoring client (reader), the loan-servicing job that records
# outcomes (writer).
ADMIN_TOKEN = "cli-gateway-admin-0123456789"
READER_TOKEN = "cli-gateway-reader-0123456789"
WRITER_TOKEN = "cli-gateway-writer-0123456789"
GATEWAY_TOKENS = (
    f"{ADMIN_TOKEN}=ops:admin,{READER_TOKEN}=lending-app:reader,{WRITER_TOKEN}=loan-servicing:writer"
)


class RegistryAdmin:
    """The operator's calls to the registry: models, versions with passing gates, aliases."""

    def __init__(self, target: str) -> None:
        self.channel = grpc.insecure_channel(target)
        self.stub = registry_pb2_grpc.RegistryServiceStub(self.channel)
        self.md = bearer_metadata(REGISTRY_ADMIN)

    def create_model(self, name: str) -> None:
        self.stub.CreateModel(registry_pb2.CreateModelRequest(name=name), metadata=self.md, timeout=30)

    def register(self, name: str, trained: TrainedModel, threshold: float = 0.5) -> int:
        """Registers ``trained`` with the pipeline's passing gates and lineage (so `production` may
        point at it)."""
        reqs = register_requests(name, trained, threshold, gate_results=PASSING_GATES)
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
def cli_stack(
    tmp: Path,
    trained: tuple[TrainedModel, TrainedModel],
    model_server_target: str = "",
    gateway_env: Mapping[str, str] | None = None,
) -> Iterator[CliStack]:
    """A registry and a gateway (no monitor) whose model server is ``model_server_target``, or
    an address with nothing behind it; ``gateway_env`` overrides the gateway's settings."""
    registry = start_registry(tmp / "registry", REGISTRY_TOKENS)
    try:
        gateway = start_service(
            "gateway",
            tmp / "gateway",
            env={
                "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
                "FINPREDICT_GATEWAY_DATA_DIR": str(tmp / "gateway" / "data"),
                "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry.target,
                "FINPREDICT_GATEWAY_REGISTRY_TOKEN": REGISTRY_CONTROLLER,
                "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": model_server_target or f"127.0.0.1:{free_port()}",
                "FINPREDICT_GATEWAY_MONITOR_TARGET": "",
                "FINPREDICT_GATEWAY_BACKEND_RETRIES": "0",
                # No traffic flows here, so the analysis loop has nothing to do; a long tick also keeps
                # it from racing PromoteRollout (both call the controller's _promote concurrently:
                # the loser's CAS conflict then marks a promoted rollout ABORTED).
                "FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "3600",
                "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
                "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "1",
                **(gateway_env or {}),
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
    """A stand-in ScoringService that records what it got: the CLI's success path without Ray.
    Outcomes are kept by request id, the first one wins (the monitor's rule): a repeat is a duplicate;
    feedback too, the latest one wins."""

    def __init__(self) -> None:
        self.batches: list[list[spb.Application]] = []
        self.outcome_batches: list[list[spb.Outcome]] = []
        self.outcomes: dict[str, spb.Outcome] = {}  # by request id, the first one
        self.feedback: dict[str, types_pb2.Feedback] = {}  # by request id, the latest

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

    def Score(self, request: spb.ScoreRequest, context: grpc.ServicerContext) -> spb.ScoreResponse:  # noqa: N802
        self.batches.append([request.application])
        top_k = request.top_k or 4
        return spb.ScoreResponse(
            result=self._score(request.model, request.application, request.explain, top_k)
        )

    def ScoreBatch(  # noqa: N802 (gRPC method)
        self, request: spb.ScoreBatchRequest, context: grpc.ServicerContext
    ) -> spb.ScoreBatchResponse:
        self.batches.append(list(request.applications))
        top_k = request.top_k or 4
        return spb.ScoreBatchResponse(
            results=[self._score(request.model, a, request.explain, top_k) for a in request.applications]
        )

    def RecordOutcomes(  # noqa: N802 (gRPC method)
        self, request: spb.RecordOutcomesRequest, context: grpc.ServicerContext
    ) -> spb.RecordOutcomesResponse:
        self.outcome_batches.append(list(request.outcomes))
        new = [o for o in request.outcomes if self.outcomes.setdefault(o.request_id, o) is o]
        return spb.RecordOutcomesResponse(matched=len(new), duplicates=len(request.outcomes) - len(new))

    def RecordFeedback(  # noqa: N802 (gRPC method)
        self, request: spb.RecordFeedbackRequest, context: grpc.ServicerContext
    ) -> spb.RecordFeedbackResponse:
        """The monitor's rule: a request's latest feedback is its verdict, an exact repeat a duplicate."""
        recorded = 0
        for fb in request.feedback:
            if self.feedback.get(fb.request_id) != fb:
                self.feedback[fb.request_id] = fb
                recorded += 1
        return spb.RecordFeedbackResponse(recorded=recorded, duplicates=len(request.feedback) - recorded)


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


class FakeModelServer(mpb_grpc.ModelServerServiceServicer):
    """A stand-in model server: ``score = debt / (debt + annual_revenue + 1)`` (missing numbers
    count as 0), threshold 0.5, reason codes when asked (:meth:`reasons`); records every
    PredictRequest it gets, and fails (``INTERNAL``) those of the model versions in ``failing``."""

    THRESHOLD = 0.5

    def __init__(self) -> None:
        self.requests: list[mpb.PredictRequest] = []
        self.failing: set[tuple[str, int]] = set()  # (model, version)

    @staticmethod
    def score(features: Mapping[str, types_pb2.FeatureValue]) -> float:
        def number(name: str) -> float:
            value = features.get(name)
            return value.number if value is not None and value.HasField("number") else 0.0

        debt = number("debt")
        return debt / (debt + number("annual_revenue") + 1.0)

    def Predict(  # noqa: N802 (gRPC method)
        self, request: mpb.PredictRequest, context: grpc.ServicerContext
    ) -> mpb.PredictResponse:
        self.requests.append(request)
        if (request.model.name, request.model.version) in self.failing:
            context.abort(
                grpc.StatusCode.INTERNAL, f"{request.model.name} v{request.model.version} is broken"
            )
        return mpb.PredictResponse(
            model=request.model,
            predictions=[
                mpb.Prediction(
                    score=self.score(row.features),
                    reason_codes=self.reasons(row.features, request.top_k or 4) if request.explain else [],
                )
                for row in request.rows
            ],
            threshold=self.THRESHOLD,
        )

    @staticmethod
    def reasons(features: Mapping[str, types_pb2.FeatureValue], top_k: int) -> list[types_pb2.ReasonCode]:
        """Reason codes when asked: the numeric features by value, largest first, each contributing
        its share of their sum (``R<i>`` is the i-th feature by name), at most ``top_k``."""
        names = sorted(features)
        numeric = [(v.number, n) for n, v in features.items() if v.HasField("number") and v.number > 0]
        total = sum(value for value, _ in numeric) or 1.0
        return [
            types_pb2.ReasonCode(
                code=f"R{names.index(n) + 1:02d}",
                feature=n,
                contribution=value / total,
                description=f"{n} is high",
            )
            for value, n in sorted(numeric, reverse=True)[:top_k]
        ]

    def LoadModel(  # noqa: N802 (gRPC method)
        self, request: mpb.LoadModelRequest, context: grpc.ServicerContext
    ) -> mpb.LoadModelResponse:
        return mpb.LoadModelResponse(model=request.model)

    def ListLoadedModels(  # noqa: N802 (gRPC method)
        self, request: mpb.ListLoadedModelsRequest, context: grpc.ServicerContext
    ) -> mpb.ListLoadedModelsResponse:
        seen = sorted({(r.model.name, r.model.version) for r in self.requests})
        return mpb.ListLoadedModelsResponse(models=[types_pb2.ModelRef(name=n, version=v) for n, v in seen])

    def rows(self) -> list[dict[str, types_pb2.FeatureValue]]:
        """Every row it was asked to score, in order."""
        return [dict(row.features) for request in self.requests for row in request.rows]


@contextmanager
def fake_model_server() -> Iterator[tuple[str, FakeModelServer]]:
    """An in-process ModelServerService on loopback; yields its target and the servicer."""
    servicer = FakeModelServer()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    mpb_grpc.add_ModelServerServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", servicer
    finally:
        server.stop(grace=None).wait()
