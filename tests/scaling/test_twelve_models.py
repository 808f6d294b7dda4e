"""Twelve models at once: twelve registered models, each with its own `production` version,
scored together through one gateway and one model-server deployment (two replicas holding the
versions through Serve's model multiplexing, the packaged ``max_models_per_replica``). A
canary rollout on one model changes that model's routing only: the other eleven keep answering
from their `production` version, and their latency stays within the noise of this machine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.testkit.gateway import Stack, running_stack, train
from finpredict.testkit.names import unique
from finpredict.testkit.process import wait_for
from finpredict.testkit.scaling import MultiModelTraffic, add_production_model, latency_ms

pytestmark = pytest.mark.slow

MODELS = 12


@dataclass
class Fleet:
    stack: Stack
    production: dict[str, int]  # model -> its `production` version

    @property
    def names(self) -> list[str]:
        return list(self.production)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    first = unique("credit")
    tmp: Path = tmp_path_factory.mktemp("twelve")
    versions = {"v1": train(seed=1, rounds=20), "v2": train(seed=2, rounds=22)}
    with running_stack(tmp, first, versions) as stack:
        production = {first: stack.versions["v1"]}
        for i in range(1, MODELS):
            name = f"{first}-m{i:02d}"
            production[name] = add_production_model(stack.registry, name, train(seed=10 + i, rounds=20))
        yield Fleet(stack, production)


def _enough(traffic: MultiModelTraffic, models: list[str], since: float, calls: int) -> bool:
    return all(traffic.ok_calls(m, since) >= calls for m in models)


def test_twelve_models_are_scored_at_once(fleet: Fleet) -> None:
    with MultiModelTraffic(fleet.stack.gateway.target, fleet.names, threads=3) as traffic:
        start = time.monotonic()
        wait_for(lambda: _enough(traffic, fleet.names, start, 20), 180, "20 calls answered per model")
    figures = {m: latency_ms(traffic.latencies(m)) for m in fleet.names}
    print("\n[twelve models] per-model latency: " + ", ".join(f"{m}={f}" for m, f in figures.items()))
    assert traffic.errors() == {}
    for model, version in fleet.production.items():
        assert set(traffic.versions(model)) == {version}, model


def test_a_rollout_on_one_model_leaves_the_other_eleven_alone(fleet: Fleet) -> None:
    stack = fleet.stack
    target, others = fleet.names[0], fleet.names[1:]
    candidate = stack.versions["v2"]
    assert fleet.production[target] != candidate
    with MultiModelTraffic(stack.gateway.target, fleet.names, threads=3) as traffic:
        warm = time.monotonic()
        wait_for(lambda: _enough(traffic, fleet.names, warm, 5), 180, "every model answering")
        baseline = time.monotonic()
        wait_for(lambda: _enough(traffic, fleet.names, baseline, 25), 180, "the baseline window")
        # a canary at 50 % that stays there (hour-long steps) for the whole window
        # the baseline window ends when the rollout is asked for: it takes effect when committed,
        # before the call returns, so requests sent during the call may already reach v2
        during = time.monotonic()
        rollout = stack.client.start_rollout(target, candidate, [50.0, 100.0], 3600, min_requests=10)
        try:
            wait_for(lambda: _enough(traffic, fleet.names, during, 25), 180, "the rollout window")
            end = time.monotonic()
        finally:
            stack.client.abort(rollout.id)
    assert stack.client.rollout(rollout.id).state == rpb.ROLLOUT_STATE_ABORTED
    assert traffic.errors() == {}
    # the rolled-out model: both versions answered during the rollout, only `production` before
    assert set(traffic.versions(target, baseline, during)) == {fleet.production[target]}
    assert set(traffic.versions(target, during, end)) == {fleet.production[target], candidate}
    # the other eleven: the same routing before and during, their own `production` version
    for model in others:
        assert set(traffic.versions(model, baseline, during)) == {fleet.production[model]}, model
        assert set(traffic.versions(model, during, end)) == {fleet.production[model]}, model
    before = latency_ms([s for m in others for s in traffic.latencies(m, baseline, during)])
    after = latency_ms([s for m in others for s in traffic.latencies(m, during, end)])
    print(f"\n[twelve models] the other eleven, before the rollout: {before}; during: {after}")
    # within noise: a shared two-core machine moves a p50 by tens of percent between windows
    assert after["p50_ms"] <= 1.5 * before["p50_ms"] + 5, (before, after)
