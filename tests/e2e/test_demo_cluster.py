"""The main job on the cluster profile of the local platform (``finpredict demo --profile cluster``),
end to end: the shortened story of ``test_demo_story.py`` (:mod:`finpredict.testkit.demo`, the
same code path as the demo), unchanged, on a stack of its own whose registry and two gateways keep
their state in the stack's PostgreSQL, whose artifacts and DVC remote are in its S3 server, and
whose model server deploys to a Ray cluster of two nodes.

The story runs once for the module and keeps the stack running at its end: the fixture then reads
what ran where behind the platform's back (the databases, the buckets, each Ray node's Serve logs)
and asks the second gateway, then stops the stack. Each test checks one outcome: the story's own
(rollouts, drift, retraining, report), and that each part of the cluster profile was real.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from finpredict.api.rollout.v1 import rollout_pb2, rollout_pb2_grpc
from finpredict.client import ScoringClient
from finpredict.client.types import ScoreResult
from finpredict.demo.platform import MODEL
from finpredict.demo.story import StoryResult
from finpredict.demo.traffic import make_pool
from finpredict.stack.components import ARTIFACT_BUCKET, DVC_BUCKET
from finpredict.stack.launcher import Stack
from finpredict.testkit.demo import STEPS, own_stack, run_short_story
from finpredict.testkit.s3 import s3_client
from finpredict.testkit.serving import served_calls

pytestmark = [pytest.mark.slow, pytest.mark.cluster, pytest.mark.timeout(900)]


@dataclass
class Seen:
    """The story's result and what the cluster's parts held while the stack still ran."""

    result: StoryResult
    story_s: float
    targets: dict[str, str]
    versions: dict[int, tuple[str, str]] = field(default_factory=dict)  # registry rows: sha256, uri
    rollouts: dict[str, str] = field(default_factory=dict)  # gateway state rows: id -> state
    lease_holders: set[str] = field(default_factory=set)
    artifact_keys: set[str] = field(default_factory=set)
    dvc_keys: int = 0
    replica_logs: dict[str, int] = field(default_factory=dict)  # Ray node -> replica log files
    served: dict[str, int] = field(default_factory=dict)  # Ray node -> calls its replicas answered
    rollouts_via: dict[str, dict[str, int]] = field(default_factory=dict)  # gateway -> id -> state
    scores_via_second: list[ScoreResult] = field(default_factory=list)
    sqlite_files: list[Path] = field(default_factory=list)
    stopped: dict[str, bool] = field(default_factory=dict)
    left_running: dict[str, str] = field(default_factory=dict)


def _rows(url: str, query: str, **params: Any) -> list[Any]:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return list(conn.execute(text(query), params).all())
    finally:
        engine.dispose()


def _inspect(st: Stack, seen: Seen) -> None:
    """What the running cluster's parts hold, read directly."""
    pg = st.ready("postgres")
    assert pg is not None
    registry_db, gateway_db = pg["databases"]["registry"], pg["databases"]["gateway"]
    versions = _rows(
        registry_db,
        "SELECT v.version, v.artifact_sha256, v.artifact_uri FROM versions v "
        "JOIN models m ON m.id = v.model_id WHERE m.name = :model",
        model=MODEL,
    )
    seen.versions = {int(v): (sha, uri) for v, sha, uri in versions}
    seen.rollouts = {rid: state for rid, state in _rows(gateway_db, "SELECT id, state FROM rollouts")}
    seen.lease_holders = {holder for (holder,) in _rows(gateway_db, "SELECT holder FROM leases")}
    s3 = s3_client(seen.targets["s3"])
    pages = s3.get_paginator("list_objects_v2")
    seen.artifact_keys = {
        o["Key"] for p in pages.paginate(Bucket=ARTIFACT_BUCKET) for o in p.get("Contents", [])
    }
    seen.dvc_keys = sum(len(p.get("Contents", [])) for p in pages.paginate(Bucket=DVC_BUCKET))
    for node in ("ray-head", "ray-worker"):
        info = st.ready(node)
        assert info is not None, node
        temp_dir = Path(info["temp_dir"])
        logs = temp_dir / "session_latest" / "logs" / "serve"
        seen.replica_logs[node] = len(list(logs.glob("replica_model-server_*.log")))
        seen.served[node] = served_calls(temp_dir)
    tokens = st.secrets()
    admin = (("authorization", f"Bearer {tokens['FINPREDICT_TOKEN']}"),)
    for gateway in ("gateway", "gateway-2"):
        with grpc.insecure_channel(seen.targets[gateway]) as channel:
            listed = rollout_pb2_grpc.RolloutServiceStub(channel).ListRollouts(
                rollout_pb2.ListRolloutsRequest(model=MODEL), metadata=admin, timeout=30
            )
        seen.rollouts_via[gateway] = {r.id: r.state for r in listed.rollouts}
    applications = make_pool(100, seed=7).features[:5]
    with ScoringClient(seen.targets["gateway-2"], token=tokens["FINPREDICT_CLIENT_TOKEN"], timeout=30) as c:
        seen.scores_via_second = [c.score(MODEL, f"e2e-{i}", f) for i, f in enumerate(applications)]
    seen.sqlite_files = sorted(st.data.rglob("*.db"))


