"""TLS is one setting away: server TLS, mutual TLS, and refusals of plaintext or foreign certs,
for every service that takes its TLS settings from the shared skeleton (monitor, registry)."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.common.auth import bearer_metadata
from finpredict.common.channel import create_channel
from finpredict.testkit.pki import Pem, issue, pem
from finpredict.testkit.process import ServiceProcess, start_service, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | Pem]:
    d = tmp_path_factory.mktemp("pki")
    ca = issue("finpredict test CA", None)
    other_ca = issue("someone else's CA", None)
    files: dict[str, Path | Pem] = {}
    for label, (cert, key) in {"ca": pem(ca), "server": pem(issue("127.0.0.1", ca, server=True))}.items():
        (d / f"{label}.crt").write_bytes(cert)
        (d / f"{label}.key").write_bytes(key)
        files[label + "_crt"] = d / f"{label}.crt"
        files[label + "_key"] = d / f"{label}.key"
    files["client"] = pem(issue("gateway", ca))
    files["foreign_client"] = pem(issue("intruder", other_ca))
    return files


def _check(target: str, creds: grpc.ChannelCredentials | None) -> int:
    channel = grpc.secure_channel(target, creds) if creds else grpc.insecure_channel(target)
    with channel:
        return int(
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3).status
        )


def _creds(ca: Path, client: Pem | None = None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=ca.read_bytes(),
        private_key=client[1] if client else None,
        certificate_chain=client[0] if client else None,
    )


SERVICES = ["monitor", "registry"]


def _start(
    service: str, tmp_path: Path, tls: dict[str, str], creds: grpc.ChannelCredentials
) -> ServiceProcess:
    prefix = f"FINPREDICT_{service.upper()}_"
    env = {f"{prefix}{key}": value for key, value in {"DATA_DIR": str(tmp_path / "data"), **tls}.items()}
    proc = start_service(service, tmp_path, env=env, wait_healthy=False)
    wait_for(lambda: _check(proc.target, creds) == health_pb2.HealthCheckResponse.SERVING, 30, "TLS health")
    return proc


@pytest.mark.parametrize("service", SERVICES)
def test_tls_serves_tls_clients_and_refuses_plaintext(
    service: str, tmp_path: Path, pki: dict[str, Path | Pem]
) -> None:
    ca = pki["ca_crt"]
    assert isinstance(ca, Path)
    tls = {"TLS_CERT_FILE": str(pki["server_crt"]), "TLS_KEY_FILE": str(pki["server_key"])}
    proc = _start(service, tmp_path, tls, _creds(ca))
    try:
        assert proc.ready["tls"] is True
        with pytest.raises(grpc.RpcError) as err:
            _check(proc.target, None)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert proc.stop() == 0, proc.logs()


@pytest.mark.parametrize("service", SERVICES)
def test_mutual_tls_refuses_missing_and_foreign_client_certs(
    service: str, tmp_path: Path, pki: dict[str, Path | Pem]
) -> None:
    ca, client, foreign = pki["ca_crt"], pki["client"], pki["foreign_client"]
    assert isinstance(ca, Path)
    assert isinstance(client, tuple)
    assert isinstance(foreign, tuple)
    tls = {
        "TLS_CERT_FILE": str(pki["server_crt"]),
        "TLS_KEY_FILE": str(pki["server_key"]),
        "TLS_CLIENT_CA_FILE": str(ca),
    }
    proc = _start(service, tmp_path, tls, _creds(ca, client))
    try:
        for refused in (None, _creds(ca), _creds(ca, foreign)):
            with pytest.raises(grpc.RpcError) as err:
                _check(proc.target, refused)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        assert proc.stop() == 0, proc.logs()


async def test_services_reach_an_mtls_registry_by_configuration(
    tmp_path: Path, pki: dict[str, Path | Pem]
) -> None:
    """The outgoing channel every service builds (``create_channel`` with its TLS settings) calls a
    registry that requires mutual TLS and a token: both layers are enforced, each on its own."""
    ca, client, foreign = pki["ca_crt"], pki["client"], pki["foreign_client"]
    assert isinstance(ca, Path)
    assert isinstance(client, tuple)
    assert isinstance(foreign, tuple)
    files = {}
    for label, (cert, key) in {"client": client, "foreign": foreign}.items():
        files[label] = (tmp_path / f"{label}.crt", tmp_path / f"{label}.key")
        files[label][0].write_bytes(cert)
        files[label][1].write_bytes(key)
    token = "mtls-reader-token-0123456789"
    tls = {
        "TLS_CERT_FILE": str(pki["server_crt"]),
        "TLS_KEY_FILE": str(pki["server_key"]),
        "TLS_CLIENT_CA_FILE": str(ca),
        "TOKENS": f"{token}=model-server:reader",
    }
    proc = _start("registry", tmp_path, tls, _creds(ca, client))
    try:
        for label, md, expected in (
            ("client", bearer_metadata(token), grpc.StatusCode.OK),
            ("client", (), grpc.StatusCode.UNAUTHENTICATED),
            ("foreign", bearer_metadata(token), grpc.StatusCode.UNAVAILABLE),
        ):
            cert, key = files[label]
            channel = create_channel(proc.target, tls_ca_file=ca, tls_cert_file=cert, tls_key_file=key)
            try:
                stub = registry_pb2_grpc.RegistryServiceStub(channel)
                await stub.ListModels(registry_pb2.ListModelsRequest(), metadata=md, timeout=10)
                code = grpc.StatusCode.OK
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
            finally:
                await channel.close()
            assert code == expected, (label, md, code)
    finally:
        assert proc.stop() == 0, proc.logs()
