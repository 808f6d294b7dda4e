"""TLS is one setting away for the console too: it serves HTTPS with its certificate (the session
cookie then ``Secure``), refuses plaintext, and reads a registry that serves TLS only through the
CA it is given."""

from __future__ import annotations

import http.client
import ssl
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from finpredict.testkit.cli import ADMIN_TOKEN, GATEWAY_TOKENS
from finpredict.testkit.console import CONSOLE_REGISTRY_READER, REGISTRY_SPEC, start_console
from finpredict.testkit.pki import issue, pem
from finpredict.testkit.process import ServiceProcess, start_service, wait_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("pki")
    ca = issue("finpredict test CA", None)
    files = {}
    for label, (cert, key) in {"ca": pem(ca), "server": pem(issue("127.0.0.1", ca, server=True))}.items():
        (d / f"{label}.crt").write_bytes(cert)
        (d / f"{label}.key").write_bytes(key)
        files[f"{label}_crt"], files[f"{label}_key"] = d / f"{label}.crt", d / f"{label}.key"
    return files


@pytest.fixture(scope="module")
def console(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Path]) -> Iterator[ServiceProcess]:
    tmp = tmp_path_factory.mktemp("tls")
    registry = start_service(
        "registry",
        tmp / "registry",
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "registry" / "data"),
            "FINPREDICT_REGISTRY_TOKENS": REGISTRY_SPEC,
            "FINPREDICT_REGISTRY_TLS_CERT_FILE": str(pki["server_crt"]),
            "FINPREDICT_REGISTRY_TLS_KEY_FILE": str(pki["server_key"]),
        },
        wait_healthy=False,  # health over TLS: the console's first page proves it
    )
    try:
        proc = start_console(
            tmp / "console",
            registry.target,
            "127.0.0.1:1",
            "127.0.0.1:1",
            FINPREDICT_CONSOLE_TLS_CERT_FILE=str(pki["server_crt"]),
            FINPREDICT_CONSOLE_TLS_KEY_FILE=str(pki["server_key"]),
            FINPREDICT_CONSOLE_TLS_CA_FILE=str(pki["ca_crt"]),
            FINPREDICT_CONSOLE_TOKENS=GATEWAY_TOKENS,
            FINPREDICT_CONSOLE_REGISTRY_TOKEN=CONSOLE_REGISTRY_READER,
            https_ca=pki["ca_crt"],
        )
        yield proc
        proc.stop()
    finally:
        registry.stop()


def _https(proc: ServiceProcess, ca: Path) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(
        "127.0.0.1", proc.port, context=ssl.create_default_context(cafile=str(ca)), timeout=10
    )


def test_pages_are_served_over_https_from_a_tls_registry(
    console: ServiceProcess, pki: dict[str, Path]
) -> None:
    def models_page() -> str | None:
        conn = _https(console, pki["ca_crt"])
        try:
            conn.request("GET", "/")
            body = conn.getresponse().read().decode()
        finally:
            conn.close()
        return body if "No models in the registry yet." in body else None

    body = wait_for(models_page, 30, "the models page over TLS")
    assert 'class="problem"' not in body  # the registry answered through TLS


def _plaintext_get(port: int) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    finally:
        conn.close()


def test_plaintext_is_refused(console: ServiceProcess) -> None:
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        _plaintext_get(console.port)


def test_the_session_cookie_is_secure_over_tls(console: ServiceProcess, pki: dict[str, Path]) -> None:
    conn = _https(console, pki["ca_crt"])
    origin = f"https://127.0.0.1:{console.port}"
    conn.request(
        "POST",
        "/login",
        body=urllib.parse.urlencode({"token": ADMIN_TOKEN, "next": "/"}),
        headers={"Content-Type": "application/x-www-form-urlencoded", "Origin": origin},
    )
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 303
    cookie = resp.getheader("Set-Cookie") or ""
    assert "Secure" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=Strict" in cookie
    assert ADMIN_TOKEN not in cookie
