"""``finpredict up | down | status`` and the launcher's bookkeeping on a run dir, without starting
anything: status and down of an empty run dir, stale pid files, the local tokens."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from finpredict.cli.__main__ import build_app
from finpredict.stack.components import DEFAULT_PROFILE, PROFILES
from finpredict.stack.launcher import Stack


def run(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"FINPREDICT_RUN_DIR": str(tmp_path / "run"), "FINPREDICT_PROJECT_ROOT": str(tmp_path)}
    result = CliRunner().invoke(build_app(), list(args), env=env)
    return result.exit_code, result.output


def test_status_of_an_empty_run_dir(tmp_path: Path) -> None:
    code, out = run(tmp_path, "status")
    assert code == 0, out
    components = PROFILES[DEFAULT_PROFILE]
    assert [line.split() for line in out.splitlines()] == [[c, "not", "running"] for c in components]
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


def test_a_client_gets_a_gateway_writer_token_for_outcomes(tmp_path: Path) -> None:
    """Outcomes go through the gateway's RecordOutcomes, which needs its writer role: a local stack
    generates such a token (the operator's admin token aside, the only one), also into an older
    secrets file."""
    from finpredict.common.auth import WRITER, parse_tokens

    tokens = Stack(run_dir=tmp_path).secrets()
    accepted = parse_tokens(tokens["FINPREDICT_GATEWAY_TOKENS"])
    writers = {t for t, p in accepted.items() if WRITER in p.roles}
    (outcomes,) = parse_tokens(f"{tokens['FINPREDICT_OUTCOMES_TOKEN']}=x:reader")
    assert writers == {outcomes}
    assert accepted[outcomes].subject == "outcomes"
    older = {k: v for k, v in tokens.items() if "OUTCOMES" not in k and k != "FINPREDICT_GATEWAY_TOKENS"}
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in older.items()))
    upgraded = Stack(run_dir=tmp_path / "older").secrets()
    assert upgraded["FINPREDICT_CLIENT_TOKEN"] == tokens["FINPREDICT_CLIENT_TOKEN"]
    assert f"{upgraded['FINPREDICT_OUTCOMES_TOKEN']}=outcomes:writer" in upgraded["FINPREDICT_GATEWAY_TOKENS"]


def test_the_monitor_gets_tokens_and_the_gateway_a_monitor_writer_token(tmp_path: Path) -> None:
    """The monitor refuses calls without a token: a local stack generates what it accepts, gives
    the gateway a writer token for it and the monitor a registry reader token for its profiles."""
    from finpredict.common.auth import ADMIN, READER, WRITER, parse_tokens

    tokens = Stack(run_dir=tmp_path).secrets()
    accepted = {p.subject: p.roles for p in parse_tokens(tokens["FINPREDICT_MONITOR_TOKENS"]).values()}
    assert accepted == {
        "operator": frozenset({ADMIN}),
        "gateway": frozenset({WRITER}),
        "services": frozenset({READER}),
    }
    gateway_writer = parse_tokens(f"{tokens['FINPREDICT_GATEWAY_MONITOR_TOKEN']}=x:reader")
    assert set(gateway_writer) <= set(parse_tokens(tokens["FINPREDICT_MONITOR_TOKENS"]))
    registry = parse_tokens(tokens["FINPREDICT_REGISTRY_TOKENS"])
    (monitor_on_registry,) = parse_tokens(f"{tokens['FINPREDICT_MONITOR_REGISTRY_TOKEN']}=x:reader")
    assert registry[monitor_on_registry].roles == frozenset({READER})
    # an older secrets file without the monitor's tokens gets them, keeping the others
    older = {k: v for k, v in tokens.items() if "MONITOR" not in k}
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in older.items()))
    upgraded = Stack(run_dir=tmp_path / "older").secrets()
    assert upgraded["FINPREDICT_TOKEN"] == tokens["FINPREDICT_TOKEN"]
    assert "FINPREDICT_MONITOR_TOKENS" in upgraded


def test_the_monitor_fetches_profiles_from_the_stacks_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stack = Stack(run_dir=tmp_path)
    monkeypatch.setattr(stack, "targets", lambda: {"registry": "127.0.0.1:50052"})  # a running registry
    env = stack.service_env("monitor")
    assert env["FINPREDICT_MONITOR_REGISTRY_TARGET"] == "127.0.0.1:50052"
    assert "FINPREDICT_MONITOR_PROFILES_DIR" not in env  # the cache under its data dir


def test_the_console_gets_a_session_key_kept_across_runs(tmp_path: Path) -> None:
    """The console seals sign-ins into their cookies with a key of the local secrets: generated
    once (also into an older secrets file), the same for every console the stack starts."""
    from finpredict.console.auth import KEY_BYTES, parse_keys

    tokens = Stack(run_dir=tmp_path).secrets()
    key = tokens["FINPREDICT_CONSOLE_SESSION_KEYS"]
    assert [len(k) for k in parse_keys(key)] == [KEY_BYTES]
    assert Stack(run_dir=tmp_path).service_env("console")["FINPREDICT_CONSOLE_SESSION_KEYS"] == key
    older = {k: v for k, v in tokens.items() if "SESSION" not in k}
    (tmp_path / "older").mkdir()
    (tmp_path / "older" / "secrets.env").write_text("".join(f"{k}={v}\n" for k, v in older.items()))
    upgraded = Stack(run_dir=tmp_path / "older").secrets()
    assert upgraded["FINPREDICT_TOKEN"] == tokens["FINPREDICT_TOKEN"]
    assert len(parse_keys(upgraded["FINPREDICT_CONSOLE_SESSION_KEYS"])) == 1
    assert upgraded["FINPREDICT_CONSOLE_SESSION_KEYS"] != key


@pytest.mark.parametrize("ephemeral", [False, True])
def test_the_registry_gets_its_data_dir_and_ports(tmp_path: Path, ephemeral: bool) -> None:
    env = Stack(run_dir=tmp_path, data_dir=tmp_path / "data", ephemeral_ports=ephemeral).service_env(
        "registry"
    )
    assert env["FINPREDICT_REGISTRY_DATA_DIR"] == str(tmp_path / "data" / "registry")
    assert env["FINPREDICT_REGISTRY_HOST"] == "127.0.0.1"
    assert ("FINPREDICT_REGISTRY_PORT" in env) is ephemeral


def test_the_cluster_profile_is_listed_and_an_unknown_profile_refused(tmp_path: Path) -> None:
    code, out = run(tmp_path, "status", "--profile", "cluster")
    assert code == 0, out
    assert [line.split()[0] for line in out.splitlines()] == PROFILES["cluster"]
    code, out = run(tmp_path, "up", "--profile", "nope")
    assert code == 2
    assert "nope" in out


def test_the_cluster_profile_wires_the_services_to_its_infrastructure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Services started while the stack's PostgreSQL, S3 server and Ray head run use them."""
    registry_db, gateway_db = (
        f"postgresql+psycopg://postgres@127.0.0.1:5/{db}" for db in ("registry", "gateway")
    )
    infos = {
        "postgres": {"port": 5, "databases": {"registry": registry_db, "gateway": gateway_db}},
        "s3": {"port": 6, "url": "http://127.0.0.1:6"},
        "ray-head": {"port": 7, "temp_dir": str(tmp_path / "ray")},
    }
    stack = Stack(run_dir=tmp_path, profile="cluster")
    monkeypatch.setattr(stack, "ready", infos.get)
    registry = stack.service_env("registry")
    assert registry["FINPREDICT_REGISTRY_DATABASE_URL"] == registry_db
    assert registry["FINPREDICT_REGISTRY_ARTIFACT_STORE"] == "s3://finpredict-artifacts/registry"
    assert registry["FINPREDICT_REGISTRY_S3_ENDPOINT_URL"] == "http://127.0.0.1:6"
    assert registry["AWS_ACCESS_KEY_ID"]
    assert stack.service_env("model-server")["FINPREDICT_MODEL_SERVER_RAY_ADDRESS"] == "127.0.0.1:7"
    for name in ("gateway", "gateway-2"):
        env = stack.service_env(name)
        assert env["FINPREDICT_GATEWAY_DATABASE_URL"] == gateway_db
        assert env["FINPREDICT_GATEWAY_REPLICA_ID"] == name
        assert env["FINPREDICT_GATEWAY_DATA_DIR"] == str(tmp_path / name)
    second = stack.service_env("gateway-2")
    assert (second["FINPREDICT_GATEWAY_PORT"], second["FINPREDICT_GATEWAY_METRICS_PORT"]) == ("0", "0")
    assert "FINPREDICT_GATEWAY_PORT" not in stack.service_env("gateway")  # the documented port
    remote = stack.dvc_remote()
    assert remote is not None
    assert remote[0].startswith("s3://finpredict-dvc/")
    assert remote[1]["endpointurl"] == "http://127.0.0.1:6"