@pytest.fixture(scope="module")
def seen(tmp_path_factory: pytest.TempPathFactory) -> Seen:
    tmp = tmp_path_factory.mktemp("demo-cluster")
    st = own_stack(tmp, profile="cluster")
    try:
        t0 = time.perf_counter()
        result = run_short_story(st, tmp, keep=True)
        out = Seen(result, time.perf_counter() - t0, st.targets())
        _inspect(st, out)
    finally:
        stopped = st.down()
        left_running = st.targets()
        st.wipe_data()  # PostgreSQL's cluster may live outside tmp (under the system temp dir, as root)
    out.stopped, out.left_running = stopped, left_running
    print(f"cluster demo: story {out.story_s:.0f} s, {sum(stopped.values())} components stopped")
    return out


def test_the_story_rolls_out_rolls_back_and_retrains(seen: Seen) -> None:
    result = seen.result
    v2 = result.rollouts["v2"]
    assert v2.state == rollout_pb2.ROLLOUT_STATE_PROMOTED, [(d.verdict, d.reason) for d in v2.decisions]
    assert list(v2.steps) == list(STEPS)
    assert result.production["v2"] == result.versions["v2"]
    assert result.promotion_actor == "rollout-controller"
    broken = result.rollouts["broken"]
    assert broken.state == rollout_pb2.ROLLOUT_STATE_ROLLED_BACK
    assert broken.decisions[-1].verdict == "rollback"
    assert "debt_service_coverage" in broken.decisions[-1].reason  # the feature its feed broke
    assert result.production["broken"] == result.versions["v2"]
    psi = [a for a in result.alerts if a.rule == "feature_psi_3d"]
    assert psi, [(a.rule, a.features) for a in result.alerts]
    assert result.psi_time_to_detect_h == 72
    assert result.v3_trigger == f"alert:{result.retrain_alert_id}"
    assert result.rollouts["v3"].candidate_version == result.versions["v3"]
    assert result.report_path is not None
    assert result.report_path.exists()


def test_the_registry_keeps_its_versions_in_postgres_and_its_artifacts_in_s3(seen: Seen) -> None:
    assert set(seen.versions) == set(seen.result.versions.values())
    for sha, uri in seen.versions.values():
        assert uri.startswith(f"s3://{ARTIFACT_BUCKET}/registry/"), uri
        assert f"registry/sha256/{sha[:2]}/{sha}" in seen.artifact_keys
    assert not seen.sqlite_files  # neither the registry nor a gateway fell back to SQLite


def test_the_training_runs_push_to_the_dvc_remote_in_s3(seen: Seen) -> None:
    assert seen.dvc_keys > 0


def test_two_gateways_share_the_rollout_state_in_postgres(seen: Seen) -> None:
    ids = {seen.result.rollouts[role].id for role in ("v2", "broken", "v3")}
    assert ids <= seen.rollouts.keys()
    assert seen.rollouts[seen.result.rollouts["v2"].id] == "promoted"
    # both replicas answer from the shared state (v3's canary may still move between the two
    # reads: the finished rollouts' states are compared), one of them holds the controller's lease
    first, second = seen.rollouts_via["gateway"], seen.rollouts_via["gateway-2"]
    assert first.keys() == second.keys() >= ids
    for role in ("v2", "broken"):
        rid = seen.result.rollouts[role].id
        assert first[rid] == second[rid] == seen.result.rollouts[role].state
    assert seen.lease_holders
    assert seen.lease_holders <= {"gateway", "gateway-2"}
    # the second gateway scores through the same model server
    assert len(seen.scores_via_second) == 5
    assert all(0 <= s.score <= 1 and s.version in seen.versions for s in seen.scores_via_second)


def test_the_model_server_runs_on_both_ray_nodes(seen: Seen) -> None:
    assert seen.replica_logs["ray-head"] >= 1, seen.replica_logs
    assert seen.replica_logs["ray-worker"] >= 1, seen.replica_logs
    assert sum(seen.served.values()) > 0, seen.served


def test_every_component_ran_and_stopped(seen: Seen) -> None:
    expected = {"postgres", "s3", "ray-head", "ray-worker", "registry", "model-server", "serve"}
    expected |= {"monitor", "gateway", "gateway-2", "console"}
    assert expected <= seen.result.targets.keys()
    assert {name for name, was in seen.stopped.items() if was} >= expected - {"serve"}
    assert seen.left_running == {}
