"""Harness of the gateway's integration tests (and its benchmarks): the whole stack on loopback,
models, traffic, and the figures of faults under load."""

from __future__ import annotations

import contextlib
import math
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import xgboost as xgb

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as rpb_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.features import records_to_matrix
from finpredict.testkit.models import SMALL_SCHEMA, TrainedModel, synthetic_records
from finpredict.testkit.monitor import WRITER_TOKEN as MONITOR_WRITER_TOKEN
from finpredict.testkit.monitor import monitor_env
from finpredict.testkit.process import ServiceProcess, start_service, wait_for
from finpredict.testkit.registry import start_registry
from finpredict.testkit.scrape import metric_value, samples, total
from finpredict.testkit.serving import (
    ADMIN_TOKEN,
    RayCluster,
    Registry,
    ServeOptions,
    ray_cluster,
    start_model_server,
)

# Registry tokens: the operator, the gateway's controller (admin: it moves `production`), replicas.
CONTROLLER_TOKEN = "gw-controller-token-0123456789"
REPLICA_TOKEN = "gw-replica-token-0123456789"
REGISTRY_TOKENS = (
    f"{ADMIN_TOKEN}=alice:admin,{CONTROLLER_TOKEN}=rollout-controller:admin,{REPLICA_TOKEN}=replica:reader"
)
# Gateway tokens: an operator (admin) and a scoring client (reader).
OPERATOR_TOKEN = "gw-operator-token-0123456789"
CLIENT_TOKEN = "gw-client-token-0123456789"
GATEWAY_TOKENS = f"{OPERATOR_TOKEN}=ops:admin,{CLIENT_TOKEN}=lending-app:reader"
OPERATOR = bearer_metadata(OPERATOR_TOKEN)
CLIENT = bearer_metadata(CLIENT_TOKEN)


