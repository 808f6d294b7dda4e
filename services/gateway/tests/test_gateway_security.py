"""The gateway's security, without Ray: a real registry and gateways whose model-server address
has nothing behind it (scoring ends in UNAVAILABLE), as in test_cli.py.

- TLS by configuration, with certificates made here: a gateway with a certificate refuses
  plaintext; under mutual TLS it refuses clients without a certificate or with one from another
  CA, and serves the right one; its own channel to a registry that requires mutual TLS works
  with the configured CA and client certificate, and is refused without the certificate.
- Every change of the rollout API needs the admin role (PERMISSION_DENIED for a reader,
  UNAUTHENTICATED without or with an unknown token); reads need a token.
- Fuzzing: hypothesis-generated requests for every public RPC (huge, empty, NaN/inf, unicode,
  negative sizes, unknown enums, one field off a valid request) never crash or hang the gateway
  and are answered with a clear status and message, never UNKNOWN/INTERNAL. Budget:
  ``FINPREDICT_FUZZ_EXAMPLES`` per RPC (default 25; ``task fuzz`` raises it).
- No token (the gateway's own, the registry's, or a near miss a client sent) appears in any log
  of the module's services, DEBUG logging on; a malformed token variable is refused at start-up
  without echoing it.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.duration_pb2 import Duration
from google.protobuf.message import Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import given
from hypothesis import strategies as st

from finpredict.api.common.v1 import types_pb2
from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.api.registry.v1 import registry_pb2_grpc
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as rpb_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.common.auth import bearer_metadata
from finpredict.common.net import free_port
from finpredict.testkit.cli import RegistryAdmin
from finpredict.testkit.fuzz import assert_clean_logs, call, check_outcome, fuzz_settings, requests_for
from finpredict.testkit.models import SMALL_SCHEMA, synthetic_records, train_small_model
from finpredict.testkit.pki import issue, pem
from finpredict.testkit.process import ServiceExitedError, ServiceProcess, start_service, wait_for

EXAMPLES = int(os.environ.get("FINPREDICT_FUZZ_EXAMPLES", "25"))

# Every secret of this module: each must stay out of every log.
TOKENS = {
    name: f"{name}-{secrets.token_hex(12)}"
    for name in ("gw-admin", "gw-reader", "reg-admin", "reg-controller", "near-miss")
}
GATEWAY_TOKENS = f"{TOKENS['gw-admin']}=ops:admin,{TOKENS['gw-reader']}=lending-app:reader"
REGISTRY_TOKENS = f"{TOKENS['reg-admin']}=alice:admin,{TOKENS['reg-controller']}=rollout-controller:admin"
ADMIN = bearer_metadata(TOKENS["gw-admin"])
READER = bearer_metadata(TOKENS["gw-reader"])
NEAR_MISS = bearer_metadata(TOKENS["near-miss"])

SCORING = spb.DESCRIPTOR.services_by_name["ScoringService"]
OIP = oip.DESCRIPTOR.services_by_name["GRPCInferenceService"]
ROLLOUT = rpb.DESCRIPTOR.services_by_name["RolloutService"]
ADMIN_RPCS = [
    "StartRollout",
    "PauseRollout",
    "ResumeRollout",
    "AbortRollout",
    "PromoteRollout",
    "SetShadow",
    "StartExperiment",
    "StopExperiment",
]


# ----- the services --------------------------------------------------------------------------------


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_crt: Path
    server_key: Path
    client_crt: Path  # issued by the CA: the gateway's (and a client's) certificate
    client_key: Path
    foreign: tuple[bytes, bytes]  # a client certificate and key from another CA

    def creds(self, client: tuple[bytes, bytes] | None = None) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca.read_bytes(),
            private_key=client[1] if client else None,
            certificate_chain=client[0] if client else None,
        )

    @property
    def client(self) -> tuple[bytes, bytes]:
        return self.client_crt.read_bytes(), self.client_key.read_bytes()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("gw-pki")
    ca = issue("finpredict test CA", None)
    files = {
        "ca": pem(ca),
        "server": pem(issue("127.0.0.1", ca, server=True)),
        "client": pem(issue("gateway", ca)),
    }
    for label, (cert, key) in files.items():
        (d / f"{label}.crt").write_bytes(cert)
        (d / f"{label}.key").write_bytes(key)
    foreign = pem(issue("intruder", issue("someone else's CA", None)))
    return Pki(
        d, d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key", foreign
    )


def _health(target: str, creds: grpc.ChannelCredentials | None) -> int:
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status
        )


def _start(
    name: str, work: Path, env: dict[str, str], creds: grpc.ChannelCredentials | None = None
) -> ServiceProcess:
    """Starts ``name``; with ``creds`` (a TLS server) waits for health over TLS."""
    proc = start_service(name, work, env=env, wait_healthy=creds is None)
    if creds is not None:
        try:
            wait_for(
                lambda: _health(proc.target, creds) == health_pb2.HealthCheckResponse.SERVING,
                60,
                f"{name} TLS health",
            )
        except BaseException:
            proc.stop()
            raise
    return proc


def _registry_env(work: Path, **extra: str) -> dict[str, str]:
    return {
        "FINPREDICT_REGISTRY_DATA_DIR": str(work / "data"),
        "FINPREDICT_REGISTRY_TOKENS": REGISTRY_TOKENS,
        "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
        "FINPREDICT_REGISTRY_LOG_LEVEL": "DEBUG",
        "FINPREDICT_REGISTRY_SHUTDOWN_GRACE_S": "1",
        **{f"FINPREDICT_REGISTRY_{k}": v for k, v in extra.items()},
    }


def _gateway_env(work: Path, registry: str, **extra: str) -> dict[str, str]:
    return {
        "FINPREDICT_GATEWAY_TOKENS": GATEWAY_TOKENS,
        "FINPREDICT_GATEWAY_DATA_DIR": str(work / "data"),
        "FINPREDICT_GATEWAY_REGISTRY_TARGET": registry,
        "FINPREDICT_GATEWAY_REGISTRY_TOKEN": TOKENS["reg-controller"],
        "FINPREDICT_GATEWAY_MODEL_SERVER_TARGET": f"127.0.0.1:{free_port()}",  # nothing there
        "FINPREDICT_GATEWAY_MONITOR_TARGET": "",
        "FINPREDICT_GATEWAY_BACKEND_RETRIES": "0",
        "FINPREDICT_GATEWAY_BACKEND_TIMEOUT_S": "1",
        "FINPREDICT_GATEWAY_LOG_FORMAT": "text",
        "FINPREDICT_GATEWAY_LOG_LEVEL": "DEBUG",
        "FINPREDICT_GATEWAY_SHUTDOWN_GRACE_S": "1",
        **{f"FINPREDICT_GATEWAY_{k}": v for k, v in extra.items()},
    }


def _admin(target: str, creds: grpc.ChannelCredentials | None = None) -> RegistryAdmin:
    admin = RegistryAdmin(target)
    admin.md = bearer_metadata(TOKENS["reg-admin"])
    if creds is not None:
        admin.channel.close()
        admin.channel = grpc.secure_channel(target, creds)
        admin.stub = registry_pb2_grpc.RegistryServiceStub(admin.channel)
    return admin


def _model(admin: RegistryAdmin, name: str) -> str:
    """``name`` with v1 in production and v2 registered."""
    admin.create_model(name)
    v1 = admin.register(name, train_small_model(seed=1, rounds=3))
    admin.register(name, train_small_model(seed=2, rounds=4))
    admin.set_production(name, v1)
    return name


MODEL = "sec-credit"


@dataclass
class Plain:
    """A registry and a gateway without TLS (the role, fuzz and log tests)."""

    registry: ServiceProcess
    gateway: ServiceProcess
    channel: grpc.Channel
    work: Path


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plain]:
    work = tmp_path_factory.mktemp("gw-sec")
    registry = _start("registry", work / "registry", _registry_env(work / "registry"))
    try:
        admin = _admin(registry.target)
        try:
            _model(admin, MODEL)
        finally:
            admin.close()
        gateway = _start("gateway", work / "gateway", _gateway_env(work / "gateway", registry.target))
        channel = grpc.insecure_channel(gateway.target)
        try:
            yield Plain(registry, gateway, channel, work)
            assert gateway.health() == health_pb2.HealthCheckResponse.SERVING
        finally:
            channel.close()
            stopped = gateway.stop(timeout=30)
        assert stopped == 0, gateway.logs()[-3000:]
    finally:
        registry.stop(timeout=30)


@dataclass
class Tls:
    """A registry that requires mutual TLS, and the model it serves."""

    registry: ServiceProcess
    work: Path


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, pki: Pki) -> Iterator[Tls]:
    work = tmp_path_factory.mktemp("gw-sec-tls")
    env = _registry_env(
        work / "registry",
        TLS_CERT_FILE=str(pki.server_crt),
        TLS_KEY_FILE=str(pki.server_key),
        TLS_CLIENT_CA_FILE=str(pki.ca),
    )
    registry = _start("registry", work / "registry", env, pki.creds(pki.client))
    try:
        admin = _admin(registry.target, pki.creds(pki.client))
        try:
            _model(admin, MODEL)
        finally:
            admin.close()
        yield Tls(registry, work)
    finally:
        registry.stop(timeout=30)


def _metadata_call(target: str, creds: grpc.ChannelCredentials) -> tuple[grpc.StatusCode, str]:
    """ModelMetadata through a TLS channel: the gateway answers it from the registry."""
    with grpc.secure_channel(target, creds) as channel:
        try:
            oip_grpc.GRPCInferenceServiceStub(channel).ModelMetadata(
                oip.ModelMetadataRequest(name=MODEL), metadata=READER, timeout=15
            )
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""  # type: ignore[attr-defined]
    return grpc.StatusCode.OK, ""


# ----- TLS ---------------------------------------------------------------------------------------


def test_tls_gateway_refuses_plaintext_and_reaches_an_mtls_registry(pki: Pki, tls_registry: Tls) -> None:
    """Server TLS (certificate and key) on the gateway; its outgoing channels verify the registry
    with the CA and present the client certificate, which the registry requires."""
    work = tls_registry.work / "gateway-tls"
    env = _gateway_env(
        work,
        tls_registry.registry.target,
        TLS_CERT_FILE=str(pki.server_crt),
        TLS_KEY_FILE=str(pki.server_key),
        TLS_CA_FILE=str(pki.ca),
        TLS_CLIENT_CERT_FILE=str(pki.client_crt),
        TLS_CLIENT_KEY_FILE=str(pki.client_key),
    )
    gateway = _start("gateway", work, env, pki.creds())
    try:
        assert gateway.ready["tls"] is True
        with pytest.raises(grpc.RpcError) as err:
            _health(gateway.target, None)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        code, details = _metadata_call(gateway.target, pki.creds())
        assert code == grpc.StatusCode.OK, details  # the schema came from the mTLS registry
    finally:
        stopped = gateway.stop(timeout=30)
    assert stopped == 0, gateway.logs()[-3000:]


def test_mtls_gateway_refuses_foreign_client_certs_and_needs_its_own_for_the_registry(
    pki: Pki, tls_registry: Tls
) -> None:
    """Mutual TLS on the gateway (client CA set): no client certificate or one from another CA
    is refused, the right one served. This gateway trusts the registry's CA but has no client
    certificate of its own, so the registry (mutual TLS) refuses it: reads that need the
    registry answer UNAVAILABLE."""
    work = tls_registry.work / "gateway-mtls"
    env = _gateway_env(
        work,
        tls_registry.registry.target,
        TLS_CERT_FILE=str(pki.server_crt),
        TLS_KEY_FILE=str(pki.server_key),
        TLS_CLIENT_CA_FILE=str(pki.ca),
        TLS_CA_FILE=str(pki.ca),
    )
    gateway = _start("gateway", work, env, pki.creds(pki.client))
    try:
        for refused in (None, pki.creds(), pki.creds(pki.foreign)):
            with pytest.raises(grpc.RpcError) as err:
                _health(gateway.target, refused)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert _health(gateway.target, pki.creds(pki.client)) == health_pb2.HealthCheckResponse.SERVING
        code, details = _metadata_call(gateway.target, pki.creds(pki.client))
        assert code == grpc.StatusCode.UNAVAILABLE, (code, details)
        assert "registry" in details, details
    finally:
        stopped = gateway.stop(timeout=30)
    assert stopped == 0, gateway.logs()[-3000:]


# ----- roles -------------------------------------------------------------------------------------


def _valid(method: str) -> Message:
    """A well-formed request of each admin RPC (refused by auth before anything looks at it)."""
    arms = [
        rpb.ExperimentArm(name="a", version=1, weight=50),
        rpb.ExperimentArm(name="b", version=2, weight=50),
    ]
    return {
        "StartRollout": rpb.StartRolloutRequest(model=MODEL, candidate_version=2, steps=[50.0, 100.0]),
        "PauseRollout": rpb.PauseRolloutRequest(rollout_id="r1", reason="x"),
        "ResumeRollout": rpb.ResumeRolloutRequest(rollout_id="r1"),
        "AbortRollout": rpb.AbortRolloutRequest(rollout_id="r1"),
        "PromoteRollout": rpb.PromoteRolloutRequest(rollout_id="r1"),
        "SetShadow": rpb.SetShadowRequest(model=MODEL, version=2, percent=50),
        "StartExperiment": rpb.StartExperimentRequest(model=MODEL, arms=arms),
        "StopExperiment": rpb.StopExperimentRequest(experiment_id="e1"),
    }[method]


def _past_auth(method: str) -> Message:
    """A request of each admin RPC that auth lets through and the service then refuses."""
    return {
        "StartRollout": rpb.StartRolloutRequest(model=MODEL, candidate_version=0),
        "PauseRollout": rpb.PauseRolloutRequest(rollout_id="nope"),
        "ResumeRollout": rpb.ResumeRolloutRequest(rollout_id="nope"),
        "AbortRollout": rpb.AbortRolloutRequest(rollout_id="nope"),
        "PromoteRollout": rpb.PromoteRolloutRequest(rollout_id="nope"),
        "SetShadow": rpb.SetShadowRequest(model=MODEL, version=-1),
        "StartExperiment": rpb.StartExperimentRequest(model=""),
        "StopExperiment": rpb.StopExperimentRequest(experiment_id="nope"),
    }[method]


@pytest.mark.parametrize("method_name", ADMIN_RPCS)
def test_admin_rpcs_need_the_admin_role(plain: Plain, method_name: str) -> None:
    method = ROLLOUT.methods_by_name[method_name]
    request = _valid(method_name)
    stub = rpb_grpc.RolloutServiceStub(plain.channel)

    def rollouts() -> set[str]:
        listed = stub.ListRollouts(rpb.ListRolloutsRequest(model=MODEL), metadata=READER, timeout=10)
        return {r.id for r in listed.rollouts}

    before = rollouts()  # other tests of the module (the fuzz) may have left rollouts behind
    for metadata, expected in (
        (READER, grpc.StatusCode.PERMISSION_DENIED),
        ((), grpc.StatusCode.UNAUTHENTICATED),
        (NEAR_MISS, grpc.StatusCode.UNAUTHENTICATED),
        (bearer_metadata(TOKENS["gw-admin"][:-1]), grpc.StatusCode.UNAUTHENTICATED),
        ((("authorization", TOKENS["gw-admin"]),), grpc.StatusCode.UNAUTHENTICATED),  # no scheme
    ):
        outcome = call(plain.channel, ROLLOUT, method, request, metadata)
        assert outcome.code == expected, (metadata, outcome)
        assert outcome.details
    # the admin token gets past auth: the service itself answers (and refuses the bad request)
    outcome = call(plain.channel, ROLLOUT, method, _past_auth(method_name), ADMIN)
    assert outcome.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND), outcome
    # nothing changed: none of these calls started a rollout
    assert rollouts() == before


@pytest.mark.parametrize(
    ("service", "method_name", "request_message"),
    [
        (SCORING, "Score", spb.ScoreRequest(model=MODEL)),
        (SCORING, "ScoreBatch", spb.ScoreBatchRequest(model=MODEL)),
        (OIP, "ModelInfer", oip.ModelInferRequest(model_name=MODEL)),
        (OIP, "ModelMetadata", oip.ModelMetadataRequest(name=MODEL)),
        (OIP, "ModelReady", oip.ModelReadyRequest(name=MODEL)),
        (ROLLOUT, "GetRollout", rpb.GetRolloutRequest(model=MODEL)),
        (ROLLOUT, "ListRollouts", rpb.ListRolloutsRequest()),
        (ROLLOUT, "GetExperiment", rpb.GetExperimentRequest(model=MODEL)),
    ],
)
def test_reads_need_a_token(plain: Plain, service: Any, method_name: str, request_message: Message) -> None:
    method = service.methods_by_name[method_name]
    for metadata in ((), NEAR_MISS):
        outcome = call(plain.channel, service, method, request_message, metadata)
        assert outcome.code == grpc.StatusCode.UNAUTHENTICATED, (method_name, outcome)
    # the reader token passes (whatever the service then answers)
    outcome = call(plain.channel, service, method, request_message, READER)
    assert outcome.code not in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED), outcome


# ----- fuzzing -----------------------------------------------------------------------------------

FEATURES = synthetic_records(SMALL_SCHEMA, 1, seed=5)[0]


def _features() -> dict[str, types_pb2.FeatureValue]:
    out = {}
    for k, v in FEATURES.items():
        if v is None:
            out[k] = types_pb2.FeatureValue()
        elif isinstance(v, str):
            out[k] = types_pb2.FeatureValue(category=v)
        else:
            out[k] = types_pb2.FeatureValue(number=float(v))
    return out


def _application() -> spb.Application:
    return spb.Application(entity_id="e-1", features=_features(), request_id="r-1")


def _infer() -> oip.ModelInferRequest:
    inputs = []
    for spec in SMALL_SCHEMA.features:
        v = FEATURES[spec.name]
        if spec.kind == "categorical":
            contents = oip.InferTensorContents(bytes_contents=[str(v).encode()])
            dt = "BYTES"
        else:
            contents = oip.InferTensorContents(fp64_contents=[float("nan") if v is None else float(v)])
            dt = "FP64"
        inputs.append(
            oip.ModelInferRequest.InferInputTensor(name=spec.name, datatype=dt, shape=[1], contents=contents)
        )
    return oip.ModelInferRequest(model_name=MODEL, id="i-1", inputs=inputs)


HINTS: dict[str, st.SearchStrategy[Any]] = {
    "model": st.sampled_from([MODEL, "sec-absent"]),
    "name": st.sampled_from([MODEL, *(f.name for f in SMALL_SCHEMA.features), "entity_id"]),
    "model_name": st.just(MODEL),
    "version": st.sampled_from([0, 1, 2, 3]),
    "ModelMetadataRequest.version": st.sampled_from(["", "1", "2", "-1", "x"]),
    "ModelReadyRequest.version": st.sampled_from(["", "1", "2", "-1"]),
    "candidate_version": st.sampled_from([1, 2, 3]),
    "features.key": st.sampled_from([f.name for f in SMALL_SCHEMA.features]),
    "datatype": st.sampled_from(["FP32", "FP64", "BYTES", "INT64", ""]),
    "shape": st.sampled_from([-1, 0, 1, 2, 1001, -(2**63), 2**63 - 1]),  # per item (repeated)
    "steps": st.sampled_from([-1.0, 0.0, 1.0, 50.0, 100.0, 101.0, float("nan")]),
    "weight": st.sampled_from([0.0, 50.0, 100.0, -1.0, float("inf")]),
    "percent": st.sampled_from([0.0, 10.0, 100.0, 1000.0, float("nan")]),
    "top_k": st.sampled_from([-1, 0, 3, 45, 46]),
}
VALID: dict[str, Message] = {
    "Score": spb.ScoreRequest(model=MODEL, application=_application(), explain=True, top_k=3),
    "ScoreBatch": spb.ScoreBatchRequest(model=MODEL, applications=[_application(), _application()]),
    "ModelInfer": _infer(),
    "ModelMetadata": oip.ModelMetadataRequest(name=MODEL, version="2"),
    "ModelReady": oip.ModelReadyRequest(name=MODEL),
    "GetRollout": rpb.GetRolloutRequest(model=MODEL),
    "ListRollouts": rpb.ListRolloutsRequest(model=MODEL, page_size=5),
    "GetExperiment": rpb.GetExperimentRequest(model=MODEL),
    **{name: _valid(name) for name in ADMIN_RPCS},
}
FUZZED = [
    (SCORING, "Score"),
    (SCORING, "ScoreBatch"),
    (OIP, "ModelInfer"),
    (OIP, "ModelMetadata"),
    (OIP, "ModelReady"),
    *((ROLLOUT, m.name) for m in ROLLOUT.methods),
]


@pytest.mark.parametrize(("service", "method_name"), FUZZED, ids=[m for _, m in FUZZED])
def test_public_rpc_refuses_hostile_requests_clearly(plain: Plain, service: Any, method_name: str) -> None:
    method = service.methods_by_name[method_name]

    @fuzz_settings(EXAMPLES)
    @given(requests_for(method, HINTS, VALID.get(method_name)))
    def run(request: Any) -> None:
        outcome = call(plain.channel, service, method, request, ADMIN)
        check_outcome(method, request, outcome, plain.gateway)

    run()
    assert plain.gateway.health() == health_pb2.HealthCheckResponse.SERVING


# Inputs that once got UNKNOWN from the gateway (found by the fuzzer), with the field the refusal
# must name now.
REGRESSIONS: list[tuple[Any, str, Message, str]] = [
    (
        ROLLOUT,
        "StartRollout",
        rpb.StartRolloutRequest(
            model=MODEL, candidate_version=2, analysis_interval=Duration(seconds=-(2**63))
        ),
        "analysis_interval",
    ),
    (
        ROLLOUT,
        "StartRollout",
        rpb.StartRolloutRequest(
            model=MODEL, candidate_version=2, analysis_interval=Duration(seconds=2**63 - 1)
        ),
        "analysis_interval",
    ),
    (OIP, "ModelMetadata", oip.ModelMetadataRequest(name=MODEL, version="9" * 40), "version"),
    (
        OIP,
        "ModelReady",
        oip.ModelReadyRequest(name=MODEL, version="\u00b2"),
        "version",
    ),  # a digit to isdigit()
]


@pytest.mark.parametrize(
    ("service", "method_name", "request_message", "field"), REGRESSIONS, ids=[r[1] for r in REGRESSIONS]
)
def test_fuzzer_findings_are_refused_naming_the_field(
    plain: Plain, service: Any, method_name: str, request_message: Message, field: str
) -> None:
    outcome = call(plain.channel, service, service.methods_by_name[method_name], request_message, ADMIN)
    assert outcome.code == grpc.StatusCode.INVALID_ARGUMENT, outcome
    assert outcome.details.startswith(field), outcome


def test_fuzzed_gateway_logged_no_server_error(plain: Plain) -> None:
    assert_clean_logs(plain.gateway)


# ----- secrets in logs (last: the logs of everything above) ----------------------------------------


def test_no_token_in_any_log(plain: Plain, tmp_path: Path) -> None:
    # a malformed token variable is refused at start-up without echoing it
    bad = f"{TOKENS['near-miss']}:admin-without-subject"
    with pytest.raises(ServiceExitedError) as err:
        start_service(
            "gateway",
            tmp_path,
            env={**_gateway_env(tmp_path, plain.registry.target), "FINPREDICT_GATEWAY_TOKENS": bad},
        )
    assert "FINPREDICT_GATEWAY_TOKENS" in str(err.value)
    assert TOKENS["near-miss"] not in str(err.value)
    # this test presents every kind of token itself (refused, reader, admin), whatever ran before it
    get = ROLLOUT.methods_by_name["ListRollouts"]
    for metadata in ((), NEAR_MISS, READER, ADMIN):
        call(plain.channel, ROLLOUT, get, rpb.ListRolloutsRequest(), metadata)
    assert call(plain.channel, ROLLOUT, get, rpb.ListRolloutsRequest(), NEAR_MISS).code == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    # the refused and the served calls were logged (DEBUG on); log lines are written asynchronously
    wait_for(
        lambda: "unauthenticated call" in (log := plain.gateway.logs()) and "rpc done" in log,
        30,
        "the gateway to log the calls above",
    )
    logs = sorted(p for root in (plain.work.parent, tmp_path) for p in root.rglob("*.log") if p.is_file())
    for path in logs:
        text = path.read_text(errors="replace")
        for name, token in TOKENS.items():
            assert token not in text, f"{name} token in {path}"
