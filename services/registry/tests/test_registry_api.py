"""The registry API against a real server, on SQLite and on PostgreSQL (acceptance 1, 2, 3, 5, 7)."""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import struct_pb2
from google.protobuf.timestamp_pb2 import Timestamp

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.testkit.registry import (
    LINEAGE,
    PASSING,
    PROFILE,
    READER_TOKEN,
    VALIDATOR_TOKEN,
    WRITER_TOKEN,
    Client,
    Registry,
    audit,
    code_of,
    create_model,
    details_of,
    gate,
    header,
    promotable,
    register,
    sha256,
    unique,
    upload_requests,
)


def set_alias(client: Client, model: str, alias: str, version: int, expected: int | None = None) -> Any:
    req = pb.SetAliasRequest(model=model, alias=alias, version=version, reason=f"test move to {version}")
    if expected is not None:
        req.expected_version = expected
    return client.SetAlias(req)


def aliases(client: Client, model: str) -> dict[str, int]:
    return dict(client.GetModel(pb.GetModelRequest(name=model)).model.aliases)


def download(client: Client, model: str, version: int) -> tuple[bytes, str]:
    chunks, digest = [], ""
    for i, msg in enumerate(
        client.DownloadArtifact(pb.DownloadArtifactRequest(model=model, version=version))
    ):
        if i == 0:
            digest = msg.sha256
        chunks.append(msg.chunk)
    return b"".join(chunks), digest


def test_register_alias_rollback_history_search_lineage_round_trip(registry: Registry, admin: Client) -> None:
    model = create_model(admin)
    artifact = bytes(range(256)) * 1000  # 256 kB: several chunks
    params = struct_pb2.Struct()
    params.update({"max_depth": 4, "eta": 0.1})
    lineage = pb.Lineage(
        git_commit="a" * 40,
        data_md5={"data/train.parquet": "0123456789abcdef0123456789abcdef"},
        dvc_lock_sha256="b" * 64,
        params=params,
        wandb_run_id="run1",
        wandb_run_path="team/finpredict/run1",
        trigger="schedule",
        parents=[types_pb2.ModelRef(name=model, version=0 + 1)],
    )
    schema = types_pb2.FeatureSchema(
        features=[types_pb2.FeatureSpec(name="income", type=types_pb2.FEATURE_TYPE_NUMERIC, min=0)]
    )
    v1 = register(
        admin,
        model,
        artifact,
        artifact_sha256=sha256(artifact),
        metrics={"auc_roc": 0.80},
        tags={"team": "risk", "algo": "xgboost"},
        gate_results=PASSING,
        lineage=LINEAGE,
        feature_schema=schema,
        manifest_json='{"schema": 1}',
        reference_profile=b"\x00\x01profile",
    )
    t_between = Timestamp()
    t_between.GetCurrentTime()
    v2 = register(
        admin, model, artifact[::-1], metrics={"auc_roc": 0.85}, tags={"team": "risk"}, gate_results=PASSING,
        lineage=lineage, reference_profile=PROFILE,
    )  # fmt: skip
    assert (v1.version, v2.version) == (1, 2)
    assert v1.artifact.sha256 == sha256(artifact)
    assert v1.artifact.size_bytes == len(artifact)
    assert v1.gates_passed
    assert v1.status == pb.VERSION_STATUS_READY
    assert v1.created_by == "alice"

    # aliases: staging, production, CAS move, rollback
    assert set_alias(admin, model, "staging", 1).event.from_version == 0
    set_alias(admin, model, "production", 1, expected=0)
    moved = set_alias(admin, model, "production", 2, expected=1).event
    assert (moved.from_version, moved.to_version, moved.kind) == (1, 2, pb.ALIAS_EVENT_KIND_SET)
    assert aliases(admin, model) == {"staging": 1, "production": 2}
    got = admin.GetVersion(pb.GetVersionRequest(model=model, alias="production")).version
    assert got.version == 2
    assert list(got.aliases) == ["production"]
    rolled = admin.RollbackAlias(
        pb.RollbackAliasRequest(model=model, alias="production", reason="bad canary")
    )
    assert (rolled.event.from_version, rolled.event.to_version) == (2, 1)
    assert rolled.event.kind == pb.ALIAS_EVENT_KIND_ROLLBACK
    assert rolled.event.actor == "alice"
    v1_now = admin.GetVersion(pb.GetVersionRequest(model=model, version=1)).version
    assert sorted(v1_now.aliases) == ["production", "staging"]
    assert v1_now.lineage.wandb_link_status == "pending"  # offline W&B: promotion link recorded as pending

    # history: one append-only row per move, in order, with who and why
    moves = [(e.action, e.alias, e.from_version, e.to_version, e.actor) for e in audit(admin, model)]
    assert [m for m in moves if m[0].startswith("alias.")] == [
        ("alias.set", "staging", 0, 1, "alice"),
        ("alias.set", "production", 0, 1, "alice"),
        ("alias.set", "production", 1, 2, "alice"),
        ("alias.rollback", "production", 2, 1, "alice"),
    ]
    assert [m[0] for m in moves].count("version.register") == 2
    assert audit(admin, model)[-1].reason == "bad canary"

    # search: tags, metrics, alias, time, gates; aliases always filled
    def search(**kw: Any) -> list[int]:
        resp = admin.SearchVersions(pb.SearchVersionsRequest(model=model, **kw))
        return [x.version for x in resp.versions]

    ge = types_pb2.COMPARATOR_GREATER_OR_EQUAL
    assert search() == [2, 1]
    assert search(tags={"algo": "xgboost"}) == [1]
    assert search(tags={"team": "risk"}) == [2, 1]
    assert search(metrics=[pb.MetricFilter(name="auc_roc", comparator=ge, value=0.82)]) == [2]
    assert search(alias="staging") == [1]
    assert search(created_after=t_between) == [2]
    assert search(created_before=t_between) == [1]
    assert search(gates_passed_only=True) == [2, 1]
    hit = admin.SearchVersions(pb.SearchVersionsRequest(model=model, alias="production")).versions[0]
    assert sorted(hit.aliases) == ["production", "staging"]

    # paging
    page1 = admin.ListVersions(pb.ListVersionsRequest(model=model, page_size=1))
    page2 = admin.ListVersions(
        pb.ListVersionsRequest(model=model, page_size=1, page_token=page1.next_page_token)
    )
    assert [x.version for x in page1.versions] == [2]
    assert [x.version for x in page2.versions] == [1]
    assert page2.next_page_token == ""

    # lineage round trip
    lin = admin.GetLineage(pb.GetLineageRequest(model=model, version=2))
    assert lin.lineage.git_commit == "a" * 40
    assert dict(lin.lineage.data_md5) == {"data/train.parquet": "0123456789abcdef0123456789abcdef"}
    assert lin.lineage.params["max_depth"] == 4
    assert lin.lineage.trigger == "schedule"
    assert lin.lineage.parents[0].name == model
    assert lin.artifact_sha256 == sha256(artifact[::-1])
    assert [g.name for g in lin.gate_results] == [
        "auc_roc",
        "compute_p99_ms",
        "demographic_parity_diff",
        "ece",
    ]
    assert dict(lin.metrics) == {"auc_roc": 0.85}
    assert v1_now.feature_schema == schema
    assert v1_now.reference_profile == b"\x00\x01profile"

    # artifacts come back byte for byte, with their checksum
    data, digest = download(admin, model, 1)
    assert data == artifact
    assert digest == sha256(artifact)


