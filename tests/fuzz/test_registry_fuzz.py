"""Fuzz every public RPC of the registry (proto/finpredict/registry/v1) on a real server.

Each RPC gets hypothesis-generated requests (hostile strings, integer edges, NaN/inf, unknown
enums, oversized bytes, half-valid registration streams). The contract checked for every call:
the server stays up, answers before the deadline, and refuses with a clear status and message,
never UNKNOWN/INTERNAL. At the end the server is still healthy, its log has no traceback, and
the data it had before the fuzzing is intact.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.struct_pb2 import Struct, Value
from google.protobuf.timestamp_pb2 import Timestamp
from grpc_health.v1 import health_pb2
from hypothesis import given
from hypothesis import strategies as st

from finpredict.api.common.v1 import types_pb2
from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.registry.service import encode_token
from finpredict.testkit.evaluation import PASSING_GATES, lineage
from finpredict.testkit.fuzz import (
    EXAMPLES,
    FuzzTarget,
    call,
    check_outcome,
    fuzz_rpc,
    fuzz_settings,
    fuzz_target,
    messages,
    one_field_off,
    rpc_names,
    timestamps,
)
from finpredict.testkit.process import start_service

SERVICE = pb.DESCRIPTOR.services_by_name["RegistryService"]
ADMIN_TOKEN = "fuzz-admin-token-0123456789"
MODEL = "fuzz-model"
KEPT = "fuzz-kept"  # never named by the hints: its version must read back intact at the end
ARTIFACT = b"fuzz model weights"
SHA = hashlib.sha256(ARTIFACT).hexdigest()

HINTS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([MODEL, "fuzz-absent"]),
    "name": st.sampled_from([MODEL, "auc_roc", "fuzz-absent"]),
    "alias": st.sampled_from(["production", "staging", "canary"]),
    "version": st.sampled_from([1, 2, 3]),
    "expected_version": st.sampled_from([0, 1, 2]),
    "page_size": st.sampled_from([1, 2, 500]),
    "page_token": st.sampled_from([encode_token(1), encode_token(MODEL), encode_token(2**62)]),
    "artifact_sha256": st.sampled_from([SHA, "0" * 64]),
    "artifact_format": st.just("xgboost-ubj"),
    "threshold": st.floats(0.0, 1.0),
    "after_event_id": st.sampled_from([-1, 0, 1]),
    "created_after": timestamps(0, 2_000_000_000),
    "created_before": timestamps(0, 2_000_000_000),
    "trigger": st.sampled_from(["manual", "schedule", "alert:abc"]),
    "comparator": st.sampled_from([1, 2]),
}
GATE = types_pb2.GateResult(
    name="auc_roc", value=0.9, threshold=0.82, comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL, passed=True
)
# A gate no version has at registration (recorded results are immutable; a validator adds new ones).
NEW_GATE = types_pb2.GateResult(
    name="manual_review", value=1, threshold=1, comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL, passed=True
)
VALID_HEADER = pb.VersionHeader(
    model=MODEL,
    description="a fuzzed registration",
    artifact_format="xgboost-ubj",
    manifest_json='{"format": "xgboost-ubj"}',
    artifact_sha256=SHA,
    feature_schema=types_pb2.FeatureSchema(
        features=[
            types_pb2.FeatureSpec(name="income", type=types_pb2.FEATURE_TYPE_NUMERIC, min=0.0),
            types_pb2.FeatureSpec(name="sector", type=types_pb2.FEATURE_TYPE_CATEGORICAL, categories=["a"]),
        ]
    ),
    threshold=0.5,
    metrics={"auc_roc": 0.9},
    gate_results=[GATE],
    tags={"team": "risk"},
    lineage=pb.Lineage(
        git_commit="0" * 40,
        data_md5={"data/raw/loans.parquet": "0" * 32},
        dvc_lock_sha256="0" * 64,
        params=Struct(fields={"max_depth": Value(number_value=4), "name": Value(string_value="xgb")}),
        wandb_run_id="run1",
        trigger="manual",
        parents=[types_pb2.ModelRef(name=MODEL, version=1)],
    ),
    reference_profile=b"profile",
)
# Valid requests of the unary RPCs: the fuzzer also sends them with one field (maybe deep) off.
VALID: dict[str, Any] = {
    "CreateModel": pb.CreateModelRequest(name="fuzz-new", description="d", tags={"team": "risk"}),
    "GetModel": pb.GetModelRequest(name=MODEL),
    "ListModels": pb.ListModelsRequest(page_size=10),
    "GetVersion": pb.GetVersionRequest(model=MODEL, version=1),
    "ListVersions": pb.ListVersionsRequest(model=MODEL, page_size=10),
    "SearchVersions": pb.SearchVersionsRequest(
        model=MODEL,
        tags={"team": "risk"},
        metrics=[
            pb.MetricFilter(name="auc_roc", comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL, value=0.5)
        ],
        alias="production",
        gates_passed_only=True,
        page_size=5,
    ),
    "SetAlias": pb.SetAliasRequest(model=MODEL, alias="staging", version=2, expected_version=0, reason="r"),
    "RollbackAlias": pb.RollbackAliasRequest(model=MODEL, alias="staging", reason="r"),
    "DeleteAlias": pb.DeleteAliasRequest(model=MODEL, alias="canary", reason="r"),
    "DeleteVersion": pb.DeleteVersionRequest(model=MODEL, version=3, reason="r"),
    "GetLineage": pb.GetLineageRequest(model=MODEL, version=1),
    "AppendGateResults": pb.AppendGateResultsRequest(model=MODEL, version=2, results=[NEW_GATE]),
    "GetPolicy": pb.GetPolicyRequest(model=MODEL, version=1),
    "SetPolicy": pb.SetPolicyRequest(
        model=MODEL,
        policy=pb.PromotionPolicy(
            gates=[
                pb.PolicyGate(name="auc_roc", comparator=types_pb2.COMPARATOR_GREATER_OR_EQUAL, threshold=0.8)
            ],
            required_lineage=[pb.LINEAGE_REQUIREMENT_DATA_MD5],
        ),
        reason="r",
    ),
    "ListAuditLog": pb.ListAuditLogRequest(model=MODEL, page_size=10),
    "WatchAliases": pb.WatchAliasesRequest(model=MODEL, after_event_id=-1),
    "DownloadArtifact": pb.DownloadArtifactRequest(model=MODEL, version=1),
}
CHUNKS = st.lists(st.binary(min_size=1, max_size=256), max_size=3)
# RegisterVersion (a client stream): besides any stream of messages, a header then chunks, the
# header being any header or the valid one with one field off.
EXTRA: dict[str, st.SearchStrategy[Any]] = {
    "RegisterVersion": st.builds(
        lambda head, chunks: (
            [pb.RegisterVersionRequest(header=head)] + [pb.RegisterVersionRequest(chunk=c) for c in chunks]
        ),
        st.one_of(messages(pb.VersionHeader.DESCRIPTOR, HINTS), one_field_off(VALID_HEADER, HINTS)),
        st.one_of(st.just([ARTIFACT]), CHUNKS),
    )
}


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzTarget]:
    tmp: Path = tmp_path_factory.mktemp("registry-fuzz")
    proc = start_service(
        "registry",
        tmp,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "data"),
            "FINPREDICT_REGISTRY_TOKENS": f"{ADMIN_TOKEN}=fuzzer:admin|validator",
            "FINPREDICT_REGISTRY_WATCH_POLL_S": "0.1",
            "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "2",
            "FINPREDICT_REGISTRY_WANDB_MODE": "offline",
        },
    )
    with fuzz_target(proc, ADMIN_TOKEN) as target:
        stub = registry_pb2_grpc.RegistryServiceStub(target.channel)
        md = target.metadata
        for name, versions in ((MODEL, 2), (KEPT, 1)):
            stub.CreateModel(pb.CreateModelRequest(name=name, description="fuzzed"), metadata=md, timeout=10)
            for _ in range(versions):
                _register(stub, md, name)
        stub.SetAlias(pb.SetAliasRequest(model=MODEL, alias="production", version=1), metadata=md, timeout=10)
        yield target
        # After everything: the data from before the fuzzing still reads back whole.
        download = pb.DownloadArtifactRequest(model=KEPT, version=1)
        kept = b"".join(r.chunk for r in stub.DownloadArtifact(download, metadata=md, timeout=10))
        assert kept == ARTIFACT


def _register(
    stub: registry_pb2_grpc.RegistryServiceStub, md: tuple[tuple[str, str], ...], model: str
) -> None:
    head = pb.VersionHeader(
        model=model,
        artifact_format="xgboost-ubj",
        threshold=0.5,
        gate_results=PASSING_GATES,
        lineage=lineage(),
        reference_profile=b"profile",
    )
    stub.RegisterVersion(
        iter([pb.RegisterVersionRequest(header=head), pb.RegisterVersionRequest(chunk=ARTIFACT)]),
        metadata=md,
        timeout=10,
    )


@pytest.mark.parametrize("method_name", rpc_names(SERVICE))
def test_registry_rpc_refuses_hostile_requests_clearly(registry: FuzzTarget, method_name: str) -> None:
    method = SERVICE.methods_by_name[method_name]
    examples = max(4, EXAMPLES // 3) if method.server_streaming and method_name.startswith("Watch") else None
    fuzz_rpc(registry, SERVICE, method_name, HINTS, VALID.get(method_name), EXTRA.get(method_name), examples)


def test_hostile_authorization_headers_are_unauthenticated(registry: FuzzTarget) -> None:
    method = SERVICE.methods_by_name["ListModels"]

    @fuzz_settings()
    @given(
        st.one_of(
            st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=300),
            st.sampled_from(["", "Bearer", "Bearer ", "bearer " + ADMIN_TOKEN[:-1], "Basic " + ADMIN_TOKEN]),
        )
    )
    def run(value: str) -> None:
        outcome = call(registry.channel, SERVICE, method, pb.ListModelsRequest(), [("authorization", value)])
        check_outcome(method, value, outcome, registry.proc)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (value, outcome)

    run()


def test_messages_over_the_size_limit_are_resource_exhausted(registry: FuzzTarget) -> None:
    method = SERVICE.methods_by_name["CreateModel"]
    request = pb.CreateModelRequest(name="big", description="x" * (17 * 1024 * 1024))
    outcome = call(registry.channel, SERVICE, method, request, registry.metadata)
    assert outcome.code == grpc.StatusCode.RESOURCE_EXHAUSTED, outcome
    assert outcome.details
    assert registry.proc.health() == health_pb2.HealthCheckResponse.SERVING


def _nan_lineage() -> list[pb.RegisterVersionRequest]:
    head = pb.VersionHeader()
    head.CopyFrom(VALID_HEADER)
    head.lineage.params["learning_rate"] = float("nan")
    return [pb.RegisterVersionRequest(header=head), pb.RegisterVersionRequest(chunk=ARTIFACT)]


# Inputs that once got UNKNOWN from the registry (found by the fuzzer), with the field the refusal
# must name now.
REGRESSIONS: list[tuple[str, Any, str]] = [
    (
        "ListAuditLog",
        pb.ListAuditLogRequest(model=MODEL, page_token=encode_token(2**70)),
        "page_token",
    ),
    (
        "ListVersions",
        pb.ListVersionsRequest(model=MODEL, page_token=encode_token(-1)),
        "page_token",
    ),
    (
        "SearchVersions",
        pb.SearchVersionsRequest(model=MODEL, created_after=Timestamp(seconds=-(2**63))),
        "created_after",
    ),
    (
        "SearchVersions",
        pb.SearchVersionsRequest(created_before=Timestamp(seconds=2**62, nanos=5)),
        "created_before",
    ),
    ("RegisterVersion", _nan_lineage(), "header.lineage.params['learning_rate']"),
]


@pytest.mark.parametrize(("method_name", "request_msg", "field"), REGRESSIONS)
def test_registry_regressions_are_invalid_argument_naming_the_field(
    registry: FuzzTarget, method_name: str, request_msg: Any, field: str
) -> None:
    method = SERVICE.methods_by_name[method_name]
    outcome = call(registry.channel, SERVICE, method, request_msg, registry.metadata)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.details.startswith(field), outcome.details
