"""Harness of the console's browser tests and screenshots: a registry, a monitor, a gateway scoring
with the in-process stand-in model server (no Ray) and the console, on loopback with tokens; a
model whose versions carry gates, lineage and a reference profile; traffic; rollouts.

    with console_stack(tmp) as stack:
        story = seed(stack)               # a model: v1 in production, v2 registered, scored traffic
        stack.console_url                 # http://127.0.0.1:<port>
"""

from __future__ import annotations

import itertools
import ssl
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import grpc
import polars as pl
import yaml  # type: ignore[import-untyped]  # (no types-PyYAML in the lock)
from google.protobuf import struct_pb2

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc as mpb_grpc
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.registry.v1 import registry_pb2_grpc as rpb_grpc
from finpredict.api.rollout.v1 import rollout_pb2 as ropb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as ropb_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.testkit.cli import (
    ADMIN_TOKEN,
    GATEWAY_TOKENS,
    READER_TOKEN,
    REGISTRY_ADMIN,
    REGISTRY_CONTROLLER,
    REGISTRY_TOKENS,
    WRITER_TOKEN,
    FakeModelServer,
    fake_model_server,
)
from finpredict.testkit.gateway import features_of
from finpredict.testkit.models import SMALL_SCHEMA, TrainedModel, synthetic_records, train_small_model
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.registry import start_registry
from finpredict.testkit.serving import register_requests

# The console reads with its own reader tokens; people sign in with the gateway's tokens (the
# operator "ops" is admin, the scoring client "lending-app" a reader).
CONSOLE_REGISTRY_READER = "console-registry-reader-0123456789"
MONITOR_WRITER = "console-monitor-gateway-0123456789"
MONITOR_READER = "console-monitor-reader-0123456789"
REGISTRY_SPEC = f"{REGISTRY_TOKENS},{CONSOLE_REGISTRY_READER}=console:reader"
MONITOR_ADMIN = "console-monitor-admin-0123456789"
MONITOR_SPEC = f"{MONITOR_WRITER}=gateway:writer,{MONITOR_READER}=console:reader,{MONITOR_ADMIN}=replay:admin"
HISTORY_DAYS = 10  # days of logged predictions before today (drift from DRIFT_FROM on)
DRIFT_FROM = 5
PER_HOUR = 10  # backfilled predictions per hour (enough that a day's PSI is not mostly noise)
OPERATOR_SUBJECT = "ops"
# The key every test console seals sign-ins with (so that any of them reads another's cookies).
SESSION_KEY = "bG9jYWwtdGVzdC1jb25zb2xlLXNlc3Npb24ta2V5ISE"  # 32 bytes, URL-safe base64
# Loose enough that the stand-in's latencies on a busy machine never roll a canary back.
LOOSE = ropb.AnalysisThresholds(
    max_error_rate_increase=1.0,
    max_p99_latency_ms=60_000,
    max_p99_latency_ratio=1000,
    max_score_psi=100,
    max_score_kl=100,
    max_auc_drop=1.0,
)
VARIANTS = {spb.VARIANT_STABLE: "stable", spb.VARIANT_CANARY: "canary"}


