"""Hand-off by policy and the statistics of each decision, on a real registry and gateway whose
model server is an in-process stand-in (no Ray).

A model whose promotion policy hands new versions off to a canary gets a rollout of a newly
registered version that satisfies the policy without any client call: started by
``registry-policy``, naming the version, the policy and the version's trigger; a second new
version waits while that rollout is active and starts when it ends; the first one is never
started again. With the hand-off off, or with a version that fails a gate, nothing starts. Once
traffic flows, ``finpredict rollout status`` shows what drove each analysis decision, read over
the rollout API.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
from typer.testing import CliRunner

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc
from finpredict.client.types import feature_values
from finpredict.common.auth import bearer_metadata
from finpredict.gateway.cli import rollout_app
from finpredict.testkit.cli import ADMIN_TOKEN, READER_TOKEN, CliStack, cli_stack, fake_model_server
from finpredict.testkit.evaluation import PASSING_GATES, gate
from finpredict.testkit.models import train_small_model
from finpredict.testkit.names import unique
from finpredict.testkit.process import wait_for
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.serving import register_requests

POLL_S = 0.3  # the gateway's hand-off poll
HANDOFF_CHECKS = "finpredict_gateway_handoff_checks_total"
OPERATOR = bearer_metadata(ADMIN_TOKEN)
CLIENT = bearer_metadata(READER_TOKEN)
FAILING_GATES = [gate("auc_roc", 0.61, 0.82), *PASSING_GATES[1:]]


@dataclass
class Stack:
    cli: CliStack
    rollouts: rollout_pb2_grpc.RolloutServiceStub
    scoring: scoring_pb2_grpc.ScoringServiceStub


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    trained = (train_small_model(seed=1, rounds=5), train_small_model(seed=2, rounds=6))
    env = {"FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "0.2", "FINPREDICT_GATEWAY_HANDOFF_POLL_S": str(POLL_S)}
    with (
        fake_model_server() as (target, _),
        cli_stack(tmp_path_factory.mktemp("handoff"), trained, target, gateway_env=env) as cli,
        grpc.insecure_channel(cli.target) as channel,
    ):
        yield Stack(
            cli, rollout_pb2_grpc.RolloutServiceStub(channel), scoring_pb2_grpc.ScoringServiceStub(channel)
        )


def register(stack: Stack, model: str, which: int, *, trigger: str, gates: list[types_pb2.GateResult]) -> int:
    reqs = register_requests(model, stack.cli.trained[which], gate_results=gates, trigger=trigger)
    resp = stack.cli.admin.stub.RegisterVersion(iter(reqs), metadata=stack.cli.admin.md, timeout=60)
    return int(resp.version.version)


def hand_off(
    stack: Stack, model: str, mode: registry_pb2.HandOffMode.ValueType
) -> registry_pb2.PromotionPolicy:
    """Sets the model's hand-off (the default gates and lineage stay): canary steps 50 -> 100,
    analysis every 0.5 s once each variant has 200 requests, latency limits loose for a shared CPU."""
    admin = stack.cli.admin
    current = admin.stub.GetPolicy(registry_pb2.GetPolicyRequest(model=model), metadata=admin.md, timeout=30)
    h = registry_pb2.HandOff(
        mode=mode,
        steps=[50.0, 100.0],
        min_requests_per_step=200,
        thresholds=rpb.AnalysisThresholds(max_p99_latency_ms=5000.0, max_p99_latency_ratio=10.0),
    )
    h.analysis_interval.FromMilliseconds(500)
    policy = registry_pb2.PromotionPolicy(
        gates=current.policy.gates, required_lineage=current.policy.required_lineage, hand_off=h
    )
    req = registry_pb2.SetPolicyRequest(model=model, policy=policy, reason="test")
    return admin.stub.SetPolicy(req, metadata=admin.md, timeout=30).policy


def rollouts_of(stack: Stack, model: str) -> list[rpb.Rollout]:
    resp = stack.rollouts.ListRollouts(rpb.ListRolloutsRequest(model=model), metadata=OPERATOR, timeout=10)
    return list(resp.rollouts)


def rollout_of(stack: Stack, model: str, version: int) -> rpb.Rollout | None:
    found = [r for r in rollouts_of(stack, model) if r.candidate_version == version]
    return found[0] if found else None


def looked_at(stack: Stack, model: str, outcome: str, times: int = 2) -> None:
    """Waits until the hand-off watcher has looked at ``model``'s newest version ``times`` times
    with ``outcome`` (its checks counter)."""
    wait_for(
        lambda: metric_value(stack.cli.gateway, HANDOFF_CHECKS, model=model, outcome=outcome) >= times,
        15,
        f"the hand-off watcher to look at {model} ({outcome}) {times} times",
    )


def new_model(stack: Stack, prefix: str) -> str:
    """A model with v1 (passing gates) in production."""
    name = unique(prefix)
    stack.cli.admin.create_model(name)
    stack.cli.admin.set_production(name, register(stack, name, 0, trigger="manual", gates=PASSING_GATES))
    return name


def test_a_new_version_satisfying_the_policy_enters_a_canary_by_itself_once(stack: Stack) -> None:
    model = new_model(stack, "handoff")
    policy = hand_off(stack, model, registry_pb2.HAND_OFF_MODE_CANARY)
    assert policy.hand_off.after_version == 1  # versions registered from now on

    v2 = register(stack, model, 1, trigger="alert:drift-1", gates=PASSING_GATES)
    first = wait_for(
        lambda: rollout_of(stack, model, v2), 15, f"a rollout of {model} v{v2} started by policy"
    )
    assert first.started_by == "registry-policy"
    assert (first.stable_version, list(first.steps)) == (1, [50.0, 100.0])
    assert first.analysis_interval.ToMilliseconds() == 500
    assert first.min_requests_per_step == 200
    assert first.thresholds.max_p99_latency_ms == 5000.0
    start = first.decisions[0]
    assert start.verdict == "start"
    for needle in ("registry-policy started", f"v1 -> v{v2}", "trigger alert:drift-1", "promotion policy",
                   "set by alice", "hand-off is canary for versions after v1"):  # fmt: skip
        assert needle in start.reason, start.reason

    # a newer version waits while that rollout is active ...
    v3 = register(stack, model, 0, trigger="schedule", gates=PASSING_GATES)
    looked_at(stack, model, "waiting")  # the watcher saw v3 and waits ...
    assert rollout_of(stack, model, v3) is None, "started while another rollout of the model was active"
    # ... and starts once it has ended; the first version is never started again
    stack.rollouts.AbortRollout(
        rpb.AbortRolloutRequest(rollout_id=first.id, reason="test"), metadata=OPERATOR
    )
    second = wait_for(
        lambda: rollout_of(stack, model, v3), 15, f"the rollout of {model} v{v3} after the abort"
    )
    assert "trigger schedule" in second.decisions[0].reason
    assert [r.candidate_version for r in rollouts_of(stack, model)] == [v3, v2]


def test_nothing_starts_with_the_hand_off_off_or_a_failing_gate(stack: Stack) -> None:
    off = new_model(stack, "handoff-off")
    assert not hand_off(stack, off, registry_pb2.HAND_OFF_MODE_OFF).hand_off.after_version
    failing = new_model(stack, "handoff-gate")
    hand_off(stack, failing, registry_pb2.HAND_OFF_MODE_CANARY)
    default = new_model(stack, "handoff-default")  # no policy of its own: the default, hand-off off
    control = new_model(stack, "handoff-control")
    hand_off(stack, control, registry_pb2.HAND_OFF_MODE_CANARY)

    register(stack, off, 1, trigger="manual", gates=PASSING_GATES)
    register(stack, failing, 1, trigger="manual", gates=FAILING_GATES)
    register(stack, default, 1, trigger="manual", gates=PASSING_GATES)
    v2 = register(stack, control, 1, trigger="manual", gates=PASSING_GATES)
    # the control model shows the watcher was at work meanwhile
    wait_for(lambda: rollout_of(stack, control, v2), 15, "the control model's rollout")
    # the watcher looked at each new version (twice: a second look decides nothing else) ...
    for model, outcome in ((off, "off"), (failing, "unsatisfied"), (default, "off")):
        looked_at(stack, model, outcome)
    # ... and started nothing
    for model in (off, failing, default):
        assert rollouts_of(stack, model) == [], model


def send(stack: Stack, model: str, rng: np.random.Generator, n: int = 1000) -> None:
    """Scores ``n`` applications of fresh customers in one request."""
    apps = [
        spb.Application(
            entity_id=uuid.uuid4().hex,
            features=feature_values(
                {
                    "annual_revenue": float(rng.uniform(5e4, 5e5)),
                    "debt": float(rng.uniform(1e3, 3e5)),
                    "owner_income": float(rng.uniform(2e4, 2e5)),
                    "years_in_business": int(rng.integers(0, 40)),
                    "late_payments_12m": int(rng.integers(0, 5)),
                    "sector": "retail",
                }
            ),
        )
        for _ in range(n)
    ]
    stack.scoring.ScoreBatch(
        spb.ScoreBatchRequest(model=model, applications=apps), metadata=CLIENT, timeout=60
    )


def test_status_shows_what_drove_each_decision(stack: Stack) -> None:
    model = new_model(stack, "handoff-stats")
    hand_off(stack, model, registry_pb2.HAND_OFF_MODE_CANARY)
    v2 = register(stack, model, 1, trigger="manual", gates=PASSING_GATES)
    rollout = wait_for(lambda: rollout_of(stack, model, v2), 15, "the rollout started by policy")

    # applications of fresh customers, 1,000 a request (about 500 on each variant), until the
    # analysis decides on the step (the model checks need 500 canary rows on its profile)
    rng = np.random.default_rng(3)
    deadline = time.monotonic() + 60
    while True:
        send(stack, model, rng)
        got = stack.rollouts.GetRollout(
            rpb.GetRolloutRequest(rollout_id=rollout.id), metadata=CLIENT, timeout=10
        ).rollout
        if any(d.verdict in ("advance", "rollback") for d in got.decisions):
            break
        assert time.monotonic() < deadline, [(d.verdict, d.reason) for d in got.decisions]
    decision = next(d for d in got.decisions if d.verdict in ("advance", "rollback"))
    doc = json.loads(decision.statistics)  # the rollout API carries the statistics of each analysis
    assert {t["metric"] for t in doc["tests"]} >= {"error_rate", "approval_rate"}

    env = {"FINPREDICT_GATEWAY_TARGET": stack.cli.target, "FINPREDICT_TOKEN": READER_TOKEN, "COLUMNS": "4000"}
    shown = CliRunner().invoke(rollout_app, ["status", "--id", rollout.id], env=env)
    assert shown.exit_code == 0, shown.output
    assert "what drove it" in shown.output
    line = next(ln for ln in shown.output.splitlines() if f" {decision.verdict} " in ln and "merged" in ln)
    for needle in ("1 replica merged", "window n canary/stable", "score PSI", "error_rate ", " CS [",
                   "approval_rate ", "SRM ok p", "expected AUC", "alpha 0.05"):  # fmt: skip
        assert needle in line, line
