"""Settings are typed, read once, and bad values name the environment variable."""

from __future__ import annotations

import pytest
from pydantic_settings import SettingsConfigDict

from finpredict.common.config import ConfigError, ServiceSettings, env_var_name, load_settings


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