@dataclass
class ConsoleStack:
    registry: ServiceProcess
    monitor: ServiceProcess
    gateway: ServiceProcess
    console: ServiceProcess
    model_server: FakeModelServer
    trained: TrainedModel
    channels: list[grpc.Channel] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._applicant = itertools.count()  # which of RECORDS applies next (thread-safe)
        reg, gw, mon = (grpc.insecure_channel(p.target) for p in (self.registry, self.gateway, self.monitor))
        self.channels = [reg, gw, mon]
        self.registry_stub = rpb_grpc.RegistryServiceStub(reg)
        self.scoring = spb_grpc.ScoringServiceStub(gw)
        self.rollouts = ropb_grpc.RolloutServiceStub(gw)
        self.monitor_stub = mpb_grpc.MonitorServiceStub(mon)

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.console.port}"

    # ----- registry (the operator's token) -------------------------------------------------------

    def registry_call(self, method: str, request: object) -> object:
        return getattr(self.registry_stub, method)(
            request, metadata=bearer_metadata(REGISTRY_ADMIN), timeout=30
        )

    def create_model(self, prefix: str = "console") -> str:
        name = unique(prefix)
        self.registry_call(
            "CreateModel", rpb.CreateModelRequest(name=name, description="Credit default risk")
        )
        return name

    def register(self, model: str, trigger: str, parent: int = 0) -> int:
        """A version of the trained stand-in with gates, lineage and a reference profile."""
        reqs = register_requests(model, self.trained, 0.5, gate_results=GATES)
        header = reqs[0].header
        header.metrics.update({"auc_roc": 0.81, "ece": 0.03})
        header.lineage.CopyFrom(
            lineage(trigger, [types_pb2.ModelRef(name=model, version=parent)] if parent else [])
        )
        header.reference_profile = PROFILE
        resp = self.registry_stub.RegisterVersion(
            iter(reqs), metadata=bearer_metadata(REGISTRY_ADMIN), timeout=60
        )
        return int(resp.version.version)

    def set_alias(self, model: str, alias: str, version: int, reason: str) -> None:
        self.registry_call(
            "SetAlias", rpb.SetAliasRequest(model=model, alias=alias, version=version, reason=reason)
        )

    # ----- gateway ---------------------------------------------------------------------------------

    def score(self, model: str, entity_ids: Sequence[str], explain: bool = True) -> list[spb.Score]:
        apps = [
            spb.Application(
                entity_id=e,
                features=features_of(RECORDS[next(self._applicant) % len(RECORDS)]),
                request_id=unique("req"),
            )
            for e in entity_ids
        ]
        req = spb.ScoreBatchRequest(model=model, applications=apps, explain=explain, top_k=3)
        resp = self.scoring.ScoreBatch(req, metadata=bearer_metadata(READER_TOKEN), timeout=30)
        return list(resp.results)

    def start_rollout(
        self, model: str, candidate: int, steps: Sequence[float], min_requests: int
    ) -> ropb.Rollout:
        req = ropb.StartRolloutRequest(
            model=model, candidate_version=candidate, steps=list(steps), min_requests_per_step=min_requests,
            thresholds=LOOSE,
        )  # fmt: skip
        req.analysis_interval.FromMilliseconds(300)
        return self.rollouts.StartRollout(req, metadata=bearer_metadata(ADMIN_TOKEN), timeout=30).rollout

    def rollout(self, rollout_id: str) -> ropb.Rollout:
        req = ropb.GetRolloutRequest(rollout_id=rollout_id)
        return self.rollouts.GetRollout(req, metadata=bearer_metadata(READER_TOKEN), timeout=30).rollout

    def record_outcomes(self, results: Sequence[spb.Score]) -> None:
        """Outcomes of scored requests (every other one defaulted), through the gateway."""
        outcomes = [
            spb.Outcome(request_id=r.request_id, entity_id=r.entity_id, defaulted=i % 2 == 0)
            for i, r in enumerate(results)
        ]
        req = spb.RecordOutcomesRequest(outcomes=outcomes)
        self.scoring.RecordOutcomes(req, metadata=bearer_metadata(WRITER_TOKEN), timeout=30)

    # ----- monitor (the console's reader token) ---------------------------------------------------

    def lookup(self, request_id: str) -> list[mpb.PredictionRecord]:
        req = mpb.LookupPredictionsRequest(request_id=request_id)
        resp = self.monitor_stub.LookupPredictions(req, metadata=bearer_metadata(MONITOR_READER), timeout=30)
        return list(resp.records)

    def backfill(self, model: str, version: int) -> None:
        """:data:`HISTORY_DAYS` days of predictions before today, as the gateway logs them, with
        their outcomes two days later; from day :data:`DRIFT_FROM` on the applicants carry more
        debt and late payments (drift); the days' windows are then closed and the rules evaluated."""
        end = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        start = end - timedelta(days=HISTORY_DAYS)
        records, outcomes = [], []
        for n in range(HISTORY_DAYS * 24 * PER_HOUR):
            t = start + timedelta(minutes=n * 60 // PER_HOUR)
            day = n // (24 * PER_HOUR)
            record = dict(RECORDS[n % len(RECORDS)])
            if day >= DRIFT_FROM:
                shift = 1.0 + 0.6 * (day - DRIFT_FROM + 1)
                record["debt"] = min(record["debt"] * shift, 1e8)
                record["late_payments_12m"] = min(
                    record["late_payments_12m"] + 2 * (day - DRIFT_FROM + 1), 50
                )
            features = features_of(record)
            score = FakeModelServer.score(features)
            rid = f"{model}-history-{n:05d}"
            r = mpb.PredictionRecord(
                request_id=rid,
                entity_id=f"hist-{n % 300:04d}",
                model=types_pb2.ModelRef(name=model, version=version),
                variant="stable",
                features=features,
                score=score,
                threshold=FakeModelServer.THRESHOLD,
                latency_ms=3.0,
            )
            r.time.FromDatetime(t)
            records.append(r)
            o = mpb.Outcome(request_id=rid, defaulted=(score >= 0.5) != (n % 7 == 0))  # right 6 times in 7
            o.observed_at.FromDatetime(min(t + timedelta(days=2), end))
            outcomes.append(o)
        writer = bearer_metadata(MONITOR_WRITER)
        batches = [
            mpb.IngestPredictionsRequest(records=records[i : i + 500]) for i in range(0, len(records), 500)
        ]
        self.monitor_stub.IngestPredictions(iter(batches), metadata=writer, timeout=60)
        self.monitor_stub.RecordOutcomes(
            mpb.RecordOutcomesRequest(outcomes=outcomes), metadata=writer, timeout=60
        )
        now = mpb.EvaluateRulesRequest()
        now.now.FromDatetime(end)
        self.monitor_stub.EvaluateRules(now, metadata=bearer_metadata(MONITOR_ADMIN), timeout=60)

    def wait_logged(self, request_ids: Sequence[str], timeout: float = 60) -> None:
        """Until the monitor has every one of ``request_ids`` (the prediction log is asynchronous)."""
        for rid in request_ids:
            wait_for(lambda rid=rid: self.lookup(rid), timeout, f"the monitor to log {rid}")  # type: ignore[misc]

    def close(self) -> None:
        for ch in self.channels:
            ch.close()


def _gate(
    name: str, value: float, threshold: float, comparator: types_pb2.Comparator.ValueType
) -> types_pb2.GateResult:
    return types_pb2.GateResult(
        name=name, value=value, threshold=threshold, comparator=comparator, passed=True
    )


# What the registry's default promotion policy requires of a production version.
GATES = [
    _gate("auc_roc", 0.861, 0.82, types_pb2.COMPARATOR_GREATER_OR_EQUAL),
    _gate("ece", 0.021, 0.05, types_pb2.COMPARATOR_LESS_OR_EQUAL),
    _gate("compute_p99_ms", 9.4, 50.0, types_pb2.COMPARATOR_LESS_OR_EQUAL),
    _gate("demographic_parity_diff", 0.031, 0.05, types_pb2.COMPARATOR_LESS_OR_EQUAL),
]
RECORDS = synthetic_records(SMALL_SCHEMA, 2000, seed=11)  # what the clients apply with
REFERENCE = synthetic_records(SMALL_SCHEMA, 4000, seed=1)  # the training data the profile describes


def lineage(trigger: str, parents: list[types_pb2.ModelRef]) -> rpb.Lineage:
    params = struct_pb2.Struct()
    params.update({"max_depth": 3, "eta": 0.3, "rounds": 20})
    return rpb.Lineage(
        git_commit="3f9c2e1d8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d",
        data_md5={"data/raw/applications.parquet": "9e107d9d372bb6826bd81d3542a419d6"},
        dvc_lock_sha256="b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c",
        params=params,
        wandb_run_id="k3x9q2",
        wandb_run_path="finpredict/credit-default/k3x9q2",
        trigger=trigger,
        parents=parents,
    )


def reference_profile() -> bytes:
    """A drift_core profile of the training data's inputs and the stand-in's scores."""
    frame = pl.DataFrame(REFERENCE).with_columns(
        pl.Series("__score__", [FakeModelServer.score(features_of(r)) for r in REFERENCE])
    )
    numeric = [c for c, t in frame.schema.items() if t != pl.String]
    frame = frame.with_columns(pl.col(c).cast(pl.Float64) for c in numeric)
    return bytes(drift_core.Profile.fit(frame, n_bins=10, binning="quantile", allow_copy=True).to_bytes())


PROFILE = reference_profile()


@dataclass
class Story:
    """What :func:`seed` made: a model, its versions and the scores its clients received."""

    model: str
    v1: int
    v2: int
    scored: list[spb.Score]


def seed(stack: ConsoleStack, prefix: str = "console", requests: int = 60) -> Story:
    """A model with v1 in production and :data:`HISTORY_DAYS` of its predictions and outcomes
    logged (drifting from :data:`DRIFT_FROM` on), v2 registered (its retraining), then ``requests``
    applications scored with reason codes through the gateway and half of their outcomes."""
    model = stack.create_model(prefix)
    v1 = stack.register(model, "manual")
    stack.set_alias(model, "production", v1, "first release: every gate passed")
    stack.backfill(model, v1)
    v2 = stack.register(model, "alert:feature_psi_3d", parent=v1)
    stack.set_alias(model, "candidate", v2, "retrained on recent data")
    scored = stack.score(model, [f"biz-{i:04d}" for i in range(requests)])
    stack.wait_logged([scored[0].request_id, scored[-1].request_id])
    stack.record_outcomes(scored[: requests // 2])
    return Story(model, v1, v2, scored)


class Traffic:
    """Scores a model continuously from a thread (the rollout's analysis needs requests)."""

    def __init__(self, stack: ConsoleStack, model: str, batch: int = 20) -> None:
        self._stack, self._model, self._batch = stack, model, batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.batches = 0

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            try:
                self._stack.score(
                    self._model, [f"load-{(n + i) % 5000:05d}" for i in range(self._batch)], False
                )
                self.batches += 1
            except grpc.RpcError:
                pass  # the stack is stopping
            n += self._batch
            self._stop.wait(0.02)  # pacing the load, not waiting for a condition

    def __enter__(self) -> Traffic:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def start_console(
    work: Path, registry: str, gateway: str, monitor: str, https_ca: Path | None = None, **extra: str
) -> ServiceProcess:
    """The console on a free port, reading the three services; ``extra`` settings win. With
    ``https_ca`` (it serves TLS) its health is checked over HTTPS with that CA."""
    proc = start_service(
        "console",
        work,
        env={
            "FINPREDICT_CONSOLE_TOKENS": GATEWAY_TOKENS,
            "FINPREDICT_CONSOLE_SESSION_KEYS": SESSION_KEY,
            "FINPREDICT_CONSOLE_REGISTRY_TARGET": registry,
            "FINPREDICT_CONSOLE_REGISTRY_TOKEN": CONSOLE_REGISTRY_READER,
            "FINPREDICT_CONSOLE_GATEWAY_TARGET": gateway,
            "FINPREDICT_CONSOLE_GATEWAY_TOKEN": READER_TOKEN,
            "FINPREDICT_CONSOLE_MONITOR_TARGET": monitor,
            "FINPREDICT_CONSOLE_MONITOR_TOKEN": MONITOR_READER,
            "FINPREDICT_CONSOLE_LIVE_INTERVAL_S": "0.2",
            "FINPREDICT_CONSOLE_LOG_FORMAT": "text",
            "FINPREDICT_CONSOLE_SHUTDOWN_GRACE_S": "1",
            **extra,
        },
        wait_healthy=False,  # an HTTP service: its health is /healthz, not gRPC's
    )
    scheme = "https" if https_ca else "http"
    url = f"{scheme}://127.0.0.1:{proc.port}/healthz"
    context = ssl.create_default_context(cafile=str(https_ca)) if https_ca else None

    def healthy() -> bool:
        with urllib.request.urlopen(url, timeout=2, context=context) as resp:
            return bool(resp.status == 200)

    try:
        wait_for(healthy, 30, "the console to answer /healthz")
    except BaseException:
        proc.stop()
        raise
    return proc


@contextmanager
def console_stack(tmp: Path) -> Iterator[ConsoleStack]:
    """Registry, monitor, gateway (stand-in model server, short controller tick) and console."""
    registry = start_registry(tmp / "registry", REGISTRY_SPEC)
    started = [registry]
    try:
        rules = tmp / "monitor" / "rules.yaml"
        rules.parent.mkdir(parents=True, exist_ok=True)
        rules.write_text(yaml.safe_dump(small_sample_rules()))
        monitor = start_service(
            "monitor",
            tmp / "monitor",
            env={
                "FINPREDICT_MONITOR_RULES_FILE": str(rules),
                "FINPREDICT_MONITOR_DATA_DIR": str(tmp / "monitor" / "data"),
                "FINPREDICT_MONITOR_PROFILES_DIR": str(tmp / "monitor" / "profiles"),
                "FINPREDICT_MONITOR_TOKENS": MONITOR_SPEC,
                "FINPREDICT_MONITOR_REGISTRY_TARGET": registry.target,
                "FINPREDICT_MONITOR_REGISTRY_TOKEN": CONSOLE_REGISTRY_READER,
                "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
                "FINPREDICT_MONITOR_LOG_FORMAT": "text",
            },
        )
        started.append(monitor)
        with fake_model_server() as (model_server_target, model_server):
            gateway = start_service(
                "gateway",
                tmp / "gateway",
                env={
                    "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
                    "FINPREDICT_GATEWAY_DATA_DIR": str(tmp / "gateway" / "data"),
                    "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry.target,
                    "FINPREDICT_GATEWAY_REGISTRY_TOKEN": REGISTRY_CONTROLLER,
                    "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": model_server_target,
                    "FINPREDICT_GATEWAY_MONITOR_TARGET": monitor.target,
                    "FINPREDICT_GATEWAY_MONITOR_TOKEN": MONITOR_WRITER,
                    "FINPREDICT_GATEWAY_LOG_FLUSH_S": "0.05",
                    "FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "0.1",
                    "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
                    "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "1",
                },
            )
            started.append(gateway)
            console = start_console(tmp / "console", registry.target, gateway.target, monitor.target)
            started.append(console)
            stack = ConsoleStack(registry, monitor, gateway, console, model_server, train_small_model())
            try:
                yield stack
            finally:
                stack.close()
                for proc in reversed(started[2:]):
                    proc.stop()
                del started[2:]
    finally:
        for proc in reversed(started):
            proc.stop()


def small_sample_rules() -> dict[str, object]:
    """The monitor's default rules with minimum samples a test's few predictions a day reach."""
    doc: dict[str, object] = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    for rule in doc["rules"]:  # type: ignore[attr-defined]
        rule["min_samples"] = min(int(rule["min_samples"]), 20)
    return doc


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")
