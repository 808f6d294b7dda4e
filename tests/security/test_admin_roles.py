"""Admin RPCs are refused without the admin role, and a refused call changes nothing.

The contract comes from the protos: an RPC whose comment says "Admin." must need the admin role
in the service's role map, and every RPC must be in the map (secure by default would refuse an
unmapped one, but the map is the reviewed list). Then, on real servers: the registry's and the
monitor's admin RPCs with a writer or reader token get PERMISSION_DENIED (no token:
UNAUTHENTICATED) and leave no trace (audit log, aliases, models, retraining runs).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from finpredict.api.monitor.v1 import monitor_pb2 as mpb
from finpredict.api.monitor.v1 import monitor_pb2_grpc
from finpredict.api.registry.v1 import registry_pb2 as rpb
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.common.auth import ADMIN, bearer_metadata
from finpredict.monitor.server import METHOD_ROLES as MONITOR_ROLES
from finpredict.registry.service import METHOD_ROLES as REGISTRY_ROLES
from finpredict.testkit.evaluation import PASSING_GATES, gate, lineage
from finpredict.testkit.process import ServiceProcess, start_service
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.security import call_code

ROOT = Path(__file__).resolve().parents[2]
ADMIN_TOKEN, WRITER_TOKEN, READER_TOKEN = (
    f"roles-{r}-token-0123456789" for r in ("admin", "writer", "reader")
)
TOKENS = f"{ADMIN_TOKEN}=alice:admin,{WRITER_TOKEN}=trainer:writer,{READER_TOKEN}=bob:reader"
PROTOS = {
    "registry": (
        ROOT / "proto/finpredict/registry/v1/registry.proto",
        rpb,
        "RegistryService",
        REGISTRY_ROLES,
    ),
    "monitor": (ROOT / "proto/finpredict/monitor/v1/monitor.proto", mpb, "MonitorService", MONITOR_ROLES),
}
_RPC = re.compile(r"((?:[ \t]*//[^\n]*\n)*)[ \t]*rpc (\w+)\(")


def _admin_rpcs(proto: Path) -> set[str]:
    """RPCs whose leading comment says "Admin."."""
    return {name for comment, name in _RPC.findall(proto.read_text()) if re.search(r"\bAdmin\.", comment)}


@pytest.mark.parametrize("service", sorted(PROTOS))
def test_every_rpc_has_a_role_and_documented_admin_rpcs_need_admin(service: str) -> None:
    proto, module, name, roles = PROTOS[service]
    full = module.DESCRIPTOR.services_by_name[name]
    methods = {f"/{full.full_name}/{m.name}": m.name for m in full.methods}
    assert set(roles) == set(methods), "every RPC, and only those, has a role"
    documented = _admin_rpcs(proto)
    assert documented, f"no RPC of {proto} is documented as Admin."
    needing_admin = {methods[path] for path, role in roles.items() if role == ADMIN}
    assert documented <= needing_admin, f"documented Admin. but not admin: {documented - needing_admin}"


# ----- the registry --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("roles-registry")
    proc = start_service(
        "registry",
        tmp,
        env={"FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "data"), "FINPREDICT_REGISTRY_TOKENS": TOKENS},
    )
    try:
        yield proc
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def _registry_state(stub: Any, model: str) -> tuple[Any, ...]:
    md = bearer_metadata(ADMIN_TOKEN)
    audit = stub.ListAuditLog(rpb.ListAuditLogRequest(model=model), metadata=md, timeout=10).entries
    got = stub.GetModel(rpb.GetModelRequest(name=model), metadata=md, timeout=10).model
    models = stub.ListModels(rpb.ListModelsRequest(page_size=500), metadata=md, timeout=10).models
    versions = stub.ListVersions(rpb.ListVersionsRequest(model=model), metadata=md, timeout=10).versions
    return (
        [(e.action, e.actor) for e in audit],
        dict(got.aliases),
        sorted(m.name for m in models),
        [(v.version, v.status) for v in versions],
    )


def test_registry_admin_rpcs_refused_without_admin_and_change_nothing(registry: ServiceProcess) -> None:
    with grpc.insecure_channel(registry.target) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        admin = bearer_metadata(ADMIN_TOKEN)
        stub.CreateModel(rpb.CreateModelRequest(name="roles-model"), metadata=admin, timeout=10)
        for _ in range(2):
            head = rpb.VersionHeader(
                model="roles-model",
                artifact_format="xgboost-ubj",
                gate_results=PASSING_GATES,
                lineage=lineage(),
                reference_profile=b"profile",
            )
            stub.RegisterVersion(
                iter([rpb.RegisterVersionRequest(header=head), rpb.RegisterVersionRequest(chunk=b"w")]),
                metadata=bearer_metadata(WRITER_TOKEN),
                timeout=10,
            )
        stub.SetAlias(
            rpb.SetAliasRequest(model="roles-model", alias="production", version=1),
            metadata=admin,
            timeout=10,
        )
        stub.SetAlias(
            rpb.SetAliasRequest(model="roles-model", alias="production", version=2),
            metadata=admin,
            timeout=10,
        )
        before = _registry_state(stub, "roles-model")
        admin_calls = {
            "CreateModel": rpb.CreateModelRequest(name="roles-intruder"),
            "SetAlias": rpb.SetAliasRequest(model="roles-model", alias="production", version=1),
            "RollbackAlias": rpb.RollbackAliasRequest(model="roles-model", alias="production"),
            "DeleteAlias": rpb.DeleteAliasRequest(model="roles-model", alias="production"),
            "DeleteVersion": rpb.DeleteVersionRequest(model="roles-model", version=1),
            "SetPolicy": rpb.SetPolicyRequest(model="roles-model", policy=rpb.PromotionPolicy(), reason="r"),
        }
        assert set(admin_calls) == {
            path.rsplit("/", 1)[1] for path, role in REGISTRY_ROLES.items() if role == ADMIN
        }
        for method, request in admin_calls.items():
            for token, expected in (
                (WRITER_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
                (READER_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
                (None, grpc.StatusCode.UNAUTHENTICATED),
                (ADMIN_TOKEN[:-1], grpc.StatusCode.UNAUTHENTICATED),
            ):
                md = bearer_metadata(token) if token else ()
                assert call_code(getattr(stub, method), request, md) == expected, (method, token)
        # gate results after registration: the validator role only (not even admin)
        append = rpb.AppendGateResultsRequest(
            model="roles-model", version=2, results=[gate("manual_review", 1.0, 1.0)]
        )
        for token in (ADMIN_TOKEN, WRITER_TOKEN, READER_TOKEN):
            code = call_code(stub.AppendGateResults, append, bearer_metadata(token))
            assert code == grpc.StatusCode.PERMISSION_DENIED, token
        assert _registry_state(stub, "roles-model") == before


# ----- the monitor ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def monitor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("roles-monitor")
    proc = start_service(
        "monitor",
        tmp,
        env={
            "FINPREDICT_MONITOR_DATA_DIR": str(tmp / "data"),
            "FINPREDICT_MONITOR_PROFILES_DIR": str(tmp / "profiles"),
            "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": "0",
            "FINPREDICT_MONITOR_TOKENS": TOKENS,
            "FINPREDICT_MONITOR_RETRAIN_COMMAND": f"{sys.executable} -c pass",
        },
    )
    try:
        yield proc
    finally:
        assert proc.stop(timeout=20) == 0, proc.logs()[-4000:]


def test_monitor_admin_rpcs_refused_without_admin_and_start_nothing(monitor: ServiceProcess) -> None:
    now = mpb.EvaluateRulesRequest()
    now.now.FromSeconds(1_740_000_000)
    trigger = mpb.TriggerRetrainingRequest(model="credit-default", reason="intruder")
    admin_calls: dict[str, Message] = {
        "TriggerRetraining": trigger,
        "ScheduleRetraining": mpb.ScheduleRetrainingRequest(model="credit-default"),
        "EvaluateRules": now,
    }
    assert set(admin_calls) == {
        path.rsplit("/", 1)[1] for path, role in MONITOR_ROLES.items() if role == ADMIN
    }
    runs = metric_value(monitor, "finpredict_monitor_retraining_runs_total", trigger="manual")
    with grpc.insecure_channel(monitor.target) as channel:
        stub = monitor_pb2_grpc.MonitorServiceStub(channel)
        for method, request in admin_calls.items():
            for token, expected in (
                (WRITER_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
                (READER_TOKEN, grpc.StatusCode.PERMISSION_DENIED),
                (None, grpc.StatusCode.UNAUTHENTICATED),
                ("Bearer " + ADMIN_TOKEN, grpc.StatusCode.UNAUTHENTICATED),
            ):
                md = bearer_metadata(token) if token else ()
                assert call_code(getattr(stub, method), request, md) == expected, (method, token)
        assert metric_value(monitor, "finpredict_monitor_retraining_runs_total", trigger="manual") == runs
        assert not (Path(str(monitor.extra_env["FINPREDICT_MONITOR_DATA_DIR"])) / "retraining").exists()
        # the roles below admin keep what they need: the gateway (writer) ingests, a reader reads
        ingest = stub.IngestPredictions(
            iter([mpb.IngestPredictionsRequest()]), metadata=bearer_metadata(WRITER_TOKEN), timeout=10
        )
        assert ingest.accepted == 0
        assert (
            call_code(stub.ListAlerts, mpb.ListAlertsRequest(), bearer_metadata(READER_TOKEN))
            == grpc.StatusCode.OK
        )
        assert (
            call_code(stub.RecordOutcomes, mpb.RecordOutcomesRequest(), bearer_metadata(READER_TOKEN))
            == grpc.StatusCode.PERMISSION_DENIED
        )
        # and the admin gets through
        resp = stub.TriggerRetraining(trigger, metadata=bearer_metadata(ADMIN_TOKEN), timeout=10)
        assert resp.job_id
    assert metric_value(monitor, "finpredict_monitor_retraining_runs_total", trigger="manual") == runs + 1
