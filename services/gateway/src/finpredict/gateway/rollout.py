"""The rollout state machine and its durable store.

A rollout moves a candidate through canary weights (default 1 → 5 → 25 → 100 %). At every
step below 100 % the analysis (:mod:`finpredict.gateway.analysis`) decides: ``wait`` keeps
the step, ``rollback`` sets the canary weight to 0 at once (the registry's aliases are never
touched by a rollback), ``advance`` moves to the next step. Passing the last step below 100 %
asks for promotion: the controller moves ``production`` in the registry (compare-and-set)
and only then marks the rollout promoted, so a failed registry call is retried, never lost.

Every change is written to the shared state database (:mod:`finpredict.gateway.state`) before
it takes effect, as a compare-and-set on the rollout's ``revision``, so a restarted gateway (or
another replica) resumes each rollout at the step it was at and no step is recorded twice. Each
analysis window has a number (``window``): advancing and resuming open a new one.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, select, update
from sqlalchemy.exc import IntegrityError

from finpredict.gateway.analysis import Thresholds, Verdict
from finpredict.gateway.routing import Split
from finpredict.gateway.state import schema
from finpredict.gateway.state.db import (
    bump_version,
    create_state_engine,
    migrate,
    read_tx,
    sqlite_url,
    write_tx,
)
from finpredict.gateway.state.lease import Fence, LeaseLostError

DEFAULT_STEPS = (1.0, 5.0, 25.0, 100.0)
DEFAULT_ANALYSIS_INTERVAL_S = 60.0
DEFAULT_MIN_REQUESTS_PER_STEP = 200
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


class StaleRolloutError(RolloutConflictError):
    """The rollout changed since it was read (another replica or operator wrote first)."""


@dataclass
class Decision:
    time: float
    step_index: int
    verdict: str
    reason: str
    replicas: int = 0  # gateway replicas whose measurements the analysis merged (0: not an analysis)
    metrics: dict[str, float] = field(default_factory=dict)  # the figures an analysis was based on
    replica: str = ""  # the gateway replica that wrote it
    # For an analysis: the statistics' record (finpredict.gateway.stats.StatsVerdict.to_dict()).
    statistics: dict[str, Any] = field(default_factory=dict)


@dataclass
class Rollout:
    model: str
    stable_version: int
    candidate_version: int
    steps: list[float] = field(default_factory=lambda: list(DEFAULT_STEPS))
    analysis_interval_s: float = DEFAULT_ANALYSIS_INTERVAL_S
    min_requests_per_step: int = DEFAULT_MIN_REQUESTS_PER_STEP
    thresholds: Thresholds = field(default_factory=Thresholds)
    started_by: str = ""
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    step_index: int = 0
    state: RolloutState = RolloutState.PROGRESSING
    decisions: list[Decision] = field(default_factory=list)
    started_at: float = field(default_factory=time.time)
    ended_at: float = 0.0
    revision: int = 0  # compare-and-set counter of the stored rollout (0: not stored yet)
    window: int = 0  # number of the current analysis window
    window_started: float = 0.0  # when it opened (0: at started_at)
    # Counts of the closed windows since the start, one stratum per canary weight
    # (finpredict.gateway.stats.Stratum.to_dict()); the open window is added at each analysis.
    strata: list[dict[str, Any]] = field(default_factory=list)
    # The closed windows' inputs of each variant counted on its own reference profile since the
    # start (variant -> drift_core.Window JSON; a variant without a profile has none).
    inputs: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.window_started = self.window_started or self.started_at
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

    def split(self, weight: float | None = None) -> Split:
        """The traffic split of the current step (``weight``: another canary weight, for a test hook)."""
        canary = self.weight if weight is None else weight
        return Split.canary(self.stable_version, self.candidate_version, canary, salt=self.id)

    def _decide(self, verdict: str, reason: str, now: float, replica: str = "") -> None:
        self.decisions.append(Decision(now, self.step_index, verdict, reason, replica=replica))
        del self.decisions[:-MAX_DECISIONS]

    def _new_window(self, now: float) -> None:
        self.window += 1
        self.window_started = now

    def apply(self, verdict: Verdict, now: float, *, replicas: int = 0, replica: str = "") -> None:
        """Applies one analysis verdict to a progressing rollout (``replicas``: how many gateway
        replicas' measurements it merged; ``replica``: the one deciding)."""
        if self.state is not RolloutState.PROGRESSING:
            raise RolloutConflictError(f"rollout {self.id} is {self.state}, not progressing")
        self._decide(verdict.action, verdict.reason, now, replica)
        self.decisions[-1].replicas = replicas
        self.decisions[-1].metrics = dict(verdict.metrics)
        if verdict.action == "rollback":
            self.state, self.ended_at = RolloutState.ROLLED_BACK, now
        elif verdict.action == "advance":
            self.step_index += 1
            self._new_window(now)
            if self.steps[self.step_index] >= 100.0:
                self.state = RolloutState.PROMOTING

    def halt(self, reason: str, now: float, *, replicas: int = 0, replica: str = "") -> None:
        """An analysis found the traffic split broken: paused (the canary keeps its weight) until an
        operator resumes (a fresh window) or aborts."""
        self._require(RolloutState.PROGRESSING, "halt")
        self.state = RolloutState.PAUSED
        self._decide("halt", reason, now, replica)
        self.decisions[-1].replicas = replicas

    def pause(self, reason: str, now: float) -> None:
        self._require(RolloutState.PROGRESSING, "pause")
        self.state = RolloutState.PAUSED
        self._decide("pause", reason, now)

    def resume(self, reason: str, now: float) -> None:
        self._require(RolloutState.PAUSED, "resume")
        self.state = RolloutState.PROGRESSING
        self._new_window(now)
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

    def copy(self) -> Rollout:
        """An independent copy (changes are made on a copy and adopted once stored)."""
        return Rollout.from_json(self.to_json())

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
    """Rollouts in the shared state database: at most one active rollout per model (and none while
    the model runs an experiment); every save is a compare-and-set on the rollout's revision, and
    a controller's save also checks its lease (fencing) in the same transaction.

    ``db``: an engine of a migrated database, or a SQLite file / database URL (opened and
    migrated here, and closed by :meth:`close`). Methods block: the gateway calls them in a
    worker thread.
    """

    def __init__(self, db: Engine | Path | str) -> None:
        self._owned = not isinstance(db, Engine)
        if isinstance(db, Engine):
            self._engine = db
        else:
            self._engine = create_state_engine(sqlite_url(db) if isinstance(db, Path) else db)
            migrate(self._engine)

    def create(self, rollout: Rollout, *, fence: Fence | None = None) -> int:
        """Stores a new rollout; returns the state version of the change. With ``fence`` (a rollout
        the controller starts by itself) only while that lease is still held (else
        :class:`LeaseLostError`)."""
        t = schema.rollouts
        with write_tx(self._engine) as conn:
            if fence is not None and not fence.holds(conn, time.time()):
                raise LeaseLostError(f"lease token {fence.token} of {fence.holder} is no longer current")
            version = bump_version(conn)
            _refuse_if_busy(conn, rollout.model)
            try:
                conn.execute(t.insert().values(**stored_columns(rollout, revision=1)))
            except IntegrityError:
                raise RolloutConflictError(f"model {rollout.model!r} already has an active rollout") from None
        rollout.revision = 1
        return version

    def save(self, rollout: Rollout, *, fence: Fence | None = None, now: float | None = None) -> int:
        """Stores ``rollout`` if nobody changed it since it was read (else :class:`StaleRolloutError`)
        and, with ``fence``, only while that lease is still held at ``now`` (else
        :class:`LeaseLostError`); returns the state version of the change."""
        t = schema.rollouts
        with write_tx(self._engine) as conn:
            if fence is not None and not fence.holds(conn, time.time() if now is None else now):
                raise LeaseLostError(f"lease token {fence.token} of {fence.holder} is no longer current")
            version = bump_version(conn)
            done = conn.execute(
                update(t)
                .where(t.c.id == rollout.id, t.c.revision == rollout.revision)
                .values(**stored_columns(rollout, revision=rollout.revision + 1))
            ).rowcount
            if done != 1:
                stored = conn.execute(select(t.c.revision).where(t.c.id == rollout.id)).scalar_one_or_none()
                if stored is None:
                    raise RolloutConflictError(f"unknown rollout {rollout.id}")
                raise StaleRolloutError(
                    f"rollout {rollout.id} changed meanwhile (revision {stored}, not {rollout.revision})"
                )
        rollout.revision += 1
        return version

    def get(self, rollout_id: str) -> Rollout | None:
        with read_tx(self._engine) as conn:
            row = conn.execute(_SELECT.where(schema.rollouts.c.id == rollout_id)).first()
        return _load(row) if row else None

    def active(self) -> list[Rollout]:
        t = schema.rollouts
        with read_tx(self._engine) as conn:
            rows = conn.execute(_SELECT.where(t.c.active_model.is_not(None)).order_by(t.c.started_at)).all()
        return [_load(r) for r in rows]

    def latest(self, model: str) -> Rollout | None:
        """The model's newest rollout."""
        t = schema.rollouts
        with read_tx(self._engine) as conn:
            row = conn.execute(
                _SELECT.where(t.c.model == model).order_by(t.c.started_at.desc()).limit(1)
            ).first()
        return _load(row) if row else None

    def list(self, model: str = "") -> list[Rollout]:
        t = schema.rollouts
        query = _SELECT.order_by(t.c.started_at.desc())
        if model:
            query = query.where(t.c.model == model)
        with read_tx(self._engine) as conn:
            rows = conn.execute(query).all()
        return [_load(r) for r in rows]

    def close(self) -> None:
        if self._owned:
            self._engine.dispose()


_SELECT = select(schema.rollouts.c.doc, schema.rollouts.c.revision)


def _load(row: Sequence[Any]) -> Rollout:
    rollout = Rollout.from_json(row[0])
    rollout.revision = int(row[1])
    return rollout


def stored_columns(rollout: Rollout, *, revision: int) -> dict[str, object]:
    """The row of ``rollout`` as stored at ``revision``."""
    doc = asdict(rollout)
    doc["revision"] = revision
    return {
        "id": rollout.id,
        "model": rollout.model,
        "state": rollout.state.value,
        "active_model": rollout.model if rollout.state in ACTIVE else None,
        "revision": revision,
        "window": rollout.window,
        "started_at": rollout.started_at,
        "doc": json.dumps(doc),
    }


def _refuse_if_busy(conn: Connection, model: str) -> None:
    """Inside a write transaction (serialised by the change counter): the model is free for a rollout."""
    t = schema.rollouts
    active = conn.execute(select(t.c.id).where(t.c.active_model == model)).scalar_one_or_none()
    if active is not None:
        raise RolloutConflictError(f"model: {model!r} already has an active rollout ({active})")
    running = schema.experiments.c.running_model == model
    if conn.execute(select(schema.experiments.c.id).where(running)).first() is not None:
        raise RolloutConflictError(f"model: {model!r} has a running experiment; stop it first")
