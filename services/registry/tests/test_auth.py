"""Bearer-token auth (acceptance 6): the shared interceptor, unit and against a real registry."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from finpredict.api.registry.v1 import registry_pb2 as pb
from finpredict.common.auth import (
    BearerAuthInterceptor,
    Principal,
    TokenSpecError,
    parse_tokens,
)
from finpredict.registry.service import METHOD_ROLES, ROLE_IMPLIES, SERVICE
from finpredict.testkit.registry import (
    ADMIN_TOKEN,
    READER_TOKEN,
    VALIDATOR_TOKEN,
    WRITER_TOKEN,
    Client,
    Registry,
    audit,
    code_of,
    create_model,
    details_of,
    header,
    register,
    running_registry,
    upload_requests,
)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("", {}),
        ("tok-aaaaaaaa=alice:admin", {"tok-aaaaaaaa": ("alice", {"admin"})}),
        (
            " tok-aaaaaaaa = alice:admin|reader , tok-bbbbbbbb=bob:reader",
            {"tok-aaaaaaaa": ("alice", {"admin", "reader"}), "tok-bbbbbbbb": ("bob", {"reader"})},
        ),
        ('{"tok-cccccccc": {"subject": "ci", "roles": ["writer"]}}', {"tok-cccccccc": ("ci", {"writer"})}),
    ],
)
def test_token_specs_parse(spec: str, expected: dict[str, tuple[str, set[str]]]) -> None:
    parsed = parse_tokens(spec)
    auth = BearerAuthInterceptor(parsed, {})
    assert len(parsed) == len(expected)
    for token, (subject, roles) in expected.items():
        assert auth.authenticate([("authorization", f"Bearer {token}")]) == Principal(
            subject, frozenset(roles)
        )


@pytest.mark.parametrize(
    "spec",
    [
        "tok-aaaaaaaa",  # no subject
        "tok-aaaaaaaa=alice",  # no role
        "short=alice:admin",  # token too short
        "tok-aaaaaaaa=al ice:admin",  # bad subject
        "tok-aaaaaaaa=alice:admin,tok-aaaaaaaa=bob:reader",  # duplicate
        '{"tok-aaaaaaaa": {"subject": "a"}}',  # JSON without roles
        "{not json",
    ],
)
def test_bad_token_specs_are_refused_without_echoing_tokens(spec: str) -> None:
    with pytest.raises(TokenSpecError) as exc:
        parse_tokens(spec)
    assert "tok-aaaaaaaa" not in str(exc.value)


def test_roles_imply_and_unknown_methods_need_admin() -> None:
    auth = BearerAuthInterceptor({}, {"/x.S/Read": "reader"})
    assert auth.effective_roles({"admin"}) == {"admin", "writer", "reader"}
    assert auth.effective_roles({"writer"}) == {"writer", "reader"}
    assert auth.required_role("/x.S/Read") == "reader"
    assert auth.required_role("/x.S/SomethingNew") == "admin"
    assert auth.required_role("/grpc.health.v1.Health/Check") is None
    assert auth.authenticate([("authorization", "Basic dXNlcjpwYXNz")]) is None
    assert auth.authenticate([]) is None


def test_every_registry_rpc_has_a_role() -> None:
    methods = {f"/{SERVICE}/{m.name}" for m in pb.DESCRIPTOR.services_by_name["RegistryService"].methods}
    assert set(METHOD_ROLES) == methods
    for admin_only in (
        "SetAlias",
        "RollbackAlias",
        "DeleteAlias",
        "DeleteVersion",
        "CreateModel",
        "SetPolicy",
    ):
        assert METHOD_ROLES[f"/{SERVICE}/{admin_only}"] == "admin"
    assert METHOD_ROLES[f"/{SERVICE}/AppendGateResults"] == "validator"


def test_the_validator_role_is_apart_from_admin_and_writer() -> None:
    auth = BearerAuthInterceptor({}, METHOD_ROLES, role_implies=ROLE_IMPLIES)
    assert auth.effective_roles({"validator"}) == {"validator", "reader"}
    assert "validator" not in auth.effective_roles({"admin"})
    assert "validator" not in auth.effective_roles({"writer"})


@pytest.fixture(scope="module")
def reg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    with running_registry("sqlite", tmp_path_factory.mktemp("auth"), None) as r:
        yield r


def _call(client: Client, method: str, request: Any) -> Any:
    result = getattr(client, method)(request)
    if method in ("WatchAliases", "DownloadArtifact"):
        return next(iter(result))
    return result


MODEL = "auth-model"
READS = [
    ("GetModel", pb.GetModelRequest(name=MODEL)),
    ("ListModels", pb.ListModelsRequest()),
    ("SearchVersions", pb.SearchVersionsRequest()),
    ("ListAuditLog", pb.ListAuditLogRequest()),
    ("DownloadArtifact", pb.DownloadArtifactRequest(model=MODEL, version=1)),
    ("GetPolicy", pb.GetPolicyRequest(model=MODEL)),
]
ADMIN_CALLS = [
    ("SetAlias", pb.SetAliasRequest(model=MODEL, alias="production", version=1)),
    ("RollbackAlias", pb.RollbackAliasRequest(model=MODEL, alias="production")),
    ("DeleteAlias", pb.DeleteAliasRequest(model=MODEL, alias="production")),
    ("DeleteVersion", pb.DeleteVersionRequest(model=MODEL, version=1)),
    ("CreateModel", pb.CreateModelRequest(name="another")),
    ("SetPolicy", pb.SetPolicyRequest(model=MODEL)),
]


@pytest.mark.parametrize("token", [None, "not-a-known-token-123"])
@pytest.mark.parametrize(
    ("method", "request_msg"), READS + ADMIN_CALLS + [("WatchAliases", pb.WatchAliasesRequest())]
)
def test_missing_or_unknown_token_is_unauthenticated(
    reg: Registry, token: str | None, method: str, request_msg: Any
) -> None:
    client = reg.client(token)
    with pytest.raises(grpc.RpcError) as exc:
        _call(client, method, request_msg)
    assert code_of(exc) == grpc.StatusCode.UNAUTHENTICATED
    client.close()


@pytest.mark.parametrize(("method", "request_msg"), ADMIN_CALLS)
@pytest.mark.parametrize("token", [READER_TOKEN, WRITER_TOKEN, VALIDATOR_TOKEN])
def test_reader_or_writer_on_admin_rpc_is_permission_denied(
    reg: Registry, token: str, method: str, request_msg: Any
) -> None:
    client = reg.client(token)
    with pytest.raises(grpc.RpcError) as exc:
        _call(client, method, request_msg)
    assert code_of(exc) == grpc.StatusCode.PERMISSION_DENIED
    assert "admin" in details_of(exc)
    client.close()


def test_reader_reads_writer_registers_admin_moves_and_audit_names_who(reg: Registry) -> None:
    admin, writer, reader = reg.client(ADMIN_TOKEN), reg.client(WRITER_TOKEN), reg.client(READER_TOKEN)
    model = create_model(admin, "who")
    with pytest.raises(grpc.RpcError) as exc:
        register(reader, model, b"x")
    assert code_of(exc) == grpc.StatusCode.PERMISSION_DENIED
    v = register(writer, model, b"weights")
    assert v.created_by == "trainer"
    reads = [
        ("GetModel", pb.GetModelRequest(name=model)),
        ("ListModels", pb.ListModelsRequest()),
        ("SearchVersions", pb.SearchVersionsRequest(model=model)),
        ("ListAuditLog", pb.ListAuditLogRequest(model=model)),
        ("DownloadArtifact", pb.DownloadArtifactRequest(model=model, version=1)),
        ("GetLineage", pb.GetLineageRequest(model=model, version=1)),
    ]
    for method, request_msg in reads:
        _call(reader, method, request_msg)  # no error
    admin.SetAlias(pb.SetAliasRequest(model=model, alias="staging", version=1, reason="smoke"))
    actors = [(e.action, e.actor) for e in audit(reader, model)]
    assert actors == [("model.create", "alice"), ("version.register", "trainer"), ("alias.set", "alice")]
    for c in (admin, writer, reader):
        c.close()


def test_health_is_open_and_tokens_never_logged(reg: Registry) -> None:
    assert reg.proc.health() == health_pb2.HealthCheckResponse.SERVING
    client = reg.client(None)
    with pytest.raises(grpc.RpcError):
        client.RegisterVersion(upload_requests(header("m"), b"x"))
    client.close()
    logs = reg.proc.logs()
    for secret in (ADMIN_TOKEN, READER_TOKEN, WRITER_TOKEN):
        assert secret not in logs


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"FINPREDICT_REGISTRY_TOKENS": "leakedsecret1=alice"}, "FINPREDICT_REGISTRY_TOKENS"),
        ({"FINPREDICT_REGISTRY_ARTIFACT_STORE": "s3://Not_A_Bucket/x"}, "FINPREDICT_REGISTRY_ARTIFACT_STORE"),
        ({"FINPREDICT_REGISTRY_ARTIFACT_STORE": "gs://bucket/prefix"}, "FINPREDICT_REGISTRY_ARTIFACT_STORE"),
        ({"FINPREDICT_REGISTRY_DATABASE_URL": "mysql://x/y"}, "FINPREDICT_REGISTRY_DATABASE_URL"),
        ({"FINPREDICT_REGISTRY_CHUNK_SIZE": "12"}, "FINPREDICT_REGISTRY_CHUNK_SIZE"),
    ],
)
def test_bad_settings_fail_fast_naming_the_variable(
    tmp_path: Path, env: dict[str, str], variable: str
) -> None:
    from finpredict.testkit.process import start_service
    from finpredict.testkit.registry import registry_env

    with pytest.raises(RuntimeError) as exc:
        start_service("registry", tmp_path, env={**registry_env(tmp_path), **env}, timeout=30)
    assert variable in str(exc.value)
    assert "leakedsecret1" not in str(exc.value)