def train(seed: int, rounds: int, positive_share: float = 0.5, n: int = 600) -> TrainedModel:
    """A small model on SMALL_SCHEMA; ``positive_share`` moves its whole score distribution."""
    records = synthetic_records(SMALL_SCHEMA, n, seed)
    x = records_to_matrix(records, SMALL_SCHEMA)
    rng = np.random.default_rng(seed + 1)
    z = np.nan_to_num(x, nan=0.0)
    signal = (
        (z[:, 0] > np.median(z[:, 0])).astype(float) + (z[:, 4] > np.median(z[:, 4])) + rng.normal(0, 0.7, n)
    )
    y = (signal > np.quantile(signal, 1 - positive_share)).astype(np.float32)
    dtrain = xgb.DMatrix(x, label=y, feature_names=SMALL_SCHEMA.model_feature_names, missing=np.nan)
    params = {"objective": "binary:logistic", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": seed}
    booster = xgb.train(params, dtrain, num_boost_round=rounds)
    return TrainedModel(booster, SMALL_SCHEMA, records, bytes(booster.save_raw(raw_format="ubj")))


def features_of(record: dict[str, Any]) -> dict[str, types_pb2.FeatureValue]:
    out = {}
    for k, v in record.items():
        if v is None:
            out[k] = types_pb2.FeatureValue()
        elif isinstance(v, str):
            out[k] = types_pb2.FeatureValue(category=v)
        else:
            out[k] = types_pb2.FeatureValue(number=float(v))
    return out


RECORDS = synthetic_records(SMALL_SCHEMA, 2000, seed=99)


def applications(entity_ids: Sequence[str], offset: int = 0) -> list[spb.Application]:
    return [
        spb.Application(entity_id=e, features=features_of(RECORDS[(offset + i) % len(RECORDS)]))
        for i, e in enumerate(entity_ids)
    ]


@dataclass
class GatewayClient:
    target: str
    channel: grpc.Channel = field(init=False)
    scoring: spb_grpc.ScoringServiceStub = field(init=False)
    rollouts: rpb_grpc.RolloutServiceStub = field(init=False)

    def __post_init__(self) -> None:
        self.channel = grpc.insecure_channel(self.target)
        self.scoring = spb_grpc.ScoringServiceStub(self.channel)
        self.rollouts = rpb_grpc.RolloutServiceStub(self.channel)

    def score_batch(
        self, model: str, entity_ids: Sequence[str], offset: int = 0, timeout: float = 30
    ) -> spb.ScoreBatchResponse:
        req = spb.ScoreBatchRequest(model=model, applications=applications(entity_ids, offset))
        return self.scoring.ScoreBatch(req, metadata=CLIENT, timeout=timeout)

    def start_rollout(
        self,
        model: str,
        version: int,
        steps: Sequence[float],
        interval_s: float,
        min_requests: int,
        **thresholds: float,
    ) -> rpb.Rollout:
        req = rpb.StartRolloutRequest(
            model=model,
            candidate_version=version,
            steps=list(steps),
            min_requests_per_step=min_requests,
            thresholds=rpb.AnalysisThresholds(**thresholds),
        )
        req.analysis_interval.FromMilliseconds(int(interval_s * 1000))
        return self.rollouts.StartRollout(req, metadata=OPERATOR, timeout=30).rollout

    def rollout(self, rollout_id: str) -> rpb.Rollout:
        return self.rollouts.GetRollout(
            rpb.GetRolloutRequest(rollout_id=rollout_id), metadata=CLIENT, timeout=10
        ).rollout

    def abort(self, rollout_id: str) -> None:
        self.rollouts.AbortRollout(
            rpb.AbortRolloutRequest(rollout_id=rollout_id, reason="test"), metadata=OPERATOR, timeout=10
        )

    def close(self) -> None:
        self.channel.close()


class Traffic:
    """Sends ScoreBatch calls of fresh entity ids in a loop until stopped; counts what it sees."""

    def __init__(self, target: str, model: str, batch: int = 400) -> None:
        self.client = GatewayClient(target)
        self.model = model
        self.batch = batch
        self.stop_event = threading.Event()
        self.versions: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.calls = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        offset = 0
        while not self.stop_event.is_set():
            ids = [uuid.uuid4().hex for _ in range(self.batch)]
            try:
                resp = self.client.score_batch(self.model, ids, offset, timeout=10)
            except grpc.RpcError as exc:
                self.errors[exc.code().name] += 1  # type: ignore[attr-defined]
                self.stop_event.wait(0.05)
                continue
            self.calls += 1
            offset += self.batch
            for r in resp.results:
                self.versions[r.model.version] += 1

    def __enter__(self) -> Traffic:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        self.thread.join(timeout=30)
        self.client.close()


def start_gateway(
    tmp: Path, registry_target: str, serve_port: int, monitor_target: str, port: int = 0, **extra: str
) -> ServiceProcess:
    env = {
        "FINPREDICT_GATEWAY_PORT": str(port),
        "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
        "FINPREDICT_GATEWAY_DATA_DIR": str(tmp / "gateway-data"),
        "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry_target,
        "FINPREDICT_GATEWAY_REGISTRY_TOKEN": CONTROLLER_TOKEN,
        "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": f"127.0.0.1:{serve_port}",
        "FINPREDICT_GATEWAY_MONITOR_TARGET": monitor_target,
        "FINPREDICT_GATEWAY_MONITOR_TOKEN": MONITOR_WRITER_TOKEN,
        "FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "0.1",
        "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
        "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "2",
        **extra,
    }
    return start_service("gateway", tmp, env=env)


@dataclass
class Stack:
    """The gateway's whole stack on loopback (see :func:`running_stack`)."""

    registry: Registry
    ray: RayCluster
    model_server: ServiceProcess
    serve_port: int
    monitor: ServiceProcess
    monitor_port: int
    monitor_dir: Path
    gateway: ServiceProcess
    gateway_port: int
    tmp: Path
    client: GatewayClient
    model: str
    versions: dict[str, int]  # label -> version (tests: "v1" stable, "v2" good candidate, "bad" shifted)
    gateway_env: dict[str, str] = field(default_factory=dict)  # extra settings of every gateway start

    def start_monitor(self) -> ServiceProcess:
        self.monitor = monitor_process(self.monitor_dir, self.monitor_port)
        return self.monitor

    def restart_gateway(self) -> ServiceProcess:
        self.gateway = start_gateway(
            self.tmp,
            self.registry.target,
            self.serve_port,
            f"127.0.0.1:{self.monitor_port}",
            port=self.gateway_port,
            **self.gateway_env,
        )
        return self.gateway


@contextlib.contextmanager
def running_stack(
    tmp: Path,
    model: str,
    models: Mapping[str, TrainedModel],
    env: Mapping[str, str] | None = None,
    gateway_env: Mapping[str, str] | None = None,
    *,
    serve: ServeOptions | None = None,
    ray_workers: int = 0,
) -> Iterator[Stack]:
    """The gateway's whole stack, each part a real process on loopback stopped by its pid: a
    registry holding one version of ``model`` per ``models`` item (in order, each with a passing
    gate; `production` on the first), Ray with the model-server app, a monitor receiving the
    prediction log, and the gateway. The monitor and the gateway have fixed ports, so a test can
    restart them. ``env``: extra settings of the registry, Ray (so the replicas) and the gateway;
    ``gateway_env``: of the gateway only (both on every gateway start). ``serve``: how the model
    server is deployed (default: two replicas); ``ray_workers``: worker nodes besides the head
    (then one CPU per node)."""
    env = dict(env or {})
    every_gateway = {**env, **(gateway_env or {})}
    with contextlib.ExitStack() as cleanup:
        reg_proc = start_registry(
            tmp / "registry",
            REGISTRY_TOKENS,
            {
                "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.5",
                **env,
            },
        )
        cleanup.callback(reg_proc.stop)
        registry = Registry(reg_proc)
        cleanup.callback(registry.close)
        registry.create_model(model)
        versions = {label: registry.register(model, trained) for label, trained in models.items()}
        registry.set_alias(model, "production", next(iter(versions.values())))
        replica_env = {"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": REPLICA_TOKEN, **env}
        cpus = 1 if ray_workers else 2
        ray = cleanup.enter_context(ray_cluster(replica_env, cpus, workers=ray_workers, worker_cpus=cpus))
        (tmp / "model-server").mkdir()
        ms_proc, serve_port = start_model_server(tmp / "model-server", ray, registry, options=serve)
        cleanup.callback(ms_proc.stop, timeout=60)
        monitor_port, gateway_port = free_port(), free_port()
        monitor = monitor_process(tmp / "monitor", monitor_port)
        try:
            monitor_target = f"127.0.0.1:{monitor_port}"
            gateway = start_gateway(
                tmp, registry.target, serve_port, monitor_target, port=gateway_port, **every_gateway
            )
        except BaseException:
            monitor.stop(timeout=30)
            raise
        client = GatewayClient(gateway.target)
        stack = Stack(
            registry, ray, ms_proc, serve_port, monitor, monitor_port, tmp / "monitor", gateway, gateway_port,
            tmp, client, model, versions, every_gateway,
        )  # fmt: skip
        # the ones running at the end: a test may have restarted them
        cleanup.callback(lambda: stack.monitor.stop(timeout=30))
        cleanup.callback(lambda: stack.gateway.stop(timeout=30))
        cleanup.callback(client.close)
        yield stack


def monitor_process(work: Path, port: int) -> ServiceProcess:
    """A monitor with the test tokens (:data:`finpredict.testkit.monitor.TOKENS`: the gateway logs
    with the writer's, see :func:`start_gateway`)."""
    return start_service(
        "monitor",
        work,
        env=monitor_env(work, FINPREDICT_MONITOR_PORT=str(port), FINPREDICT_MONITOR_LOG_FORMAT="text"),
    )


# ----- faults under load (the end of test_gateway_e2e.py) ----------------------------------------


@dataclass(frozen=True)
class CallRecord:
    """One client call: when it started and ended (monotonic), its status and how many results."""

    started: float
    ended: float
    code: str  # "OK" or the status name
    details: str
    results: int


class TimedTraffic:
    """ScoreBatch calls of fresh entity ids from ``threads`` threads until stopped, each with a
    client deadline; every call is recorded, so an outage can be measured from the client's side."""

    def __init__(
        self,
        target: str,
        model: str,
        *,
        batch: int = 40,
        threads: int = 2,
        timeout: float = 10.0,
        pause: float = 0.01,
    ) -> None:
        self.client = GatewayClient(target)
        self.model = model
        self.batch = batch
        self.timeout = timeout
        self.pause = pause
        self.stop_event = threading.Event()
        self.records: list[CallRecord] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, worker: int) -> None:
        offset = worker * 997
        while not self.stop_event.is_set():
            ids = [uuid.uuid4().hex for _ in range(self.batch)]
            t0 = time.monotonic()
            try:
                resp = self.client.score_batch(self.model, ids, offset, timeout=self.timeout)
                rec = CallRecord(t0, time.monotonic(), "OK", "", len(resp.results))
            except grpc.RpcError as exc:
                code = exc.code().name  # type: ignore[attr-defined]
                rec = CallRecord(t0, time.monotonic(), code, exc.details() or "", 0)  # type: ignore[attr-defined]
            with self._lock:
                self.records.append(rec)
            offset += self.batch
            self.stop_event.wait(self.pause if rec.code == "OK" else max(self.pause, 0.02))

    def snapshot(self) -> list[CallRecord]:
        with self._lock:
            return list(self.records)

    @property
    def codes(self) -> Counter[str]:
        return Counter(r.code for r in self.snapshot())

    @property
    def errors(self) -> Counter[str]:
        return Counter(r.code for r in self.snapshot() if r.code != "OK")

    @property
    def ok_results(self) -> int:
        return sum(r.results for r in self.snapshot() if r.code == "OK")

    def ok_since(self, t: float) -> int:
        return sum(1 for r in self.snapshot() if r.code == "OK" and r.started >= t)

    def wait_ok(self, after: float, n: int, timeout: float, what: str) -> float:
        """Waits for ``n`` OK calls that started at or after ``after``; returns when the first ended."""
        wait_for(lambda: self.ok_since(after) >= n, timeout, what)
        return min(r.ended for r in self.snapshot() if r.code == "OK" and r.started >= after)

    def errors_after(self, t: float) -> list[CallRecord]:
        return [r for r in self.snapshot() if r.code != "OK" and r.ended >= t]

    def recovery_s(self, fault_at: float) -> float:
        """Seconds from ``fault_at`` until the first OK call that started after the last error
        (0 when the clients saw no error at all)."""
        errors = self.errors_after(fault_at)
        if not errors:
            return 0.0
        last_error = max(r.ended for r in errors)
        oks = [r.ended for r in self.snapshot() if r.code == "OK" and r.started >= last_error]
        return (min(oks) if oks else math.inf) - fault_at

    def longest_call_s(self) -> float:
        return max((r.ended - r.started for r in self.snapshot()), default=0.0)

    def __enter__(self) -> TimedTraffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 30)
        self.client.close()


