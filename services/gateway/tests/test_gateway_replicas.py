"""Many gateways, one rollout: three gateway replicas sharing one PostgreSQL state, with the real
registry and model server (Ray) on loopback.

A rollout started through one replica is applied by the others within a second and routes every
customer identically on all three; the leader analyses the sum of every replica's traffic;
killing or stopping the leader hands the analysis over without a step or promotion recorded
twice; a replica cut off the database keeps routing and refuses admin calls cleanly.
``pytest -rP`` shows the measured figures (propagation delay, takeover time).
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message

from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.testkit.gateway import CLIENT, OPERATOR, TimedTraffic, report_fault, train
from finpredict.testkit.process import wait_for
from finpredict.testkit.registry import Postgres
from finpredict.testkit.replicas import LEASE_S, NAMES, Fleet, Replica, binomial_99, running_fleet

LOOSE = {"max_p99_latency_ms": 5000.0, "max_p99_latency_ratio": 10.0}
NEVER_ENOUGH = 1_000_000  # min_requests_per_step that keeps a rollout waiting (a decision every tick)
PROPAGATION_S = 1.0


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, postgres: Postgres) -> Iterator[Fleet]:
    models = (train(seed=1, rounds=20), train(seed=1, rounds=22))
    with running_fleet(tmp_path_factory.mktemp("replicas"), postgres, models) as fleet:
        yield fleet


@pytest.fixture
def fleet(running: Fleet) -> Fleet:
    """The three replicas, each up and on the database (a test may have killed or cut one)."""
    running.ensure_running()
    return running


def ids(n: int) -> list[str]:
    return [uuid.uuid4().hex for _ in range(n)]


def spread(fleet: Fleet, model: str, entities: Sequence[str], batch: int = 250) -> dict[str, int]:
    """Scores ``entities`` in batches over every replica in turn: entity -> version served."""
    served: dict[str, int] = {}
    replicas = fleet.all()
    for i, start in enumerate(range(0, len(entities), batch)):
        resp = replicas[i % len(replicas)].client.score_batch(model, entities[start : start + batch])
        for r in resp.results:
            assert r.variant in (spb.VARIANT_STABLE, spb.VARIANT_CANARY), r
            served[r.entity_id] = r.model.version
    return served


def admin(replica: Replica, method: str, request: Message) -> Any:
    return getattr(replica.client.rollouts, method)(request, metadata=OPERATOR, timeout=10)


def pause(replica: Replica, rollout_id: str) -> rpb.Rollout:
    return admin(
        replica, "PauseRollout", rpb.PauseRolloutRequest(rollout_id=rollout_id, reason="measure")
    ).rollout


def resume(replica: Replica, rollout_id: str) -> rpb.Rollout:
    return admin(replica, "ResumeRollout", rpb.ResumeRolloutRequest(rollout_id=rollout_id)).rollout


def applied_within(
    replicas: Sequence[Replica], model: str, weight: float, started: float
) -> dict[str, float]:
    """Seconds from ``started`` until each replica routes ``model`` at ``weight``."""
    delays: dict[str, float] = {}

    def all_applied() -> bool:
        for r in replicas:
            if r.name not in delays and r.weight(model) == weight:
                delays[r.name] = round(time.monotonic() - started, 3)
        return len(delays) == len(replicas)

    wait_for(all_applied, 10, f"every replica to route {model} at {weight}%", interval=0.01)
    return delays


def window_of(replica: Replica, rollout_id: str) -> tuple[dict[str, int], int]:
    """The rollout's current window as ``replica`` reports it: requests by variant, and from how
    many replicas."""
    got = replica.client.rollout(rollout_id)
    return {m.variant: m.requests for m in got.metrics}, got.window_replicas


def production(fleet: Fleet, model: str) -> int:
    got = fleet.registry.stub.GetVersion(
        registry_pb2.GetVersionRequest(model=model, alias="production"),
        metadata=fleet.registry.md,
        timeout=10,
    )
    return int(got.version.version)


def production_moves(fleet: Fleet, model: str, version: int) -> int:
    audit = fleet.registry.stub.ListAuditLog(
        registry_pb2.ListAuditLogRequest(model=model), metadata=fleet.registry.md, timeout=10
    )
    return sum(1 for e in audit.entries if e.alias == "production" and e.to_version == version)


def finished(replica: Replica, rollout_id: str, timeout: float = 90) -> rpb.Rollout:
    return wait_for(
        lambda: (r := replica.client.rollout(rollout_id)).state != rpb.ROLLOUT_STATE_PROGRESSING and r,
        timeout,
        "the rollout to finish",
    )


def advance_then_pause(fleet: Fleet, model: str, rollout_id: str, step: int) -> rpb.Rollout:
    """Resumes the rollout, sends traffic until the leader advances it to ``step``, pauses it there."""
    a, b, c = fleet.all()
    resume(c, rollout_id)
    turn = 0
    while True:
        fleet.all()[turn % 3].client.score_batch(model, ids(200))
        turn += 1
        now = b.client.rollout(rollout_id)
        assert now.state == rpb.ROLLOUT_STATE_PROGRESSING, now.decisions
        if now.step_index == step:
            paused = pause(a, rollout_id)
            assert paused.step_index == step, "the leader advanced twice before the pause"
            return paused
        assert turn < 200, now.decisions


# ----- 1. one rollout, every replica -------------------------------------------------------------


def test_a_rollout_started_on_one_replica_is_applied_by_all_and_routes_every_customer_alike(
    fleet: Fleet,
) -> None:
    a, b, c = fleet.all()
    model, stable, candidate = fleet.new_model()
    steps = [10.0, 30.0, 60.0, 100.0]
    before = time.monotonic()
    rollout = a.client.start_rollout(model, candidate, steps, interval_s=1.5, min_requests=20, **LOOSE)
    delays = applied_within([b, c], model, steps[0], before)
    pause(b, rollout.id)  # held at each step while we measure (no traffic yet: no analysis could pass)
    shares = []
    for step, weight in enumerate(steps[:-1]):
        if step:
            advance_then_pause(fleet, model, rollout.id, step)
        applied_within(fleet.all(), model, weight, time.monotonic())
        entities = ids(5100)
        served = spread(fleet, model, entities)
        canary = sum(v == candidate for v in served.values())
        low, high = binomial_99(weight / 100, len(entities))
        shares.append(round(canary / len(entities), 4))
        assert low <= canary / len(entities) <= high, (weight, canary)
        for replica in fleet.all():  # every replica serves each customer the same version
            again = replica.client.score_batch(model, entities[:600], offset=11).results
            assert {r.entity_id: r.model.version for r in again} == {e: served[e] for e in entities[:600]}
        if step == 0:  # the window holds exactly this traffic (3 x the repeats), from three replicas
            repeats = Counter(served[e] for e in entities[:600])
            sent = {
                "canary": canary + 3 * repeats[candidate],
                "stable": len(entities) - canary + 3 * repeats[stable],
            }
            for replica in fleet.all():
                wait_for(
                    lambda r=replica, sent=sent: window_of(r, rollout.id) == (sent, 3),
                    10,
                    f"{replica.name} to report the window of all three replicas",
                )
    resume(c, rollout.id)
    with TimedTraffic(b.client.target, model, batch=60, threads=1):
        done = finished(a, rollout.id)
    report_fault("propagation", start_applied_after_s=delays, canary_shares=shares)
    assert done.state == rpb.ROLLOUT_STATE_PROMOTED, done.decisions
    assert max(delays.values()) < PROPAGATION_S, delays
    verdicts = [(d.verdict, d.step_index) for d in done.decisions if d.verdict in ("advance", "promoted")]
    assert verdicts == [("advance", 0), ("advance", 1), ("advance", 2), ("promoted", 3)], done.decisions
    assert production(fleet, model) == candidate
    assert production_moves(fleet, model, candidate) == 1
    applied_within(fleet.all(), model, 100.0, time.monotonic())


# ----- 2. the leader analyses everybody's traffic ---------------------------------------------------


def test_the_leaders_window_is_the_exact_sum_of_every_replicas_traffic(fleet: Fleet) -> None:
    a, b, _ = fleet.all()
    model, _, candidate = fleet.new_model()
    rollout = a.client.start_rollout(model, candidate, [50.0, 100.0], 0.3, NEVER_ENOUGH, **LOOSE)
    try:
        applied_within(fleet.all(), model, 50.0, time.monotonic())
        sent: Counter[str] = Counter()
        for i in range(12):
            for r in fleet.all()[i % 3].client.score_batch(model, ids(100)).results:
                sent["canary" if r.variant == spb.VARIANT_CANARY else "stable"] += 1
        leader = fleet.leader()

        def leaders_sum() -> rpb.Decision | None:
            d = b.client.rollout(rollout.id).decisions[-1]
            counted = {"canary": d.metrics.get("canary_requests"), "stable": d.metrics.get("stable_requests")}
            return d if d.verdict == "wait" and counted == sent and d.replicas == 3 else None

        decision = wait_for(leaders_sum, 10, f"the leader to analyse {dict(sent)} from three replicas")
        assert decision.replica == leader
        for replica in fleet.all():
            # each replica reads the decision from the shared state when it next polls it

            def synced(replica: Replica = replica) -> rpb.Rollout | None:
                got = replica.client.rollout(rollout.id)
                return got if {m.variant: m.requests for m in got.metrics} == sent else None

            got = wait_for(synced, 10, f"{replica.name} to show the leader's window {dict(sent)}")
            assert (got.window_replicas, got.leader) == (3, leader)
    finally:
        a.client.abort(rollout.id)


# ----- 3. and 4. the controller's handover ------------------------------------------------------------


def test_the_leader_killed_mid_rollout_is_replaced_within_two_lease_periods(fleet: Fleet) -> None:
    model, _, candidate = fleet.new_model()
    leader = fleet.leader()
    survivors = [n for n in NAMES if n != leader]
    first = fleet[survivors[0]]
    rollout = first.client.start_rollout(model, candidate, [10.0, 30.0, 60.0, 100.0], 1.0, 30, **LOOSE)
    with (
        TimedTraffic(first.client.target, model, batch=40, threads=1) as traffic_0,
        TimedTraffic(fleet[survivors[1]].client.target, model, batch=40, threads=1) as traffic_1,
    ):
        at = wait_for(lambda: (r := first.client.rollout(rollout.id)).step_index >= 1 and r, 60, "step 1")
        assert at.state == rpb.ROLLOUT_STATE_PROGRESSING, at.decisions
        victim = fleet[leader].proc
        assert victim is not None
        killed = time.monotonic()
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait(timeout=30)
        successor = fleet.leader(among=survivors, timeout=4 * LEASE_S)
        takeover_s = round(time.monotonic() - killed, 3)
        resumed = first.client.rollout(rollout.id)
        done = finished(first, rollout.id)
    report_fault("leader killed", takeover_s=takeover_s, lease_s=LEASE_S, new_leader=successor)
    assert takeover_s <= 2 * LEASE_S
    assert resumed.step_index >= at.step_index, "the rollout went on from its step"
    assert done.state == rpb.ROLLOUT_STATE_PROMOTED, done.decisions
    advances = [d.step_index for d in done.decisions if d.verdict == "advance"]
    assert advances == [0, 1, 2], done.decisions
    assert [d.verdict for d in done.decisions].count("promoted") == 1
    assert production_moves(fleet, model, candidate) == 1
    for traffic in (traffic_0, traffic_1):  # the survivors' clients saw no error
        assert not traffic.errors, traffic.errors
        assert traffic.ok_results


def test_a_leader_stopped_past_its_lease_writes_no_decision_and_says_so(fleet: Fleet) -> None:
    model, _, candidate = fleet.new_model()
    leader = fleet.leader()
    others = [n for n in NAMES if n != leader]
    watcher = fleet[others[0]]
    rollout = watcher.client.start_rollout(model, candidate, [50.0, 100.0], 0.3, NEVER_ENOUGH, **LOOSE)
    try:
        latest = lambda: watcher.client.rollout(rollout.id).decisions[-1]  # noqa: E731
        wait_for(lambda: latest().replica == leader, 10, "the leader to decide")
        stopped = fleet[leader].proc
        assert stopped is not None
        os.kill(stopped.proc.pid, signal.SIGSTOP)
        stopped_at = time.time()
        try:
            successor = fleet.leader(among=others, timeout=4 * LEASE_S)
            wait_for(lambda: latest().replica == successor, 10, "the new leader to decide")
        finally:
            os.kill(stopped.proc.pid, signal.SIGCONT)
        wait_for(lambda: "lost the controller lease" in stopped.logs(), 10, "the old leader to notice")
        wait_for(
            lambda: fleet[leader].metric("finpredict_gateway_controller_leader") == 0, 10, "it to stand down"
        )
        decisions = watcher.client.rollout(rollout.id).decisions
        late = [d for d in decisions if d.replica == leader and d.time.ToNanoseconds() / 1e9 >= stopped_at]
        assert not late, late
        assert decisions[-1].replica == successor
    finally:
        watcher.client.abort(rollout.id)


# ----- 5. refusals and a lost database ------------------------------------------------------------------

BAD_ADMIN_INPUT: list[tuple[str, Callable[[str], Message], str]] = [
    ("PauseRollout", lambda m: rpb.PauseRolloutRequest(rollout_id=""), "rollout_id"),
    ("AbortRollout", lambda m: rpb.AbortRolloutRequest(rollout_id="x'; DROP TABLE rollouts"), "rollout_id"),
    ("GetRollout", lambda m: rpb.GetRolloutRequest(model="Not A Model\x00"), "model"),
    ("ListRollouts", lambda m: rpb.ListRolloutsRequest(page_size=-1), "page_size"),
    ("StartRollout", lambda m: rpb.StartRolloutRequest(model="", candidate_version=2), "model"),
    ("StartRollout", lambda m: rpb.StartRolloutRequest(model=m, candidate_version=0), "candidate_version"),
    (
        "StartRollout",
        lambda m: rpb.StartRolloutRequest(
            model=m, candidate_version=2, analysis_interval=Duration(seconds=-1)
        ),
        "analysis_interval",
    ),
    (
        "StartRollout",
        lambda m: rpb.StartRolloutRequest(
            model=m, candidate_version=2, thresholds=rpb.AnalysisThresholds(max_score_psi=-1)
        ),
        "thresholds.max_score_psi",
    ),
    (
        "StartRollout",
        lambda m: rpb.StartRolloutRequest(model=m, candidate_version=2, steps=[5, 1, 100]),
        "steps",
    ),
    ("StopExperiment", lambda m: rpb.StopExperimentRequest(experiment_id="nope!"), "experiment_id"),
]


def test_bad_admin_input_is_refused_naming_the_field_and_changes_nothing(fleet: Fleet) -> None:
    model, _, _ = fleet.new_model()
    before = fleet.stored_state()
    for replica in fleet.all():
        for method, build, field in BAD_ADMIN_INPUT:
            with pytest.raises(grpc.RpcError) as err:
                admin(replica, method, build(model))
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.value.details())
            assert (err.value.details() or "").startswith(field), (method, err.value.details())
    assert fleet.stored_state() == before
    listed = fleet["gw-a"].client.rollouts.ListRollouts(rpb.ListRolloutsRequest(model=model), metadata=CLIENT)
    assert not listed.rollouts


def test_a_replica_cut_off_the_database_keeps_routing_and_refuses_admin_calls(fleet: Fleet) -> None:
    a, b, c = fleet.all()
    model, stable, candidate = fleet.new_model()
    other, other_stable, other_candidate = fleet.new_model()
    rollout = a.client.start_rollout(model, candidate, [30.0, 100.0], 3600, 10, **LOOSE)
    try:
        applied_within(fleet.all(), model, 30.0, time.monotonic())
        entities = ids(1000)
        reference = {r.entity_id: r.model.version for r in a.client.score_batch(model, entities).results}
        assert set(reference.values()) == {stable, candidate}
        errors_before = c.metric("finpredict_gateway_state_errors_total", operation="refresh")
        c.proxy.cut()
        wait_for(
            lambda: c.metric("finpredict_gateway_state_errors_total", operation="refresh") > errors_before,
            10,
            "the replica to notice",
        )
        a.client.abort(rollout.id)  # the others stop the canary; the cut-off replica cannot know
        applied_within([a, b], model, 0.0, time.monotonic())
        again = {r.entity_id: r.model.version for r in c.client.score_batch(model, entities).results}
        assert again == reference, "the replica routes by the last state it knew"
        refused = {}
        calls = {
            "GetRollout": rpb.GetRolloutRequest(rollout_id=rollout.id),
            "PauseRollout": rpb.PauseRolloutRequest(rollout_id=rollout.id),
            "StartRollout": rpb.StartRolloutRequest(model=other, candidate_version=other_candidate),
            "SetShadow": rpb.SetShadowRequest(model=other, version=other_candidate),
        }
        for method, request in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                admin(c, method, request)
            refused[method] = err.value.code()
        assert set(refused.values()) == {grpc.StatusCode.UNAVAILABLE}, refused
        assert "shared state unreachable" in c.logs()
        c.proxy.restore()
        back_s = applied_within([c], model, 0.0, time.monotonic())
    finally:
        c.proxy.restore()
    report_fault("state database cut off one replica", reapplied_after_restore_s=back_s)
    ended = c.client.rollout(rollout.id)  # answers again, and nothing was half-applied
    assert ended.state == rpb.ROLLOUT_STATE_ABORTED
    assert "pause" not in [d.verdict for d in ended.decisions]
    listed = c.client.rollouts.ListRollouts(rpb.ListRolloutsRequest(model=other), metadata=CLIENT, timeout=10)
    assert not listed.rollouts
    assert {r.model.version for r in c.client.score_batch(other, ids(50)).results} == {other_stable}