def test_concurrent_registrations_get_distinct_consecutive_versions(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "conc")

    def one(i: int) -> int:
        return register(admin, model, f"artifact {i}".encode() * 100, tags={"i": str(i)}).version

    with ThreadPoolExecutor(20) as pool:
        got = list(pool.map(one, range(20)))
    assert sorted(got) == list(range(1, 21))
    assert admin.GetModel(pb.GetModelRequest(name=model)).model.latest_version == 20
    listed = admin.ListVersions(pb.ListVersionsRequest(model=model, page_size=100)).versions
    assert [x.version for x in listed] == list(range(20, 0, -1))


def test_concurrent_compare_and_set_exactly_one_wins(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "cas")
    for i in range(11):
        register(admin, model, f"v{i}".encode())
    set_alias(admin, model, "canary", 1)
    before = len(audit(admin, model))
    barrier = threading.Barrier(10)

    def move(target: int) -> grpc.StatusCode:
        barrier.wait(timeout=30)
        try:
            set_alias(admin, model, "canary", target, expected=1)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()  # type: ignore[attr-defined,no-any-return]

    with ThreadPoolExecutor(10) as pool:
        codes = list(pool.map(move, range(2, 12)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.ABORTED) == 9
    winner = codes.index(grpc.StatusCode.OK) + 2
    assert aliases(admin, model) == {"canary": winner}
    new_rows = list(audit(admin, model))[before:]
    assert [(e.action, e.alias, e.from_version, e.to_version) for e in new_rows] == [
        ("alias.set", "canary", 1, winner)
    ]


def test_promoting_a_gate_failing_version_is_refused_and_changes_nothing(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "gates")
    good = register(admin, model, b"good", **promotable())
    failing = [gate("auc_roc", 0.6, 0.82), gate("ece", 0.09, 0.05, ge=False)]
    passing = [
        gate("compute_p99_ms", 10, 50, ge=False),
        gate("demographic_parity_diff", 0.01, 0.05, ge=False),
    ]
    bad = register(admin, model, b"bad", **promotable(gate_results=failing + passing))
    gateless = register(admin, model, b"none", lineage=LINEAGE, reference_profile=PROFILE)
    assert not bad.gates_passed
    assert not gateless.gates_passed
    set_alias(admin, model, "production", good.version)
    state, log_before = aliases(admin, model), list(audit(admin, model))

    with pytest.raises(grpc.RpcError) as exc:
        set_alias(admin, model, "production", bad.version)
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "auc_roc=0.6 (the registry requires >= 0.82)" in details_of(exc)
    assert "ece=0.09 (the registry requires <= 0.05)" in details_of(exc)
    assert "compute_p99_ms" not in details_of(exc)
    with pytest.raises(grpc.RpcError) as exc:
        set_alias(admin, model, "production", gateless.version)
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "missing required gate(s): auc_roc, ece, compute_p99_ms, demographic_parity_diff" in details_of(
        exc
    )
    assert aliases(admin, model) == state
    assert list(audit(admin, model)) == log_before

    set_alias(admin, model, "staging", bad.version)  # only production is gated


def test_the_registry_judges_gates_by_its_own_thresholds_and_requires_dvc_lineage(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "policy")
    # the client compared with a laxer threshold than the registry's 0.82 and says "passed"
    lax = register(
        admin, model, b"lax", **promotable(gate_results=[gate("auc_roc", 0.75, 0.7), *PASSING[1:]])
    )
    assert lax.gates_passed
    partial = register(admin, model, b"partial", **promotable(gate_results=PASSING[:3]))
    no_dvc = register(admin, model, b"no-dvc", **promotable(lineage=pb.Lineage(git_commit="a" * 40)))
    no_profile = register(admin, model, b"no-profile", **promotable(reference_profile=b""))
    expected = {
        lax.version: "auc_roc=0.75 (the registry requires >= 0.82)",
        partial.version: f"missing required gate(s): {PASSING[3].name}",
        no_dvc.version: "missing lineage: data_md5 (DVC md5 of the training data), "
        "dvc_lock_sha256 (sha256 of dvc.lock)",
        no_profile.version: "missing lineage: reference_profile",
    }
    for version, problem in expected.items():
        with pytest.raises(grpc.RpcError) as exc:
            set_alias(admin, model, "production", version)
        assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert problem in details_of(exc), details_of(exc)
        assert f"version {version} of model {model!r} cannot become production" in details_of(exc)
        check = admin.GetPolicy(pb.GetPolicyRequest(model=model, version=version))
        assert not check.check.promotable
        assert any(problem in p for p in check.check.problems), check.check.problems
    assert "production" not in aliases(admin, model)
    good = register(admin, model, b"good", **promotable())
    assert admin.GetPolicy(pb.GetPolicyRequest(model=model, version=good.version)).check.promotable
    assert set_alias(admin, model, "production", good.version).event.to_version == good.version


def test_policy_changes_need_admin_are_audited_and_hold_for_every_move_of_production(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "setpolicy")
    default = admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy
    assert default.is_default
    assert [(g.name, g.comparator, g.threshold) for g in default.gates] == [
        ("auc_roc", types_pb2.COMPARATOR_GREATER_OR_EQUAL, 0.82),
        ("ece", types_pb2.COMPARATOR_LESS_OR_EQUAL, 0.05),
        ("compute_p99_ms", types_pb2.COMPARATOR_LESS_OR_EQUAL, 50.0),
        ("demographic_parity_diff", types_pb2.COMPARATOR_LESS_OR_EQUAL, 0.05),
    ]
    assert list(default.required_lineage) == [
        pb.LINEAGE_REQUIREMENT_GIT_COMMIT,
        pb.LINEAGE_REQUIREMENT_DATA_MD5,
        pb.LINEAGE_REQUIREMENT_DVC_LOCK_SHA256,
        pb.LINEAGE_REQUIREMENT_REFERENCE_PROFILE,
    ]
    pilot = pb.PromotionPolicy(
        gates=[
            pb.PolicyGate(name="auc_roc", comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL, threshold=0.7)
        ],
        required_lineage=[pb.LINEAGE_REQUIREMENT_DATA_MD5],
    )
    request = pb.SetPolicyRequest(model=model, policy=pilot, reason="pilot model")
    for token in (WRITER_TOKEN, VALIDATOR_TOKEN, READER_TOKEN):
        client = registry.client(token)
        with pytest.raises(grpc.RpcError) as exc:
            client.SetPolicy(request)
        client.close()
        assert code_of(exc) == grpc.StatusCode.PERMISSION_DENIED
        assert "'admin'" in details_of(exc)
    assert admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy.is_default

    v1 = register(admin, model, b"v1", gate_results=[gate("auc_roc", 0.75, 0.7)], lineage=LINEAGE)
    with pytest.raises(grpc.RpcError) as exc:
        set_alias(admin, model, "production", v1.version)  # the default policy: refused
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    changed = admin.SetPolicy(request)
    assert not changed.policy.is_default
    assert changed.policy.updated_by == "alice"
    assert (changed.entry.action, changed.entry.actor) == ("policy.set", "alice")
    assert "auc_roc >= 0.7" in changed.entry.reason
    assert "pilot model" in changed.entry.reason
    assert audit(admin, model)[-1].id == changed.entry.id
    assert admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy.gates == pilot.gates
    set_alias(admin, model, "production", v1.version)
    v2 = register(admin, model, b"v2", gate_results=[gate("auc_roc", 0.95, 0.7)], lineage=LINEAGE)
    set_alias(admin, model, "production", v2.version)

    # tightened: rolling back to v1 (auc_roc 0.75) is a move to production too, so it is refused
    pilot.gates[0].threshold = 0.9
    admin.SetPolicy(pb.SetPolicyRequest(model=model, policy=pilot, reason="tighter"))
    with pytest.raises(grpc.RpcError) as exc:
        admin.RollbackAlias(pb.RollbackAliasRequest(model=model, alias="production", reason="r"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "auc_roc=0.75 (the registry requires >= 0.9)" in details_of(exc)
    assert aliases(admin, model)["production"] == v2.version

    for bad, field in [
        (pb.PromotionPolicy(gates=[pilot.gates[0], pilot.gates[0]]), "policy.gates[1].name"),
        (
            pb.PromotionPolicy(gates=[pb.PolicyGate(name="auc_roc", threshold=0.8)]),
            "policy.gates[0].comparator",
        ),
        (pb.PromotionPolicy(required_lineage=[0]), "policy.required_lineage[0]"),  # type: ignore[list-item]
    ]:
        with pytest.raises(grpc.RpcError) as exc:
            admin.SetPolicy(pb.SetPolicyRequest(model=model, policy=bad))
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(exc).startswith(field), details_of(exc)


def test_the_hand_off_applies_to_versions_registered_after_it_was_turned_on(admin: Client) -> None:
    model = create_model(admin, "handoff")
    assert admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy.hand_off.mode == pb.HAND_OFF_MODE_OFF
    register(admin, model, b"v1", **promotable())
    canary = pb.HandOff(
        mode=pb.HAND_OFF_MODE_CANARY,
        steps=[5.0, 100.0],
        min_requests_per_step=50,
        thresholds=rollout_pb2.AnalysisThresholds(max_score_psi=0.5),
    )
    canary.analysis_interval.FromSeconds(2)
    current = admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy

    def set_hand_off(h: pb.HandOff) -> pb.SetPolicyResponse:
        policy = pb.PromotionPolicy(
            gates=current.gates, required_lineage=current.required_lineage, hand_off=h
        )
        return admin.SetPolicy(pb.SetPolicyRequest(model=model, policy=policy, reason="auto canary"))

    got = set_hand_off(canary)
    assert got.policy.hand_off.after_version == 1  # the newest version when it was turned on
    assert list(got.policy.hand_off.steps) == [5.0, 100.0]
    assert got.policy.hand_off.analysis_interval.seconds == 2
    assert got.policy.hand_off.min_requests_per_step == 50
    assert got.policy.hand_off.thresholds.max_score_psi == 0.5
    assert "hand-off: canary for versions after v1 (steps 5, 100" in got.entry.reason
    assert admin.GetPolicy(pb.GetPolicyRequest(model=model)).policy.hand_off == got.policy.hand_off

    register(admin, model, b"v2", **promotable())
    canary.steps[:] = [1.0, 100.0]
    assert set_hand_off(canary).policy.hand_off.after_version == 1  # still on: kept
    off = set_hand_off(pb.HandOff(mode=pb.HAND_OFF_MODE_OFF)).policy.hand_off
    assert (off.mode, off.after_version, list(off.steps)) == (pb.HAND_OFF_MODE_OFF, 0, [])
    assert set_hand_off(canary).policy.hand_off.after_version == 2  # on again: from now on

    for bad, field in [
        (pb.HandOff(mode=pb.HAND_OFF_MODE_CANARY, steps=[5.0, 50.0]), "policy.hand_off.steps"),
        (
            pb.HandOff(
                mode=pb.HAND_OFF_MODE_CANARY, thresholds=rollout_pb2.AnalysisThresholds(max_score_kl=-1.0)
            ),
            "policy.hand_off.thresholds.max_score_kl",
        ),
        (pb.HandOff(mode=7), "policy.hand_off.mode"),  # type: ignore[arg-type]
    ]:
        with pytest.raises(grpc.RpcError) as exc:
            set_hand_off(bad)
        assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
        assert details_of(exc).startswith(field), details_of(exc)


def test_only_a_validator_appends_gate_results_audited_and_recorded_results_are_immutable(
    registry: Registry, admin: Client
) -> None:
    model = create_model(admin, "validate")
    without_dpd = [g for g in PASSING if g.name != "demographic_parity_diff"]
    version = register(admin, model, b"v", **promotable(gate_results=without_dpd)).version
    dpd = gate("demographic_parity_diff", 0.02, 0.05, ge=False)
    append = pb.AppendGateResultsRequest(model=model, version=version, results=[dpd])
    writer = registry.client(WRITER_TOKEN)
    for client in (writer, admin):  # the trainer and the promoter cannot vouch for a version
        with pytest.raises(grpc.RpcError) as exc:
            client.AppendGateResults(append)
        assert code_of(exc) == grpc.StatusCode.PERMISSION_DENIED
        assert "AppendGateResults needs the 'validator' role" in details_of(exc)
    writer.close()
    with pytest.raises(grpc.RpcError) as exc:
        set_alias(admin, model, "production", version)
    assert "missing required gate(s): demographic_parity_diff" in details_of(exc)

    validator = registry.client(VALIDATOR_TOKEN)
    try:
        before = list(audit(admin, model))
        with pytest.raises(grpc.RpcError) as exc:  # a recorded result is never replaced
            validator.AppendGateResults(
                pb.AppendGateResultsRequest(
                    model=model, version=version, results=[gate("auc_roc", 0.99, 0.82)]
                )
            )
        assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert "already has results for auc_roc" in details_of(exc)
        assert list(audit(admin, model)) == before
        appended = validator.AppendGateResults(append).version
    finally:
        validator.close()
    assert appended.gates_passed
    assert [g.value for g in appended.gate_results if g.name == "auc_roc"] == [PASSING[0].value]
    entry = audit(admin, model)[-1]
    assert (entry.action, entry.actor, entry.version) == ("gates.append", "carol", version)
    assert "demographic_parity_diff=0.02 <= 0.05 (pass)" in entry.reason
    assert set_alias(admin, model, "production", version).event.to_version == version


def test_corrupted_artifact_is_detected_on_download(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "corrupt")
    data = b"model bytes " * 5000
    v = register(admin, model, data)
    assert registry.read_blob(v.artifact.sha256) == data
    damaged = bytearray(data)
    damaged[1000] ^= 0xFF
    registry.write_blob(v.artifact.sha256, bytes(damaged))
    with pytest.raises(grpc.RpcError) as exc:
        download(admin, model, v.version)
    assert code_of(exc) == grpc.StatusCode.DATA_LOSS
    assert "corrupted" in details_of(exc)
    assert v.artifact.sha256 in details_of(exc)
    registry.write_blob(v.artifact.sha256, data)  # repaired: downloads work again
    assert download(admin, model, v.version)[0] == data


def test_upload_with_wrong_checksum_is_refused_and_leaves_nothing(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "badsha")
    with pytest.raises(grpc.RpcError) as exc:
        register(admin, model, b"some bytes", artifact_sha256="0" * 64)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.artifact_sha256" in details_of(exc)
    assert admin.GetModel(pb.GetModelRequest(name=model)).model.latest_version == 0
    assert not list(registry.upload_dir.iterdir())
    assert register(admin, model, b"some bytes").version == 1


def test_the_reference_profile_checksum_is_recorded_and_a_wrong_one_refused(admin: Client) -> None:
    model = create_model(admin, "profsha")
    with pytest.raises(grpc.RpcError) as exc:
        register(admin, model, b"x", reference_profile=b"profile", reference_profile_sha256="0" * 64)
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert "header.reference_profile_sha256" in details_of(exc)
    v = register(
        admin, model, b"x", reference_profile=b"profile", reference_profile_sha256=sha256(b"profile")
    )
    got = admin.GetVersion(pb.GetVersionRequest(model=model, version=v.version)).version
    assert (got.reference_profile, got.reference_profile_sha256) == (b"profile", sha256(b"profile"))
    # a client that sends no checksum still gets one recorded; no profile, no checksum
    assert register(admin, model, b"y", reference_profile=b"p2").reference_profile_sha256 == sha256(b"p2")
    assert register(admin, model, b"z").reference_profile_sha256 == ""


def test_retry_with_idempotency_key_returns_the_same_version(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "idem")
    first = register(admin, model, b"abc", idempotency_key="run-42")
    again = register(admin, model, b"abc", idempotency_key="run-42")
    assert first.version == again.version == 1
    with pytest.raises(grpc.RpcError) as exc:
        register(admin, model, b"different", idempotency_key="run-42")
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert register(admin, model, b"abc", idempotency_key="run-43").version == 2


def test_delete_version_refused_while_aliased(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "del")
    register(admin, model, b"one")
    register(admin, model, b"two")
    set_alias(admin, model, "champion", 1)
    with pytest.raises(grpc.RpcError) as exc:
        admin.DeleteVersion(pb.DeleteVersionRequest(model=model, version=1, reason="cleanup"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    assert "champion" in details_of(exc)
    entry = admin.DeleteVersion(pb.DeleteVersionRequest(model=model, version=2, reason="cleanup")).entry
    assert (entry.action, entry.version, entry.actor, entry.reason) == (
        "version.delete",
        2,
        "alice",
        "cleanup",
    )
    assert [x.version for x in admin.SearchVersions(pb.SearchVersionsRequest(model=model)).versions] == [1]
    deleted = admin.GetVersion(pb.GetVersionRequest(model=model, version=2)).version
    assert deleted.status == pb.VERSION_STATUS_DELETED
    deleted_alias = admin.DeleteAlias(pb.DeleteAliasRequest(model=model, alias="champion", reason="done"))
    assert deleted_alias.event.kind == pb.ALIAS_EVENT_KIND_DELETE
    assert aliases(admin, model) == {}


def _collect(
    client: Client, model: str, after: int, want: int, started: threading.Event | None = None
) -> tuple[list[pb.AliasEvent], Callable[[], None]]:
    """Starts a WatchAliases subscriber in a thread; returns its (growing) event list and a stopper."""
    events: list[pb.AliasEvent] = []
    done: queue.Queue[BaseException | None] = queue.Queue()
    call = client.stub.WatchAliases(
        pb.WatchAliasesRequest(model=model, after_event_id=after), metadata=client.metadata, timeout=60
    )

    def run() -> None:
        try:
            for msg in call:
                events.append(msg.event)
                if len(events) >= want:
                    break
            done.put(None)
        except grpc.RpcError as exc:
            done.put(None if exc.code() == grpc.StatusCode.CANCELLED else exc)

    threading.Thread(target=run, daemon=True).start()
    return events, call.cancel


def test_watch_aliases_sees_every_move_in_order_and_resumes(registry: Registry, admin: Client) -> None:
    from finpredict.testkit.process import wait_for

    model = create_model(admin, "watch")
    for i in range(3):
        register(admin, model, f"w{i}".encode(), **promotable())
    reader = registry.client(READER_TOKEN)
    live, stop_live = _collect(reader, model, after=-1, want=6)
    moves = [("staging", 1), ("staging", 2), ("production", 1), ("production", 2), ("staging", 3)]
    for alias, version in moves:
        set_alias(admin, model, alias, version)
    admin.RollbackAlias(pb.RollbackAliasRequest(model=model, alias="production", reason="r"))
    wait_for(lambda: len(live) >= 6, 20, "6 live alias events")
    stop_live()
    got = [(e.alias, e.to_version, e.kind) for e in live]
    set_kind, rb_kind = pb.ALIAS_EVENT_KIND_SET, pb.ALIAS_EVENT_KIND_ROLLBACK
    assert got == [*((a, v, set_kind) for a, v in moves), ("production", 1, rb_kind)]
    ids = [e.event_id for e in live]
    assert ids == sorted(ids)
    assert len(set(ids)) == 6

    # a reconnecting subscriber resumes after the third event: it gets the 4th.. and new ones
    resumed, stop_resumed = _collect(reader, model, after=ids[2], want=4)
    wait_for(lambda: len(resumed) >= 3, 20, "replayed events")
    set_alias(admin, model, "canary", 3)
    wait_for(lambda: len(resumed) >= 4, 20, "the live event after replay")
    stop_resumed()
    assert [e.event_id for e in resumed[:3]] == ids[3:]
    assert (resumed[3].alias, resumed[3].to_version) == ("canary", 3)

    # after_event_id=0: only events from now on (nothing of the history above is replayed).
    # We cannot see when the subscriber is attached, so keep moving an alias until one arrives.
    last_before = max(e.id for e in audit(admin, model))
    fresh, stop_fresh = _collect(reader, model, after=0, want=1)
    flips = itertools.cycle([2, 3])

    def moved_and_seen() -> bool:
        if not fresh:
            set_alias(admin, model, "canary", next(flips))
        return bool(fresh)

    wait_for(moved_and_seen, 20, "a new event", interval=0.1)
    stop_fresh()
    assert fresh[0].event_id > last_before
    assert fresh[0].alias == "canary"
    reader.close()


BAD = "Bad Name!"


@pytest.mark.parametrize(
    ("method", "request_factory", "field"),
    [
        ("CreateModel", lambda m: pb.CreateModelRequest(name=BAD), "name"),
        ("CreateModel", lambda m: pb.CreateModelRequest(name="x", tags={"": "v"}), "tags"),
        ("GetVersion", lambda m: pb.GetVersionRequest(model=m), "selector"),
        ("GetVersion", lambda m: pb.GetVersionRequest(model=m, version=-3), "version"),
        ("ListVersions", lambda m: pb.ListVersionsRequest(model=m, page_size=-1), "page_size"),
        ("ListVersions", lambda m: pb.ListVersionsRequest(model=m, page_token="garbage!"), "page_token"),
        ("SetAlias", lambda m: pb.SetAliasRequest(model=m, alias=BAD, version=1), "alias"),
        ("SetAlias", lambda m: pb.SetAliasRequest(model=m, alias="a", version=0), "version"),
        (
            "SetAlias",
            lambda m: pb.SetAliasRequest(model=m, alias="a", version=1, expected_version=-1),
            "expected_version",
        ),
        (
            "SearchVersions",
            lambda m: pb.SearchVersionsRequest(model=m, metrics=[pb.MetricFilter(name="auc", value=1)]),
            "metrics[0].comparator",
        ),
        (
            "AppendGateResults",
            lambda m: pb.AppendGateResultsRequest(
                model=m,
                version=1,
                results=[  # claims to pass, but 0.5 < 0.7: the server re-checks
                    types_pb2.GateResult(name="auc", value=0.5, threshold=0.7, comparator=1, passed=True)
                ],
            ),
            "results[0].passed",
        ),
        ("AppendGateResults", lambda m: pb.AppendGateResultsRequest(model=m, version=1), "results"),
        ("WatchAliases", lambda m: pb.WatchAliasesRequest(model=m, after_event_id=-5), "after_event_id"),
    ],
)
def test_bad_requests_are_refused_naming_the_field(
    registry: Registry, admin: Client, method: str, request_factory: Callable[[str], Any], field: str
) -> None:
    model = create_model(admin, "bad")
    register(admin, model, b"x")
    before = list(audit(admin, model))

    client = registry.client(VALIDATOR_TOKEN) if method == "AppendGateResults" else admin

    def call() -> Any:
        result = getattr(client, method)(request_factory(model))
        return next(iter(result)) if method == "WatchAliases" else result

    with pytest.raises(grpc.RpcError) as exc:
        call()
    if client is not admin:
        client.close()
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(exc).startswith(field), details_of(exc)
    assert list(audit(admin, model)) == before


@pytest.mark.parametrize(
    ("head_kwargs", "field"),
    [
        ({"threshold": 1.5}, "header.threshold"),
        ({"manifest_json": "{not json"}, "header.manifest_json"),
        ({"artifact_sha256": "XYZ"}, "header.artifact_sha256"),
        ({"artifact_uri": "file:///etc/passwd", "artifact_sha256": "0" * 64}, "header.artifact_uri"),
        ({"artifact_uri": "../../etc/passwd", "artifact_sha256": "0" * 64}, "header.artifact_uri"),
        ({"metrics": {"auc": float("nan")}}, "header.metrics"),
        ({"gate_results": [gate("auc", 0.5, 0.7), gate("auc", 0.5, 0.7)]}, "header.gate_results[1].name"),
        ({"lineage": pb.Lineage(trigger="whenever")}, "header.lineage.trigger"),
        ({"lineage": pb.Lineage(trigger="alert:")}, "header.lineage.trigger"),
        ({"lineage": pb.Lineage(trigger="manual:   ")}, "header.lineage.trigger"),
        ({"lineage": pb.Lineage(trigger="alert:id\nforged: line")}, "header.lineage.trigger"),
        ({"lineage": pb.Lineage(wandb_link_status="linked")}, "header.lineage.wandb_link_status"),
    ],
)
def test_bad_registration_headers_are_refused_and_write_nothing(
    registry: Registry, admin: Client, head_kwargs: dict[str, Any], field: str
) -> None:
    model = create_model(admin, "badhead")
    with pytest.raises(grpc.RpcError) as exc:
        admin.RegisterVersion(upload_requests(header(model, **head_kwargs), b"bytes"))
    assert code_of(exc) == grpc.StatusCode.INVALID_ARGUMENT
    assert details_of(exc).startswith(field), details_of(exc)
    assert admin.GetModel(pb.GetModelRequest(name=model)).model.latest_version == 0


def test_register_by_external_uri_and_missing_things(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "uri")
    head = header(model, artifact_uri="s3://bucket/models/m.ubj", artifact_sha256="c" * 64)
    v = admin.RegisterVersion(iter([pb.RegisterVersionRequest(header=head)])).version
    assert v.artifact.uri == "s3://bucket/models/m.ubj"
    with pytest.raises(grpc.RpcError) as exc:
        download(admin, model, v.version)
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
    with pytest.raises(grpc.RpcError) as exc:
        register(admin, unique("absent"), b"x")
    assert code_of(exc) == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as exc:
        admin.CreateModel(pb.CreateModelRequest(name=model))
    assert code_of(exc) == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.RpcError) as exc:
        admin.RollbackAlias(pb.RollbackAliasRequest(model=model, alias="production"))
    assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION


def test_artifact_store_paths_never_escape(tmp_path: Path) -> None:
    from finpredict.registry.store import LocalArtifactStore, StoreError

    store = LocalArtifactStore(tmp_path / "store")
    for hostile in ["../" * 8 + "etc/passwd", "/etc/passwd", "a" * 63 + "/", "A" * 64, ""]:
        with pytest.raises(StoreError):
            store.path_for(hostile)
    upload = store.begin_upload()
    upload.write(b"hello")
    digest = upload.commit()
    assert store.path_for(digest).is_relative_to(tmp_path / "store" / "sha256")
    assert store.verify(digest, 5)


def _registry_samples(registry: Registry) -> dict[str, float]:
    import urllib.request

    url = f"http://127.0.0.1:{registry.proc.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("finpredict_registry_")
    }


def test_metrics_count_registrations_moves_and_refusals(registry: Registry, admin: Client) -> None:
    """Each kind of event moves its own counter (deltas over this test's own calls, whatever ran before)."""
    before = _registry_samples(registry)
    model = create_model(admin, "metrics")
    v1 = register(admin, model, b"one", idempotency_key="metrics-1", **promotable())
    register(admin, model, b"one", idempotency_key="metrics-1", **promotable())  # a replayed registration
    v2 = register(admin, model, b"two", **promotable())
    failing = register(admin, model, b"bad", **promotable(gate_results=[gate("auc_roc", 0.6, 0.82)]))
    set_alias(admin, model, "production", v1.version)
    set_alias(admin, model, "production", v2.version)
    admin.RollbackAlias(pb.RollbackAliasRequest(model=model, alias="production", reason="metrics test"))
    with pytest.raises(grpc.RpcError):
        set_alias(admin, model, "production", failing.version)
    with pytest.raises(grpc.RpcError):
        set_alias(admin, model, "production", v2.version, expected=v2.version)  # stale compare-and-set
    damaged = register(admin, model, b"to be damaged")
    registry.write_blob(damaged.artifact.sha256, b"damaged bytes")
    with pytest.raises(grpc.RpcError):
        download(admin, model, damaged.version)  # a stored artifact that fails its checksum
    after = _registry_samples(registry)

    def delta(sample: str) -> float:
        return after.get(sample, 0.0) - before.get(sample, 0.0)

    assert delta('finpredict_registry_registrations_total{outcome="created"}') == 4
    assert delta('finpredict_registry_registrations_total{outcome="replayed"}') == 1
    assert delta('finpredict_registry_alias_moves_total{kind="set"}') == 2
    assert delta('finpredict_registry_alias_moves_total{kind="rollback"}') == 1
    assert delta('finpredict_registry_refusals_total{reason="gates_failed"}') == 1
    assert delta('finpredict_registry_refusals_total{reason="cas_conflict"}') == 1
    assert delta('finpredict_registry_refusals_total{reason="checksum"}') == 1


@pytest.mark.parametrize(
    ("ops", "expected"),
    [
        # each op: a version number to set, or "rb" for a rollback; expected: target after each op
        ([1, 2, 3, "rb", "rb"], [1, 2, 3, 2, 1]),
        ([1, 2, "rb", 3, "rb"], [1, 2, 1, 3, 1]),
        ([1, 2, 3, "rb", 3, "rb", "rb"], [1, 2, 3, 2, 3, 2, 1]),
        ([1, "rb"], [1, None]),  # nothing to go back to: refused
        ([1, 2, "rb", "rb"], [1, 2, 1, None]),
    ],
)
def test_rollback_walks_back_through_the_history(
    registry: Registry, admin: Client, ops: list[int | str], expected: list[int | None]
) -> None:
    model = create_model(admin, "rb")
    for i in range(3):
        register(admin, model, f"rb{i}".encode(), **promotable())
    for op, want in zip(ops, expected, strict=True):
        rollback = pb.RollbackAliasRequest(model=model, alias="production", reason="x")
        if op == "rb" and want is None:
            with pytest.raises(grpc.RpcError) as exc:
                admin.RollbackAlias(rollback)
            assert code_of(exc) == grpc.StatusCode.FAILED_PRECONDITION
            continue
        if op == "rb":
            admin.RollbackAlias(rollback)
        else:
            assert isinstance(op, int)
            set_alias(admin, model, "production", op)
        assert aliases(admin, model)["production"] == want


def test_paging_through_search_audit_and_models(registry: Registry, admin: Client) -> None:
    model = create_model(admin, "page")
    for i in range(5):
        register(admin, model, f"p{i}".encode(), tags={"batch": "paging"})

    def pages(method: str, request: Any, field: str) -> list[Any]:
        got: list[Any] = []
        while True:
            resp = getattr(admin, method)(request)
            got.extend(getattr(resp, field))
            if not resp.next_page_token:
                return got
            request.page_token = resp.next_page_token

    found = pages(
        "SearchVersions", pb.SearchVersionsRequest(tags={"batch": "paging"}, page_size=2), "versions"
    )
    assert [v.version for v in found if v.model == model] == [5, 4, 3, 2, 1]
    entries = pages("ListAuditLog", pb.ListAuditLogRequest(model=model, page_size=2), "entries")
    assert [e.id for e in entries] == [e.id for e in audit(admin, model)]
    assert len(entries) == 6
    names = [m.name for m in pages("ListModels", pb.ListModelsRequest(page_size=3), "models")]
    assert names == sorted(names)
    assert model in names


def test_cancelled_upload_removes_its_temporary_file(registry: Registry, admin: Client) -> None:
    from finpredict.testkit.process import wait_for

    model = create_model(admin, "cancel")
    tmp_dir = registry.upload_dir
    release = threading.Event()

    def requests() -> Any:
        yield pb.RegisterVersionRequest(header=header(model))
        yield pb.RegisterVersionRequest(chunk=b"partial" * 1000)
        release.wait(timeout=30)

    future = admin.stub.RegisterVersion.future(requests(), metadata=admin.metadata, timeout=30)
    wait_for(lambda: any(p.stat().st_size > 0 for p in tmp_dir.glob("*.part")), 20, "the upload to start")
    future.cancel()
    release.set()
    wait_for(lambda: not list(tmp_dir.glob("*.part")), 20, "the temporary file to be removed")
    assert admin.GetModel(pb.GetModelRequest(name=model)).model.latest_version == 0