SCORE_BATCH_METHOD = "/finpredict.scoring.v1.ScoringService/ScoreBatch"


@dataclass(frozen=True)
class GatewayCounts:
    """What the gateway counted for one model: retries, scored applications, ScoreBatch calls by
    status (server side), open circuits."""

    retries: float
    scored_ok: float
    scored_error: float
    handled: Counter[str]
    circuits_open: float

    def __sub__(self, other: GatewayCounts) -> GatewayCounts:
        handled = Counter({k: v - other.handled[k] for k, v in self.handled.items()})
        return GatewayCounts(
            self.retries - other.retries,
            self.scored_ok - other.scored_ok,
            self.scored_error - other.scored_error,
            +handled,
            self.circuits_open,
        )


def gateway_counts(metrics_port: int, model: str) -> GatewayCounts:
    scraped = samples(metrics_port)
    handled: Counter[str] = Counter()
    for name, labels, value in scraped:
        if name == "finpredict_grpc_server_handled_total" and labels.get("grpc_method") == SCORE_BATCH_METHOD:
            handled[labels["grpc_code"]] += int(value)
    return GatewayCounts(
        total(scraped, "finpredict_gateway_backend_retries_total", model=model),
        total(scraped, "finpredict_gateway_scored_total", model=model, outcome="ok"),
        total(scraped, "finpredict_gateway_scored_total", model=model, outcome="error"),
        handled,
        total(scraped, "finpredict_gateway_circuit_open", model=model),
    )


