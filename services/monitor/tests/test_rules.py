"""The alert rules file: the shipped defaults are the seed's, bad files name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.monitor.rules import RulesError, load_rules, parse_rules


def test_shipped_rules_are_the_seed_defaults() -> None:
    rules = {r.name: r for r in load_rules(DEFAULT_RULES_FILE)}
    psi, kl, acc = rules["feature_psi_3d"], rules["score_kl_1h"], rules["accuracy_1d"]
    assert (psi.kind, psi.window, psi.threshold, psi.consecutive) == ("feature_psi", "daily", 0.25, 3)
    assert (kl.kind, kl.window, kl.threshold) == ("score_kl", "hourly", 0.1)
    assert (acc.kind, acc.window, acc.threshold) == ("accuracy", "daily", 0.80)
    assert all(r.min_samples >= 1 and r.severity in {"warning", "critical"} for r in rules.values())


@pytest.mark.parametrize(
    ("kind", "threshold", "value", "breach"),
    [
        ("feature_psi", 0.25, 0.26, True),
        ("feature_psi", 0.25, 0.25, False),
        ("score_kl", 0.1, 0.5, True),
        ("accuracy", 0.8, 0.79, True),
        ("accuracy", 0.8, 0.8, False),
        ("accuracy", 0.8, float("nan"), False),
    ],
)
def test_breach_direction(kind: str, threshold: float, value: float, breach: bool) -> None:
    (rule,) = parse_rules({"rules": [{"name": "r", "kind": kind, "window": "daily", "threshold": threshold}]})
    assert rule.breaches(value) is breach


GOOD = {"name": "r", "kind": "score_kl", "window": "hourly", "threshold": 0.1}


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        ({"kind": "latency"}, r"rules\[0\] \(r\)\.kind"),
        ({"window": "weekly"}, r"\.window"),
        ({"threshold": "high"}, r"\.threshold"),
        ({"consecutive": 0}, r"\.consecutive"),
        ({"min_samples": -1}, r"\.min_samples"),
        ({"severity": "page"}, r"\.severity"),
        ({"retrain": "yes"}, r"\.retrain"),
        ({"colour": "red"}, r"unknown keys \['colour'\]"),
        ({"name": ""}, r"rules\[0\]\.name"),
    ],
)
def test_bad_rules_name_the_field(patch: dict[str, object], message: str) -> None:
    with pytest.raises(RulesError, match=message):
        parse_rules({"rules": [{**GOOD, **patch}]})


def test_duplicate_names_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match="duplicate"):
        parse_rules({"rules": [GOOD, GOOD]})
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(RulesError, match=str(bad)):
        load_rules(bad)
