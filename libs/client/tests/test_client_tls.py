"""TLS is one argument away: the client verifies the gateway's certificate against a CA file."""

from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from finpredict.client import NO_RETRY, UnavailableError


def _pki(tmp: Path) -> tuple[Path, bytes, bytes]:
    """A CA file, and a server certificate (for 127.0.0.1) and key signed by it."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "client-sdk test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    ca_file = tmp / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return ca_file, cert.public_bytes(serialization.Encoding.PEM), key_pem


async def test_tls_gateway_is_reached_with_the_ca_and_refused_in_plaintext(
    tmp_path: Path, make_client: Any, gateway: Any, gateway_factory: Any
) -> None:
    ca_file, cert, key = _pki(tmp_path)
    # A second double of the same class as the plaintext one, serving TLS.
    gw = await gateway_factory(type(gateway.fake)(token="t"), grpc.ssl_server_credentials([(key, cert)]))
    tls = make_client(gw.target, token="t", tls_ca_file=ca_file, retry=NO_RETRY)
    result = await tls.score("m", "e1", {"x": 2})
    assert result.score == pytest.approx(0.2)
    plain = make_client(gw.target, token="t", retry=NO_RETRY, timeout=5.0)
    with pytest.raises(UnavailableError):
        await plain.score("m", "e1", {"x": 2})
    assert len(gw.fake.calls) == 1  # the plaintext call never reached the service


def test_client_certificate_needs_a_ca(tmp_path: Path) -> None:
    from finpredict.client import ScoringClient

    (tmp_path / "c.pem").write_text("x")
    with pytest.raises(ValueError, match="must be given together"):
        ScoringClient("127.0.0.1:1", tls_cert_file=tmp_path / "c.pem")
    with pytest.raises(ValueError, match="needs tls_ca_file"):
        ScoringClient("127.0.0.1:1", tls_cert_file=tmp_path / "c.pem", tls_key_file=tmp_path / "c.pem")
