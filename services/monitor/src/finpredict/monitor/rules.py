"""The alert rules file: one YAML document with a ``rules`` list (see ``rules.yaml``)."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

# PyYAML ships no type stubs (and the workspace pins none); typed as Any on purpose.
yaml: Any = importlib.import_module("yaml")


KINDS = ("feature_psi", "score_kl", "accuracy")
WINDOWS = ("hourly", "daily")
SEVERITIES = ("info", "warning", "critical")
KEYS = {"name", "kind", "window", "threshold", "consecutive", "min_samples", "severity", "retrain"}


class RulesError(ValueError):
    """The rules file is invalid; the message names the rule and field."""


@dataclass(frozen=True)
class Rule:
    """One model-quality alert rule."""

    name: str
    kind: Literal["feature_psi", "score_kl", "accuracy"]
    window: Literal["hourly", "daily"]
    threshold: float
    consecutive: int
    min_samples: int
    severity: str
    retrain: bool

    def breaches(self, value: float) -> bool:
        """Whether ``value`` violates the rule (accuracy: below; divergences: above)."""
        if value != value:  # NaN: no evidence either way
            return False
        return value < self.threshold if self.kind == "accuracy" else value > self.threshold


def parse_rules(doc: Any) -> list[Rule]:
    """Validates a parsed rules document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list):
        raise RulesError("rules file: expected a mapping with a 'rules' list")
    rules: list[Rule] = []
    for i, raw in enumerate(doc["rules"]):
        where = f"rules[{i}]"
        if not isinstance(raw, dict):
            raise RulesError(f"{where}: expected a mapping")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise RulesError(f"{where}.name: required")
        where = f"rules[{i}] ({name})"
        unknown = set(raw) - {
            "name",
            "kind",
            "window",
            "threshold",
            "consecutive",
            "min_samples",
            "severity",
            "retrain",
        }
        if unknown:
            raise RulesError(f"{where}: unknown keys {sorted(unknown)}")
        kind = raw.get("kind")
        if kind not in KINDS:
            raise RulesError(f"{where}.kind: {kind!r} is not one of {KINDS}")
        window = raw.get("window")
        if window not in WINDOWS:
            raise RulesError(f"{where}.window: {window!r} is not one of {WINDOWS}")
        threshold = raw.get("threshold")
        if isinstance(threshold, bool) or not isinstance(threshold, int | float):
            raise RulesError(f"{where}.threshold: a number is required")
        consecutive = raw.get("consecutive", 1)
        if isinstance(consecutive, bool) or not isinstance(consecutive, int) or consecutive < 1:
            raise RulesError(f"{where}.consecutive: an integer >= 1 is required")
        min_samples = raw.get("min_samples", 1)
        if isinstance(min_samples, bool) or not isinstance(min_samples, int) or min_samples < 1:
            raise RulesError(f"{where}.min_samples: an integer >= 1 is required")
        severity = raw.get("severity", "warning")
        if severity not in SEVERITIES:
            raise RulesError(f"{where}.severity: {severity!r} is not one of {SEVERITIES}")
        retrain = raw.get("retrain", False)
        if not isinstance(retrain, bool):
            raise RulesError(f"{where}.retrain: true or false")
        if any(r.name == name for r in rules):
            raise RulesError(f"{where}.name: duplicate rule name")
        rules.append(Rule(name, kind, window, float(threshold), consecutive, min_samples, severity, retrain))
    return rules


def load_rules(path: Path) -> list[Rule]:
    """Reads and validates the rules file."""
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"rules file {path}: {exc}") from None
    return parse_rules(doc)
