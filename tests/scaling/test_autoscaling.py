"""Serve autoscaling through the gateway: the model server runs the packaged serve_config.yaml
with an autoscaling policy sized for this test (one to three replicas, a target of one ongoing
request, delays of seconds instead of the shipped ones); ScoreBatch load through
the gateway raises the replica count above the minimum, and it returns to the minimum once
the load stops. The replica count is sampled from the cluster's processes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpredict.testkit.gateway import Stack, TimedTraffic, running_stack, train
from finpredict.testkit.names import unique
from finpredict.testkit.process import wait_for
from finpredict.testkit.scaling import ReplicaCounter
from finpredict.testkit.serving import ServeOptions

pytestmark = pytest.mark.slow

MIN_REPLICAS, MAX_REPLICAS = 1, 3
AUTOSCALING = {
    "min_replicas": MIN_REPLICAS,
    "max_replicas": MAX_REPLICAS,
    "target_ongoing_requests": 1,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
    "upscale_delay_s": 1,
    "downscale_delay_s": 4,
}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    model = unique("credit")
    # new replicas load `production` (the first version) before they count as ready
    serve = ServeOptions(autoscaling=AUTOSCALING, args={"preload": [f"{model}:1"]})
    tmp: Path = tmp_path_factory.mktemp("autoscaling")
    with running_stack(tmp, model, {"v1": train(seed=1, rounds=20)}, serve=serve) as s:
        wait_for(lambda: len(s.ray.replica_pids()) == MIN_REPLICAS, 120, "the minimum replica count")
        yield s


def test_replicas_rise_under_load_and_return_to_the_minimum_after(stack: Stack) -> None:
    with ReplicaCounter(stack.ray) as replicas:
        # six clients keep several requests ongoing (the gateway coalesces a version's calls only
        # within its short window), against a target of one per replica
        with TimedTraffic(stack.gateway.target, stack.model, batch=40, threads=6, pause=0) as load:
            load_at = time.monotonic()
            wait_for(lambda: replicas.now() > MIN_REPLICAS, 120, "replicas above the minimum under load")
            up_s = time.monotonic() - load_at
            load.wait_ok(time.monotonic(), 30, 60, "calls answered above the minimum")
        stop_at = time.monotonic()
        wait_for(lambda: replicas.now() == MIN_REPLICAS, 120, "the minimum again after the load")
        down_s = time.monotonic() - stop_at
    peak = max(n for _, n in replicas.samples)
    print(
        f"\n[autoscaling] min={MIN_REPLICAS} max={MAX_REPLICAS} target_ongoing=1: above min "
        f"{up_s:.1f}s after the load began, peak {peak}, back to min {down_s:.1f}s after it stopped; "
        f"calls={len(load.snapshot())} errors={dict(load.errors)}; "
        f"timeline (s, replicas)={replicas.changes()}"
    )
    assert MIN_REPLICAS < peak <= MAX_REPLICAS
    assert load.errors == {}
