"""The alert state file (``state.json``): what the logs cannot rebuild on a restart.

Alerts, breach streaks, the latest accuracy window per rule, the evaluation clock and how far
each version's windows were evaluated. Written whole and atomically: a temporary file of its
own, fsync'ed, renamed over the old one, the directory fsync'ed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from finpredict.common.fsio import write_atomic
from finpredict.monitor.evaluation import AlertRecord
from finpredict.monitor.windows import VersionKey


@dataclass
class SavedState:
    alerts: dict[str, AlertRecord] = field(default_factory=dict)
    streaks: dict[str, int] = field(default_factory=dict)
    streak_ends: dict[str, str] = field(default_factory=dict)
    accuracy_day: dict[str, str] = field(default_factory=dict)
    clock: datetime | None = None
    evaluated_until: dict[VersionKey, datetime] = field(default_factory=dict)


def load_state(path: Path) -> SavedState:
    """The saved state; empty when there is no file yet."""
    if not path.exists():
        return SavedState()
    doc = json.loads(path.read_text())
    evaluated: dict[VersionKey, datetime] = {}
    for key_s, until in doc.get("evaluated_until", {}).items():
        model, _, version = key_s.rpartition("|")
        evaluated[(model, int(version))] = datetime.fromisoformat(until)
    return SavedState(
        alerts={a["id"]: AlertRecord.from_json(a) for a in doc.get("alerts", [])},
        streaks={k: int(v) for k, v in doc.get("streaks", {}).items()},
        streak_ends=dict(doc.get("streak_ends", {})),
        accuracy_day=dict(doc.get("accuracy_day", {})),
        clock=datetime.fromisoformat(doc["clock"]) if doc.get("clock") else None,
        evaluated_until=evaluated,
    )


def save_state(path: Path, state: SavedState) -> None:
    """Durably replaces the state file (returns once the rename is on disk)."""
    doc = {
        "alerts": [a.to_json() for a in state.alerts.values()],
        "streaks": state.streaks,
        "streak_ends": state.streak_ends,
        "accuracy_day": state.accuracy_day,
        "clock": state.clock.isoformat() if state.clock else None,
        "evaluated_until": {f"{k[0]}|{k[1]}": v.isoformat() for k, v in state.evaluated_until.items()},
    }
    write_atomic(path, json.dumps(doc, indent=1, sort_keys=True).encode())
