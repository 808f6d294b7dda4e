"""A/B experiments and shadow mirroring per model, persisted next to the rollouts.

An experiment splits a model's traffic over N arms with fixed weights (sticky per entity, like
a canary); a shadow mirrors a share of a model's traffic to another version after the response
is sent. Both survive a gateway restart.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from finpredict.gateway.routing import Arm, Split, hash_point


class PolicyError(ValueError):
    """An invalid experiment or shadow definition; the message names the field."""


@dataclass
class Experiment:
    model: str
    arms: list[Arm]
    started_by: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: float = field(default_factory=time.time)
    stopped_at: float = 0.0

    def __post_init__(self) -> None:
        if len(self.arms) < 2:
            raise PolicyError(f"arms: an experiment needs at least two arms, got {len(self.arms)}")
        for i, arm in enumerate(self.arms):
            if not arm.name:
                raise PolicyError(f"arms[{i}].name: required")
            if arm.version < 1:
                raise PolicyError(f"arms[{i}].version: must be a registered version (>= 1)")
        try:
            self._split = Split(tuple(self.arms), salt=self.id)
        except ValueError as exc:
            raise PolicyError(f"arms: {exc}") from None

    def split(self) -> Split:
        return self._split

    def to_json(self) -> str:
        doc = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        return json.dumps(doc)

    @classmethod
    def from_json(cls, text: str) -> Experiment:
        doc = json.loads(text)
        doc["arms"] = [Arm(**a) for a in doc["arms"]]
        return cls(**doc)


@dataclass(frozen=True)
class Shadow:
    """Mirror ``percent`` of ``model``'s traffic to ``version``."""

    model: str
    version: int
    percent: float = 100.0

    def mirrors(self, entity_id: str, request_id: str) -> bool:
        key = entity_id or request_id
        return hash_point(key, salt="shadow") * 100.0 < self.percent


class PolicyStore:
    """Experiments (at most one running per model) and shadows, in SQLite."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS experiments (id TEXT PRIMARY KEY, model TEXT NOT NULL,"
            " running INTEGER NOT NULL, doc TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS one_experiment_per_model"
            " ON experiments(model) WHERE running = 1"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS shadows (model TEXT PRIMARY KEY, version INTEGER NOT NULL,"
            " percent REAL NOT NULL)"
        )
        self.experiments: dict[str, Experiment] = {}
        for (doc,) in self._db.execute("SELECT doc FROM experiments WHERE running = 1"):
            exp = Experiment.from_json(doc)
            self.experiments[exp.model] = exp
        self.shadows: dict[str, Shadow] = {
            m: Shadow(m, int(v), float(p)) for m, v, p in self._db.execute("SELECT * FROM shadows")
        }

    def start_experiment(self, exp: Experiment) -> None:
        try:
            self._db.execute(
                "INSERT INTO experiments (id, model, running, doc) VALUES (?, ?, 1, ?)",
                (exp.id, exp.model, exp.to_json()),
            )
        except sqlite3.IntegrityError:
            raise PolicyError(f"model: {exp.model!r} already has a running experiment") from None
        self.experiments[exp.model] = exp

    def stop_experiment(self, experiment_id: str) -> Experiment:
        exp = next((e for e in self.experiments.values() if e.id == experiment_id), None)
        if exp is None:
            raise KeyError(experiment_id)
        exp.stopped_at = time.time()
        self._db.execute("UPDATE experiments SET running = 0, doc = ? WHERE id = ?", (exp.to_json(), exp.id))
        del self.experiments[exp.model]
        return exp

    def set_shadow(self, shadow: Shadow | None, model: str) -> None:
        if shadow is None:
            self._db.execute("DELETE FROM shadows WHERE model = ?", (model,))
            self.shadows.pop(model, None)
            return
        if not 0 < shadow.percent <= 100:
            raise PolicyError(f"percent: {shadow.percent} is outside (0, 100]")
        self._db.execute(
            "INSERT INTO shadows (model, version, percent) VALUES (?, ?, ?) ON CONFLICT(model) DO UPDATE"
            " SET version = excluded.version, percent = excluded.percent",
            (shadow.model, shadow.version, shadow.percent),
        )
        self.shadows[model] = shadow

    def close(self) -> None:
        self._db.close()