@dataclass(frozen=True)
class LogCounts:
    """The prediction log as the gateway and the monitor count it."""

    sent: float
    dropped: float
    buffered: float
    ingested: float  # by the monitor, for the model
    duplicates: float


def log_counts(gateway_metrics_port: int, monitor_metrics_port: int, model: str) -> LogCounts:
    return LogCounts(
        metric_value(gateway_metrics_port, "finpredict_gateway_prediction_log_sent_total"),
        metric_value(gateway_metrics_port, "finpredict_gateway_prediction_log_dropped_total"),
        metric_value(gateway_metrics_port, "finpredict_gateway_prediction_log_buffer_records"),
        metric_value(monitor_metrics_port, "finpredict_monitor_records_ingested_total", model=model),
        metric_value(monitor_metrics_port, "finpredict_monitor_records_duplicate_total", model=model),
    )


def reconcile_log(
    gateway_metrics_port: int, monitor_metrics_port: int, model: str, before: LogCounts, ok_results: int
) -> LogCounts:
    """Waits until every result of an OK call is accounted for by the gateway's prediction log
    (sent or counted as dropped) and returns the deltas; the caller checks the monitor's side."""

    def settled() -> LogCounts | None:
        now = log_counts(gateway_metrics_port, monitor_metrics_port, model)
        delta = LogCounts(*(a - b for a, b in zip(vars(now).values(), vars(before).values(), strict=True)))
        done = delta.sent + delta.dropped >= ok_results + before.buffered
        return delta if now.buffered == 0 and done else None

    return wait_for(settled, 60, "the prediction log to drain")


