"""Rule evaluation and alert state: which alerts fire, for how long, and who hears of a change.

An alert is identified by (rule, model, version, feature) (:func:`alert_id`), so evaluating the
same window twice never duplicates it. Drift rules are evaluated on a window when it closes;
accuracy rules whenever outcomes label a window's predictions. ``consecutive`` counts windows in a
row of the calendar: a window without records (or with fewer than the rule's ``min_samples``) in
between breaks the run (:meth:`RuleEvaluator.streak`).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from finpredict.monitor import metrics as m
from finpredict.monitor.rules import Rule
from finpredict.monitor.windows import (
    DAY,
    HOUR,
    NAN,
    VersionKey,
    VersionState,
    Windows,
    floor_day,
    window_stats,
)


@dataclass
class AlertRecord:
    id: str
    rule: str
    severity: str
    model: str
    version: int
    features: list[str]
    value: float
    threshold: float
    summary: str
    firing: bool
    started_at: datetime
    resolved_at: datetime | None = None
    retrained_version: int = 0
    retrain_job: str = ""

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["started_at"] = self.started_at.isoformat()
        d["resolved_at"] = self.resolved_at.isoformat() if self.resolved_at else None
        d["value"] = self.value if math.isfinite(self.value) else None
        return d

    @staticmethod
    def from_json(d: dict[str, Any]) -> AlertRecord:
        d = dict(d)
        d["started_at"] = datetime.fromisoformat(d["started_at"])
        d["resolved_at"] = datetime.fromisoformat(d["resolved_at"]) if d.get("resolved_at") else None
        d["value"] = NAN if d.get("value") is None else float(d["value"])
        return AlertRecord(**d)


def alert_id(rule: str, model: str, version: int, feature: str = "") -> str:
    return hashlib.sha256(f"{rule}|{model}|{version}|{feature}".encode()).hexdigest()[:16]


Listener = Callable[[AlertRecord, Rule | None], None]


class RuleEvaluator:
    """The rules, the alerts they raised, breach streaks and the latest accuracy window per rule."""

    def __init__(self, rules: Sequence[Rule], windows: Windows) -> None:
        self.rules = list(rules)
        self.windows = windows
        self.alerts: dict[str, AlertRecord] = {}
        self.streaks: dict[str, int] = {}  # alert id -> consecutive breaching windows
        self.streak_ends: dict[str, str] = {}  # alert id -> end of the run's latest window (ISO)
        self.accuracy_day: dict[str, str] = {}  # rule|model|version -> latest evaluated day
        self.listeners: list[Listener] = []

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)

    def closed_window(
        self, key: VersionKey, state: VersionState, start: datetime, size: str, end: datetime
    ) -> list[AlertRecord]:
        """Evaluates the drift rules of ``size`` windows on the window that closed at ``end``."""
        rules = [r for r in self.rules if r.window == size and r.kind != "accuracy"]
        if not rules or state.profile is None:
            return []
        has_data = any(start <= h < end and c.count for h, c in state.hours.items())
        if not has_data:
            return []
        ws = window_stats(state, start, size)
        changed: list[AlertRecord] = []
        for rule in rules:
            if ws.count < rule.min_samples:
                continue
            if rule.kind == "score_kl":
                changed += self.transition(rule, key, "", ws.score_kl, end, f"score KL {ws.score_kl:.3f}")
            elif rule.kind == "feature_psi":
                for f in ws.features:
                    name, psi = f.name, f.psi
                    aid = alert_id(rule.name, key[0], key[1], name)
                    streak = self.streak(aid, start, end, rule.breaches(psi))
                    if streak >= rule.consecutive or (not streak and aid in self.alerts):
                        detail = f"PSI of {name} {psi:.3f}, {streak} consecutive {size} window(s) above"
                        changed += self.transition(rule, key, name, psi, end, detail, force=streak > 0)
        return changed

    def streak(self, aid: str, start: datetime, end: datetime, breach: bool) -> int:
        """The breach run of ``aid`` with the window ``[start, end)``: one more than the run of the
        window just before it (ending at ``start``) when that one breached, else 1; 0 without a
        breach. A window between them that was not evaluated (no records, or fewer than the rule's
        minimum) breaks the run: "3 consecutive days" are three calendar days in a row."""
        if not breach:
            self.streaks.pop(aid, None)
            self.streak_ends.pop(aid, None)
            return 0
        adjacent = self.streak_ends.get(aid, start.isoformat()) == start.isoformat()
        streak = self.streaks.get(aid, 0) + 1 if adjacent else 1
        self.streaks[aid] = streak
        self.streak_ends[aid] = end.isoformat()
        return streak

    def labelled(self, touched: set[tuple[VersionKey, datetime]], now: datetime) -> list[AlertRecord]:
        """Evaluates the accuracy rules on the windows of the (version, hour) cells just labelled."""
        changed: list[AlertRecord] = []
        for rule in (r for r in self.rules if r.kind == "accuracy"):
            span = HOUR if rule.window == "hourly" else DAY
            starts = sorted({(key, h if rule.window == "hourly" else floor_day(h)) for key, h in touched})
            for key, start in starts:
                mark = f"{rule.name}|{key[0]}|{key[1]}"
                latest = self.accuracy_day.get(mark)
                if latest is not None and start < datetime.fromisoformat(latest):
                    continue  # a newer window already decides the state
                state = self.windows.versions[key]
                ws = window_stats(state, start, rule.window)
                if ws.labeled < rule.min_samples:
                    continue
                self.accuracy_day[mark] = start.isoformat()
                changed += self.transition(
                    rule,
                    key,
                    "",
                    ws.accuracy,
                    now,
                    f"accuracy {ws.accuracy:.3f} on {ws.labeled} labels, "
                    f"{span.total_seconds() / 3600:.0f} h window from {start:%Y-%m-%d %H:%M}",
                )
                self.windows.publish(key, state)
        return changed

    def transition(
        self,
        rule: Rule,
        key: VersionKey,
        feature: str,
        value: float,
        at: datetime,
        detail: str,
        force: bool | None = None,
    ) -> list[AlertRecord]:
        """Fires or resolves one alert; returns it when its state changed (deduplicated by id)."""
        breach = rule.breaches(value) if force is None else force
        aid = alert_id(rule.name, key[0], key[1], feature)
        current = self.alerts.get(aid)
        if breach and (current is None or not current.firing):
            alert = AlertRecord(
                id=aid,
                rule=rule.name,
                severity=rule.severity,
                model=key[0],
                version=key[1],
                features=[feature] if feature else [],
                value=value,
                threshold=rule.threshold,
                summary=f"{rule.name} firing for {key[0]} v{key[1]}: {detail} (threshold {rule.threshold})",
                firing=True,
                started_at=at,
            )
            self.alerts[aid] = alert
        elif breach and current is not None:
            current.value = value  # still firing: refresh the value, no state change
            return []
        elif not breach and current is not None and current.firing:
            current.firing = False
            current.resolved_at = at
            current.value = value
            current.summary = f"{rule.name} resolved for {key[0]} v{key[1]}: {detail}"
            alert = current
        else:
            return []
        m.ALERTS_FIRING.labels(rule.name, key[0], str(key[1])).set(
            self.firing_count(rule.name, key[0], key[1])
        )
        m.ALERT_TRANSITIONS.labels(rule.name, "firing" if alert.firing else "resolved").inc()
        for listener in self.listeners:
            listener(alert, rule)
        return [alert]

    def firing_count(self, rule: str, model: str, version: int) -> int:
        return sum(
            1
            for a in self.alerts.values()
            if a.firing and (a.rule, a.model, a.version) == (rule, model, version)
        )

    def publish_firing(self) -> None:
        """The firing-alerts gauge of every (rule, version) with an alert (after a restart)."""
        for a in self.alerts.values():
            count = self.firing_count(a.rule, a.model, a.version)
            m.ALERTS_FIRING.labels(a.rule, a.model, str(a.version)).set(count)
