"""Harness of the scaling tests and benchmarks: many models through one gateway, replica counts
over time, replica memory, a model with its own `production` version."""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from finpredict.testkit.gateway import GatewayClient
from finpredict.testkit.models import TrainedModel
from finpredict.testkit.serving import RayCluster, Registry


def add_production_model(registry: Registry, name: str, trained: TrainedModel) -> int:
    """Creates ``name`` with one version of ``trained`` (registered with passing gates and
    lineage, as the pipeline does) as its `production`."""
    registry.create_model(name)
    version = registry.register(name, trained)
    registry.set_alias(name, "production", version)
    return version


def latency_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p99 (ms) and the number of calls of ``values`` (seconds)."""
    if not values:
        return {"p50_ms": float("nan"), "p99_ms": float("nan"), "calls": 0}
    ms = np.asarray(values) * 1000
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 2),
        "p99_ms": round(float(np.percentile(ms, 99)), 2),
        "calls": len(values),
    }


@dataclass(frozen=True)
class ModelCall:
    """One ScoreBatch call of :class:`MultiModelTraffic`: its model, when it started and ended
    (monotonic), its status and the versions that answered its applications."""

    model: str
    started: float
    ended: float
    code: str
    versions: tuple[int, ...]

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class MultiModelTraffic:
    """ScoreBatch calls of ``batch`` fresh entity ids from ``threads`` threads, each thread going
    round the ``models`` in turn (so every model gets the same share), until stopped; every call
    is recorded."""

    def __init__(
        self, target: str, models: Sequence[str], *, threads: int = 3, batch: int = 10, timeout: float = 10.0
    ) -> None:
        self.client = GatewayClient(target)
        self.models = list(models)
        self.batch = batch
        self.timeout = timeout
        self.stop_event = threading.Event()
        self._records: list[ModelCall] = []
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def _run(self, worker: int) -> None:
        offset = worker * 997
        start = worker * len(self.models) // max(len(self._threads), 1)
        for model in itertools.islice(itertools.cycle(self.models), start, None):
            if self.stop_event.is_set():
                return
            ids = [uuid.uuid4().hex for _ in range(self.batch)]
            t0 = time.monotonic()
            try:
                resp = self.client.score_batch(model, ids, offset, timeout=self.timeout)
                versions = tuple(r.model.version for r in resp.results)
                call = ModelCall(model, t0, time.monotonic(), "OK", versions)
            except grpc.RpcError as exc:
                call = ModelCall(model, t0, time.monotonic(), exc.code().name, ())  # type: ignore[attr-defined]
                self.stop_event.wait(0.02)
            with self._lock:
                self._records.append(call)
            offset += self.batch

    def calls(self, since: float = 0.0, until: float = float("inf")) -> list[ModelCall]:
        """The calls that started in [since, until)."""
        with self._lock:
            return [c for c in self._records if since <= c.started < until]

    def ok_calls(self, model: str, since: float = 0.0) -> int:
        return sum(1 for c in self.calls(since) if c.model == model and c.code == "OK")

    def errors(self, since: float = 0.0, until: float = float("inf")) -> Counter[str]:
        return Counter(c.code for c in self.calls(since, until) if c.code != "OK")

    def versions(self, model: str, since: float = 0.0, until: float = float("inf")) -> Counter[int]:
        """How many applications of ``model`` each version answered in the window."""
        return Counter(v for c in self.calls(since, until) if c.model == model for v in c.versions)

    def latencies(self, model: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        """Seconds of the OK calls of ``model`` in the window."""
        return [c.seconds for c in self.calls(since, until) if c.model == model and c.code == "OK"]

    def __enter__(self) -> MultiModelTraffic:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=self.timeout + 30)
        self.client.close()


class ReplicaCounter:
    """Samples how many replica processes of ``app`` the cluster runs, every ``period_s``."""

    def __init__(self, cluster: RayCluster, app: str = "model-server", period_s: float = 0.5) -> None:
        self.cluster = cluster
        self.app = app
        self.period_s = period_s
        self.t0 = time.monotonic()
        self.samples: list[tuple[float, int]] = []  # (seconds since start, replicas)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            count = len(self.cluster.replica_pids(self.app))
            self.samples.append((round(time.monotonic() - self.t0, 1), count))
            self._stop.wait(self.period_s)

    def now(self) -> int:
        return self.samples[-1][1] if self.samples else len(self.cluster.replica_pids(self.app))

    def changes(self) -> list[tuple[float, int]]:
        """The samples where the count changed (and the first): the timeline in short."""
        out: list[tuple[float, int]] = []
        for t, n in list(self.samples):
            if not out or out[-1][1] != n:
                out.append((t, n))
        return out

    def __enter__(self) -> ReplicaCounter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass(frozen=True)
class ProcessMemory:
    """A process's resident memory (MiB): all of it (RSS) and its private part (USS, what the
    process alone costs; shared libraries and Ray's shared memory left out)."""

    rss_mib: float
    uss_mib: float


def process_memory(pid: int) -> ProcessMemory:
    """From ``/proc/<pid>/smaps_rollup`` (Linux)."""
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, _, rest = line.partition(":")
        parts = rest.split()
        if parts and parts[0].isdigit():
            fields[key] = int(parts[0])  # kB
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return ProcessMemory(round(fields.get("Rss", 0) / 1024, 1), round(uss / 1024, 1))
