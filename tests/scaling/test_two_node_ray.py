"""The model server on a two-node Ray cluster: a head (``ray start --head``) and a worker node
(``ray start --address``) on loopback, one CPU each, the whole stack in front (registry, model
server, monitor, gateway). The deployment places one replica per node (``max_replicas_per_node``)
and preloads the `production` version, so both replicas serve. Losing the worker node under
load (SIGKILL to everything of that node at once, as a lost machine) keeps traffic flowing: the
gateway retries the calls the dead replica dropped, clients see at most ``UNAVAILABLE`` (which
the SDK retries), and a client on the SDK sees no error at all."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpredict.client import Application as SdkApplication
from finpredict.client import RetryPolicy, ScoringClient, ScoringError
from finpredict.testkit.gateway import (
    CLIENT_TOKEN,
    RECORDS,
    Stack,
    TimedTraffic,
    gateway_counts,
    report_fault,
    running_stack,
    train,
)
from finpredict.testkit.names import unique
from finpredict.testkit.process import wait_for
from finpredict.testkit.serving import HEAD, ServeOptions, served_calls

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    model = unique("credit")
    serve = ServeOptions(
        replicas=2,
        deployment={"max_replicas_per_node": 1},
        args={"preload": [f"{model}:1"]},  # the first registered version: `production`
    )
    tmp: Path = tmp_path_factory.mktemp("two-nodes")
    # Serve's proxies send to replicas of their own node first; the gateway has one target (the
    # head's proxy), so without this the worker's replica would get no traffic to lose.
    env = {"RAY_SERVE_PROXY_PREFER_LOCAL_NODE_ROUTING": "0"}
    train_v1 = {"v1": train(seed=1, rounds=20)}
    with running_stack(tmp, model, train_v1, env, serve=serve, ray_workers=1) as s:
        wait_for(lambda: len(s.ray.replicas_by_node()) == 2, 120, "a replica on each node")
        yield s


class SdkLoop:
    """Scores batches through the SDK (which retries UNAVAILABLE) until stopped; keeps what
    reached the caller after the SDK's retries."""

    def __init__(self, target: str, model: str) -> None:
        self.client = ScoringClient(target, token=CLIENT_TOKEN, timeout=30, retry=RetryPolicy(max_attempts=8))
        self.model = model
        self.ok = 0
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        n = 0
        while not self._stop.is_set():
            apps = [SdkApplication(f"sdk-{n}-{i}", RECORDS[(n + i) % len(RECORDS)]) for i in range(20)]
            n += 20
            try:
                self.client.score_batch(self.model, apps)
                self.ok += 1
            except ScoringError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> SdkLoop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        self.client.close()


def _replicas_on_both_nodes_answer(stack: Stack) -> None:
    """One replica on each node, and both answer calls through the gateway."""
    by_node = stack.ray.replicas_by_node()
    assert sorted(by_node) == sorted([HEAD, stack.ray.workers[0].name])
    assert all(len(pids) == 1 for pids in by_node.values())
    worker = stack.ray.workers[0]
    before = served_calls(stack.ray.temp_dir), worker.served_calls()

    def both_answered() -> bool:
        resp = stack.client.score_batch(stack.model, [f"a{i}" for i in range(50)])
        assert {r.model.version for r in resp.results} == {stack.versions["v1"]}
        return served_calls(stack.ray.temp_dir) > before[0] and worker.served_calls() > before[1]

    wait_for(both_answered, 60, "calls answered by the replicas of both nodes")


def test_replicas_on_both_nodes_serve_and_losing_the_worker_under_load_loses_no_request(
    stack: Stack,
) -> None:
    """One test, not two: losing the worker destroys what the first half checks, and tests run in
    any order."""
    _replicas_on_both_nodes_answer(stack)
    worker = stack.ray.workers[0]
    head_replica = stack.ray.replica_pids(node=HEAD)
    before = gateway_counts(stack.gateway.metrics_port, stack.model)
    with (
        TimedTraffic(stack.gateway.target, stack.model, batch=40, threads=2) as raw,
        SdkLoop(stack.gateway.target, stack.model) as sdk,
    ):
        raw.wait_ok(time.monotonic(), 20, 60, "traffic before the kill")
        wait_for(lambda: sdk.ok >= 3, 60, "SDK traffic before the kill")
        served = worker.served_calls()
        wait_for(lambda: worker.served_calls() >= served + 10, 60, "the worker's replica answering")
        killed = worker.kill()
        fault_at = time.monotonic()
        assert worker.pids() == []
        # long enough for the cluster to notice the node is gone (GCS health checks), with traffic on
        raw.wait_ok(fault_at + 15, 20, 90, "traffic after the worker node is gone")
        sdk_ok_after = sdk.ok
        wait_for(lambda: sdk.ok >= sdk_ok_after + 3, 60, "SDK traffic after the worker node is gone")
    counts = gateway_counts(stack.gateway.metrics_port, stack.model) - before
    report_fault(
        "worker node lost",
        killed_pids=len(killed),
        calls=len(raw.snapshot()),
        worker_served=worker.served_calls(),
        client_errors=dict(raw.errors),
        recovery_s=round(raw.recovery_s(fault_at), 3),
        longest_call_s=round(raw.longest_call_s(), 3),
        gateway_retries=counts.retries,
        sdk_ok=sdk.ok,
        sdk_failures=len(sdk.failures),
    )
    assert sdk.failures == []  # nothing reached a caller of the SDK
    assert set(raw.errors) <= {"UNAVAILABLE"}  # the raw clients saw at most retryable UNAVAILABLE
    assert stack.ray.replica_pids(node=HEAD) == head_replica  # the head's replica served throughout
