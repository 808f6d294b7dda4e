"""The rollout state machine and its durable store.

A rollout moves a candidate through canary weights (default 1 → 5 → 25 → 100 %). At every
step below 100 % the analysis (:mod:`finpredict.gateway.analysis`) decides: ``wait`` keeps
the step, ``rollback`` sets the canary weight to 0 at once (the registry's aliases are never
touched by a rollback), ``advance`` moves to the next step. Passing the last step below 100 %
asks for promotion: the controller moves ``production`` in the registry (compare-and-set)
and only then marks the rollout promoted, so a failed registry call is retried, never lost.

Every change is written to a SQLite store before it takes effect, so a restarted gateway
resumes each rollout at the step it was at.
"""

from __future__ import annotations

import json
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path

from finpredict.gateway.analysis import Thresholds, Verdict
from finpredict.gateway.routing import Split

DEFAULT_STEPS = (1.0, 5.0, 25.0, 100.0)
MAX_DECISIONS = 500


class RolloutState(StrEnum):
    PROGRESSING = "progressing"
    PAUSED = "paused"
    PROMOTING = "promoting"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    ABORTED = "aborted"


ACTIVE = (RolloutState.PROGRESSING, RolloutState.PAUSED, RolloutState.PROMOTING)


class RolloutError(ValueError):
    """An invalid rollout definition; the message names the field."""


class RolloutConflictError(RolloutError):
    """A transition the rollout's state does not allow (or a second active rollout of a model)."""


@dataclass
class Decision:
    time: float
    step_index: int
    verdict: str
    reason: str


