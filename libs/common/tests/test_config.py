"""Settings are typed, read once, and bad values name the environment variable."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from finpredict.common import addresses
from finpredict.common.config import (
    ClientSettings,
    ConfigError,
    ServiceSettings,
    env_var_name,
    load_settings,
)


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FINPREDICT_DEMO_", extra="ignore", frozen=True)


@pytest.mark.parametrize(
    ("env", "expected_in_message"),
    [
        ({"FINPREDICT_DEMO_PORT": "abc"}, "FINPREDICT_DEMO_PORT='abc'"),
        ({"FINPREDICT_DEMO_PORT": "70000"}, "FINPREDICT_DEMO_PORT='70000'"),
        ({"FINPREDICT_DEMO_DRAIN_DELAY_S": "-1"}, "FINPREDICT_DEMO_DRAIN_DELAY_S"),
        ({"FINPREDICT_DEMO_LOG_LEVEL": "LOUD"}, "FINPREDICT_DEMO_LOG_LEVEL='LOUD'"),
        ({"FINPREDICT_DEMO_MAX_MESSAGE_BYTES": "0"}, "FINPREDICT_DEMO_MAX_MESSAGE_BYTES"),
        (
            {"FINPREDICT_DEMO_TLS_CERT_FILE": "/tmp/c.pem"},
            "FINPREDICT_DEMO_TLS_KEY_FILE must be set together",
        ),
        ({"FINPREDICT_DEMO_TLS_CLIENT_CA_FILE": "/tmp/ca.pem"}, "mutual TLS requires TLS"),
    ],
)
def test_bad_values_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected_in_message: str
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ConfigError) as err:
        load_settings(DemoSettings)
    assert expected_in_message.replace(" must be set together", "") in str(err.value)


def test_values_are_parsed_once_into_types(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINPREDICT_DEMO_PORT", "6123")
    monkeypatch.setenv("FINPREDICT_DEMO_DRAIN_DELAY_S", "2.5")
    settings = load_settings(DemoSettings)
    assert settings.port == 6123
    assert settings.drain_delay_s == 2.5
    monkeypatch.setenv("FINPREDICT_DEMO_PORT", "7000")
    assert settings.port == 6123, "settings are a snapshot, not a live view"
    with pytest.raises(ValueError, match="frozen"):
        settings.port = 1  # type: ignore[misc]


def test_env_var_name() -> None:
    assert env_var_name(DemoSettings, "shutdown_grace_s") == "FINPREDICT_DEMO_SHUTDOWN_GRACE_S"


class AliasedSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINPREDICT_DEMO_", extra="ignore", frozen=True)

    mode: Literal["a", "b"] = Field(default="a", validation_alias="OTHER_TOOL_MODE")


def test_a_field_with_an_alias_is_read_from_the_alias(monkeypatch: pytest.MonkeyPatch) -> None:
    assert env_var_name(AliasedSettings, "mode") == "OTHER_TOOL_MODE"
    monkeypatch.setenv("OTHER_TOOL_MODE", "c")
    with pytest.raises(ConfigError, match="OTHER_TOOL_MODE='c'"):
        load_settings(AliasedSettings)
    monkeypatch.setenv("OTHER_TOOL_MODE", "b")
    assert load_settings(AliasedSettings).mode == "b"


def test_client_settings_default_to_the_local_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ClientSettings.model_fields:
        monkeypatch.delenv(env_var_name(ClientSettings, name), raising=False)
    monkeypatch.setenv("FINPREDICT_GATEWAY_TARGET", "")  # empty counts as unset
    monkeypatch.setenv("FINPREDICT_REGISTRY_TARGET", " registry:6000 ")
    monkeypatch.setenv("FINPREDICT_TOKEN", "s3cret")
    settings = load_settings(ClientSettings)
    assert settings.gateway_target == addresses.GATEWAY_ADDRESS
    assert settings.monitor_target == addresses.MONITOR_ADDRESS
    assert settings.registry_target == "registry:6000"
    assert settings.token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)
    assert settings.model_fields_set == {"registry_target", "token"}
