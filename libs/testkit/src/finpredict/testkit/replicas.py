"""Harness of the multi-gateway tests: three gateway replicas sharing one PostgreSQL state database,
the real registry, Ray with the model-server app, on loopback.

Each replica reaches PostgreSQL through its own :class:`~finpredict.testkit.proxy.DelayProxy`,
so a test can cut one replica off the database. Replicas have fixed ports and replica ids, so a
test can kill one and :meth:`Fleet.ensure_running` starts it again as the same replica.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from finpredict.common.net import free_port
from finpredict.testkit.gateway import (
    REGISTRY_TOKENS,
    REPLICA_TOKEN,
    GatewayClient,
    start_gateway,
)
from finpredict.testkit.models import TrainedModel
from finpredict.testkit.names import unique
from finpredict.testkit.process import ServiceProcess, wait_for
from finpredict.testkit.proxy import DelayProxy
from finpredict.testkit.registry import Postgres, start_registry
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.serving import ModelServerClient, Registry, ray_cluster, start_model_server

NAMES = ("gw-a", "gw-b", "gw-c")
LEASE_S = 2.0


def binomial_99(p: float, n: int) -> tuple[float, float]:
    """Two-sided 99 % (normal approximation) interval of the share of ``n`` trials that succeed
    with probability ``p``."""
    half = 2.576 * math.sqrt(p * (1 - p) / n)
    return p - half, p + half


@dataclass
class Replica:
    """One gateway replica: its process (None while stopped), port, database proxy and client."""

    name: str
    port: int
    tmp: Path
    proxy: DelayProxy
    env: dict[str, str]
    proc: ServiceProcess | None = None
    client: GatewayClient = field(init=False)

    def __post_init__(self) -> None:
        self.client = GatewayClient(f"127.0.0.1:{self.port}")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.proc.poll() is None

    @property
    def metrics_port(self) -> int:
        assert self.proc is not None
        return self.proc.metrics_port

    def metric(self, name: str, **labels: str) -> float:
        return metric_value(self.metrics_port, name, **labels)

    def weight(self, model: str) -> float:
        """The canary weight this replica routes ``model`` by (its in-memory state)."""
        return self.metric("finpredict_gateway_rollout_weight_percent", model=model)

    def logs(self) -> str:
        return self.proc.logs() if self.proc is not None else ""


@dataclass
class Fleet:
    registry: Registry
    model_server: ModelServerClient
    serve_port: int
    replicas: dict[str, Replica]
    models: tuple[TrainedModel, TrainedModel]
    database_url: str  # the shared state database, directly (not through a replica's proxy)

    def __getitem__(self, name: str) -> Replica:
        return self.replicas[name]

    def all(self) -> list[Replica]:
        return list(self.replicas.values())

    def start(self, name: str) -> Replica:
        replica = self.replicas[name]
        replica.proxy.restore()
        replica.proc = start_gateway(
            replica.tmp, self.registry.target, self.serve_port, "", port=replica.port, **replica.env
        )
        return replica

    def ensure_running(self) -> None:
        """Every replica up, on the database, after a test killed, stopped or cut one off."""
        for name, replica in self.replicas.items():
            replica.proxy.restore()
            if replica.proc is not None and replica.proc.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(replica.proc.proc.pid, signal.SIGCONT)
                continue
            self.start(name)

    def leader(self, among: Sequence[str] = NAMES, timeout: float = 3 * LEASE_S) -> str:
        """The replica that holds the controller lease, as the replicas themselves say."""

        def one() -> str | None:
            holders = [
                n for n in among if self.replicas[n].metric("finpredict_gateway_controller_leader") == 1
            ]
            return holders[0] if len(holders) == 1 else None

        return wait_for(one, timeout, f"one leader among {list(among)}")

    def new_model(self) -> tuple[str, int, int]:
        """A fresh model with a stable version (`production`) and a candidate, both gated and
        loaded on the model server (so no first call waits for a load)."""
        name = unique("multi")
        self.registry.create_model(name)
        stable, candidate = (self.registry.register(name, m) for m in self.models)
        for version in (stable, candidate):
            self.model_server.load(name, version)
        self.registry.set_alias(name, "production", stable)
        return name, stable, candidate

    def stored_state(self) -> dict[str, object]:
        """What the shared database holds: the change counter, the rollouts (id, model, state,
        revision), the experiments and the shadows, read directly."""
        engine = create_engine(self.database_url, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                query = conn.exec_driver_sql
                return {
                    "version": query("SELECT version FROM state_meta").scalar_one(),
                    "rollouts": query("SELECT id, model, state, revision FROM rollouts ORDER BY id").all(),
                    "experiments": query("SELECT id, running_model FROM experiments ORDER BY id").all(),
                    "shadows": query("SELECT model, version, percent FROM shadows ORDER BY model").all(),
                }
        finally:
            engine.dispose()

    def close(self) -> None:
        for replica in self.replicas.values():
            replica.client.close()


@contextlib.contextmanager
def running_fleet(tmp: Path, pg: Postgres, models: tuple[TrainedModel, TrainedModel]) -> Iterator[Fleet]:
    """The registry, Ray with the model server and three gateways sharing a fresh database."""
    with contextlib.ExitStack() as cleanup:
        reg_proc = start_registry(
            tmp / "registry",
            REGISTRY_TOKENS,
            {
                "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.5",
            },
        )
        cleanup.callback(reg_proc.stop)
        registry = Registry(reg_proc)
        cleanup.callback(registry.close)
        ray = cleanup.enter_context(ray_cluster({"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": REPLICA_TOKEN}))
        (tmp / "model-server").mkdir()
        ms_proc, serve_port = start_model_server(tmp / "model-server", ray, registry)
        cleanup.callback(ms_proc.stop, timeout=60)
        model_server = ModelServerClient(f"127.0.0.1:{serve_port}")
        cleanup.callback(model_server.close)
        url = make_url(pg.new_database())
        replicas: dict[str, Replica] = {}
        for name in NAMES:
            proxy = DelayProxy(url.port or 5432).start()
            cleanup.callback(proxy.stop)
            db_url = url.set(port=proxy.port).render_as_string(hide_password=False)
            env = {
                "FINPREDICT_GATEWAY_DATABASE_URL": db_url,
                "FINPREDICT_GATEWAY_REPLICA_ID": name,
                "FINPREDICT_GATEWAY_LEASE_S": str(LEASE_S),
                "FINPREDICT_GATEWAY_STATE_POLL_S": "0.25",
            }
            replicas[name] = Replica(name, free_port(), tmp / name, proxy, env)
        fleet = Fleet(
            registry, model_server, serve_port, replicas, models, url.render_as_string(hide_password=False)
        )
        cleanup.callback(fleet.close)
        for replica in replicas.values():
            cleanup.callback(_stop, replica)
        for name in NAMES:
            fleet.start(name)
        yield fleet


def _stop(replica: Replica) -> None:
    if replica.proc is None or replica.proc.proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(replica.proc.proc.pid, signal.SIGCONT)  # a test may have left it stopped
    replica.proc.stop(timeout=30)
