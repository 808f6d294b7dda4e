"""``finpredict up | down | status`` and the launcher's bookkeeping on a run dir, without starting
anything: status and down of an empty run dir, stale pid files, the local tokens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finpredict.cli.__main__ import build_app
from finpredict.stack.components import COMPONENTS
from finpredict.stack.launcher import Stack


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"FINPREDICT_RUN_DIR": str(tmp_path / "run"), "FINPREDICT_PROJECT_ROOT": str(tmp_path)}
    result = CliRunner().invoke(build_app(), list(args), env=env)
    return result.exit_code, result.output


def test_status_of_an_empty_run_dir(tmp_path: Path) -> None:
    code, out = run(tmp_path, "status")
    assert code == 0, out
    assert [line.split() for line in out.splitlines()] == [[c, "not", "running"] for c in COMPONENTS]
    assert not (tmp_path / "run").exists()  # status writes nothing


def test_down_of_an_empty_run_dir_stops_nothing(tmp_path: Path) -> None:
    code, out = run(tmp_path, "down", "--only", "gateway,registry")
    assert code == 0, out
    assert [line.split() for line in out.splitlines()] == [
        ["gateway", "not", "running"],
        ["registry", "not", "running"],
    ]


def test_an_unknown_component_is_a_usage_error(tmp_path: Path) -> None:
    code, out = run(tmp_path, "status", "--only", "registry,nope")
    assert code == 2
    assert "nope" in out


def test_a_stale_pid_file_is_not_a_running_component(tmp_path: Path) -> None:
    stack = Stack(run_dir=tmp_path)
    pid_file, ready_file, _ = stack.paths("registry")
    pid_file.write_text(str(os.getpid()))  # alive, but not a registry: never ours to stop
    ready_file.write_text('{"port": 1, "metrics_port": 2}')
    assert stack.running_pid("registry") is None
    assert stack.targets() == {}
    assert stack.down(["registry"]) == {"registry": False}
    assert not pid_file.exists()
    assert not ready_file.exists()


def test_the_local_tokens_are_private_and_kept(tmp_path: Path) -> None:
    first = Stack(run_dir=tmp_path).secrets()
    secrets_file = tmp_path / "secrets.env"
    assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    assert Stack(run_dir=tmp_path).secrets() == first  # a second stack reads the same tokens
    admin, client = first["FINPREDICT_TOKEN"], first["FINPREDICT_CLIENT_TOKEN"]
    assert f"{admin}=operator:admin" in first["FINPREDICT_GATEWAY_TOKENS"]
    assert f"{client}=client:reader" in first["FINPREDICT_GATEWAY_TOKENS"]
    assert f"{admin}=operator:admin" in first["FINPREDICT_REGISTRY_TOKENS"]


@pytest.mark.parametrize("ephemeral", [False, True])
def test_the_registry_gets_its_data_dir_and_ports(tmp_path: Path, ephemeral: bool) -> None:
    env = Stack(run_dir=tmp_path, data_dir=tmp_path / "data", ephemeral_ports=ephemeral).service_env(
        "registry"
    )
    assert env["FINPREDICT_REGISTRY_DATA_DIR"] == str(tmp_path / "data" / "registry")
    assert env["FINPREDICT_REGISTRY_HOST"] == "127.0.0.1"
    assert ("FINPREDICT_REGISTRY_PORT" in env) is ephemeral
