"""``finpredict up`` starts the web console on loopback, wired to the registry, gateway and monitor
with the local tokens: it reads with the services' reader token, and the operator's
``FINPREDICT_TOKEN`` signs in as an admin."""

from __future__ import annotations

import http.client
import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest

from finpredict.stack.launcher import Stack
from finpredict.testkit.paths import REPO_ROOT


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = Stack(
        run_dir=tmp_path_factory.mktemp("run"),
        ephemeral_ports=True,
        project_root=REPO_ROOT,
        log=lambda _: None,
    )
    try:
        st.up(only=["registry", "monitor", "gateway", "console"], daemons=False)
        yield st
    finally:
        st.down()


def test_the_console_serves_on_loopback_and_reads_every_service(stack: Stack) -> None:
    url = stack.targets()["console"]
    assert url.startswith("http://127.0.0.1:")
    for path in ("/", "/rollouts", "/alerts"):  # registry, gateway and monitor reads
        with urllib.request.urlopen(url + path, timeout=10) as resp:
            body = resp.read().decode()
        assert resp.status == 200
        assert 'class="problem"' not in body, body


def test_the_operator_token_signs_in_as_an_admin(stack: Stack) -> None:
    netloc = urllib.parse.urlsplit(stack.targets()["console"]).netloc
    conn = http.client.HTTPConnection(netloc, timeout=10)
    try:
        form = urllib.parse.urlencode({"token": stack.secrets()["FINPREDICT_TOKEN"], "next": "/"})
        conn.request(
            "POST", "/login", body=form, headers={"Content-Type": "application/x-www-form-urlencoded"}
        )
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 303
        cookie = (resp.getheader("Set-Cookie") or "").split(";")[0]
        conn.request("GET", "/", headers={"Cookie": cookie})
        page = conn.getresponse().read().decode()
    finally:
        conn.close()
    assert 'data-subject="operator"' in page
    assert '<span class="badge">admin</span>' in page
