"""The monitor's settings: its own prefix, its default ports, fail-fast errors."""

from __future__ import annotations

import pytest

from finpredict.common.config import ConfigError, load_settings
from finpredict.monitor.config import MonitorSettings


def test_defaults_are_the_documented_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PORT", "METRICS_PORT", "HOST"):
        monkeypatch.delenv(f"FINPREDICT_MONITOR_{var}", raising=False)
    settings = load_settings(MonitorSettings)
    assert (settings.host, settings.port) == ("127.0.0.1", 50054)


def test_reads_its_own_prefix_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINPREDICT_GATEWAY_PORT", "1111")
    monkeypatch.setenv("FINPREDICT_MONITOR_PORT", "2222")
    assert load_settings(MonitorSettings).port == 2222


def test_bad_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FINPREDICT_MONITOR_METRICS_PORT", "-7")
    with pytest.raises(ConfigError, match="FINPREDICT_MONITOR_METRICS_PORT='-7'"):
        load_settings(MonitorSettings)
