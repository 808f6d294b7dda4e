"""A test PKI made on the fly: a CA, server certificates for loopback, client certificates."""

from __future__ import annotations

import datetime as dt
import ipaddress

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

Pem = tuple[bytes, bytes]  # (certificate, private key)
Issued = tuple[x509.Certificate, ec.EllipticCurvePrivateKey]


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def issue(cn: str, issuer: Issued | None, *, server: bool = False) -> Issued:
    """A one-day certificate for ``cn`` signed by ``issuer`` (a self-signed CA when ``None``);
    ``server``: valid for 127.0.0.1 and localhost, for server auth (else client auth)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
    )
    if issuer is None:  # a CA
        builder = builder.issuer_name(_name(cn)).add_extension(
            x509.BasicConstraints(ca=True, path_length=0), True
        )
        return builder.sign(key, hashes.SHA256()), key
    builder = builder.issuer_name(issuer[0].subject)
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False)
    return builder.sign(issuer[1], hashes.SHA256()), key


def pem(pair: Issued) -> Pem:
    """The certificate and its (unencrypted PKCS#8) private key, PEM-encoded."""
    cert, key = pair
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
    )