@dataclass
class Rollout:
    model: str
    stable_version: int
    candidate_version: int
    steps: list[float] = field(default_factory=lambda: list(DEFAULT_STEPS))
    analysis_interval_s: float = 60.0
    min_requests_per_step: int = 200
    thresholds: Thresholds = field(default_factory=Thresholds)
    started_by: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    step_index: int = 0
    state: RolloutState = RolloutState.PROGRESSING
    decisions: list[Decision] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0

    def __post_init__(self) -> None:
        if not self.steps or self.steps[-1] != 100.0:
            raise RolloutError(f"steps must end at 100, got {self.steps}")
        if any(not 0 < s <= 100 for s in self.steps) or sorted(set(self.steps)) != self.steps:
            raise RolloutError(f"steps must be increasing percentages in (0, 100], got {self.steps}")
        if self.candidate_version == self.stable_version:
            raise RolloutError(f"candidate_version {self.candidate_version} is already the stable version")
        if self.analysis_interval_s <= 0:
            raise RolloutError("analysis_interval must be positive")
        if self.min_requests_per_step < 1:
            raise RolloutError("min_requests_per_step must be at least 1")

    @property
    def weight(self) -> float:
        """The canary's current share of traffic in percent."""
        if self.state in (RolloutState.PROGRESSING, RolloutState.PAUSED, RolloutState.PROMOTING):
            return self.steps[self.step_index]
        return 100.0 if self.state is RolloutState.PROMOTED else 0.0

    def split(self) -> Split:
        return Split.canary(self.stable_version, self.candidate_version, self.weight, salt=self.id)

    def _decide(self, verdict: str, reason: str, now: float) -> None:
        self.decisions.append(Decision(now, self.step_index, verdict, reason))
        del self.decisions[:-MAX_DECISIONS]

    def apply(self, verdict: Verdict, now: float) -> None:
        """Applies one analysis verdict to a progressing rollout."""
        if self.state is not RolloutState.PROGRESSING:
            raise RolloutConflictError(f"rollout {self.id} is {self.state}, not progressing")
        self._decide(verdict.action, verdict.reason, now)
        if verdict.action == "rollback":
            self.state, self.ended_at = RolloutState.ROLLED_BACK, now
        elif verdict.action == "advance":
            if self.steps[self.step_index + 1] < 100.0:
                self.step_index += 1
            else:
                self.step_index += 1
                self.state = RolloutState.PROMOTING

    def pause(self, reason: str, now: float) -> None:
        self._require(RolloutState.PROGRESSING, "pause")
        self.state = RolloutState.PAUSED
        self._decide("pause", reason, now)

    def resume(self, reason: str, now: float) -> None:
        self._require(RolloutState.PAUSED, "resume")
        self.state = RolloutState.PROGRESSING
        self._decide("resume", reason, now)

    def abort(self, reason: str, now: float) -> None:
        if self.state not in (RolloutState.PROGRESSING, RolloutState.PAUSED):
            raise RolloutConflictError(
                f"rollout {self.id} is {self.state}: only a running rollout can be aborted"
            )
        self.state, self.ended_at = RolloutState.ABORTED, now
        self._decide("abort", reason, now)

    def request_promotion(self, reason: str, now: float) -> None:
        """Manual promotion: skip the remaining steps."""
        if self.state not in (RolloutState.PROGRESSING, RolloutState.PAUSED):
            raise RolloutConflictError(
                f"rollout {self.id} is {self.state}: only a running rollout can be promoted"
            )
        self.step_index, self.state = len(self.steps) - 1, RolloutState.PROMOTING
        self._decide("promote", reason, now)

    def mark_promoted(self, now: float) -> None:
        self._require(RolloutState.PROMOTING, "mark promoted")
        self.state, self.ended_at = RolloutState.PROMOTED, now
        self._decide("promoted", f"production -> version {self.candidate_version}", now)

    def _require(self, state: RolloutState, what: str) -> None:
        if self.state is not state:
            raise RolloutConflictError(f"cannot {what} rollout {self.id}: it is {self.state}, not {state}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Rollout:
        doc = json.loads(text)
        doc["thresholds"] = Thresholds(**doc["thresholds"])
        doc["decisions"] = [Decision(**d) for d in doc["decisions"]]
        doc["state"] = RolloutState(doc["state"])
        return cls(**doc)


class RolloutStore:
    """Rollouts persisted in SQLite (WAL); at most one active rollout per model."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS rollouts (id TEXT PRIMARY KEY, model TEXT NOT NULL,"
            " state TEXT NOT NULL, started_at REAL NOT NULL, doc TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE UNIQUE INDEX IF NOT EXISTS one_active_per_model ON rollouts(model)"
            " WHERE state IN ('progressing', 'paused', 'promoting')"
        )

    def create(self, rollout: Rollout) -> None:
        try:
            self._db.execute(
                "INSERT INTO rollouts (id, model, state, started_at, doc) VALUES (?, ?, ?, ?, ?)",
                (rollout.id, rollout.model, rollout.state.value, rollout.started_at, rollout.to_json()),
            )
        except sqlite3.IntegrityError:
            raise RolloutConflictError(f"model {rollout.model!r} already has an active rollout") from None

    def save(self, rollout: Rollout) -> None:
        cur = self._db.execute(
            "UPDATE rollouts SET state = ?, doc = ? WHERE id = ?",
            (rollout.state.value, rollout.to_json(), rollout.id),
        )
        if cur.rowcount != 1:
            raise RolloutConflictError(f"unknown rollout {rollout.id}")

    def get(self, rollout_id: str) -> Rollout | None:
        row = self._db.execute("SELECT doc FROM rollouts WHERE id = ?", (rollout_id,)).fetchone()
        return Rollout.from_json(row[0]) if row else None

    def active(self) -> list[Rollout]:
        rows = self._db.execute(
            "SELECT doc FROM rollouts WHERE state IN ('progressing', 'paused', 'promoting')"
            " ORDER BY started_at"
        ).fetchall()
        return [Rollout.from_json(r[0]) for r in rows]

    def list(self, model: str = "") -> list[Rollout]:
        rows = self._db.execute(
            "SELECT doc FROM rollouts WHERE (? = '' OR model = ?) ORDER BY started_at DESC", (model, model)
        ).fetchall()
        return [Rollout.from_json(r[0]) for r in rows]

    def close(self) -> None:
        self._db.close()