def cluster_pids(ray: RayCluster) -> list[int]:
    """Every live process of ``ray`` (found by its marker): head, GCS, raylet, workers, replicas."""
    out = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if f"FP_TEST_RAY={ray.marker}".encode() not in (entry / "environ").read_bytes():
                continue
            if (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue  # a zombie waiting for its parent
        except OSError:
            continue
        out.append(int(entry.name))
    return sorted(out)


def restart_registry(old: ServiceProcess) -> ServiceProcess:
    """Starts the registry again on ``old``'s port and data dir (the same settings)."""
    env = {**old.extra_env, "FINPREDICT_REGISTRY_PORT": str(old.port)}
    return start_service("registry", old.log_path.parent, env=env)


def production_version(stack: Stack) -> int:
    """The version the registry's `production` alias points at for the stack's model."""
    got = stack.registry.stub.GetVersion(
        registry_pb2.GetVersionRequest(model=stack.model, alias="production"),
        metadata=stack.registry.md,
        timeout=10,
    )
    return int(got.version.version)


def median_s(values: list[float]) -> float:
    return round(statistics.median(values), 3) if values else math.nan


def report_fault(fault: str, **figures: object) -> None:
    """Prints a fault test's figures (``pytest -rP`` shows them)."""
    print(f"\n[fault] {fault}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
