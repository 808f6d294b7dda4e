"""The Prometheus and Alertmanager configuration in infra/ is valid and every alert is tested."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

INFRA = Path(__file__).resolve().parents[2] / "infra"
PROMETHEUS = INFRA / "prometheus"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.test.yml"))


def _run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def test_promtool_accepts_config_and_rules() -> None:
    assert RULE_FILES
    result = _run("promtool", "check", "config", str(PROMETHEUS / "prometheus.yml"))
    assert result.returncode == 0, result.stdout + result.stderr
    result = _run("promtool", "check", "rules", *map(str, RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_rule_unit_tests_pass(test_file: Path) -> None:
    result = _run("promtool", "test", "rules", str(test_file))
    assert result.returncode == 0, result.stdout + result.stderr


def _alert_names() -> set[str]:
    names = set()
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            names.update(rule["alert"] for rule in group["rules"] if "alert" in rule)
    return names


# Labels that tell the input series of one test case apart (which service, model, variant ...).
_CASE_KEYS = ("service", "job", "model", "version", "variant", "feature")


def test_every_alert_has_a_firing_and_a_non_firing_case() -> None:
    """A case counts as "non-firing" when it expects no alert at all, or when it expects the
    alert for some of its input series only (promtool compares the exact set of alerts)."""
    fires: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                expected = check.get("exp_alerts") or []
                if not expected:
                    silent.add(check["alertname"])
                    continue
                fires.add(check["alertname"])
                for key in _CASE_KEYS:
                    fired_for = {a["exp_labels"].get(key) for a in expected}
                    if None in fired_for:  # the alert aggregates this label away
                        continue
                    in_series = {
                        m
                        for s in case["input_series"]
                        for m in re.findall(rf'[{{,]\s*{key}="([^"]+)"', s["series"])
                    }
                    if in_series - {str(v) for v in fired_for}:  # some input series must not fire
                        silent.add(check["alertname"])
    alerts = _alert_names()
    assert alerts, "no alert rules found"
    assert alerts - fires == set(), f"alerts without a firing test case: {sorted(alerts - fires)}"
    assert alerts - silent == set(), f"alerts without a non-firing test case: {sorted(alerts - silent)}"


@pytest.mark.parametrize("config", sorted((INFRA / "alertmanager").glob("*.yml")), ids=lambda p: p.name)
def test_amtool_accepts_alertmanager_config(config: Path) -> None:
    amtool = shutil.which("amtool")
    assert amtool, "amtool is installed by `task setup` (prometheus-alertmanager)"
    result = _run(amtool, "check-config", str(config))
    assert result.returncode == 0, result.stdout + result.stderr
