"""Each replica's measurements of a rollout's analysis window, published for the leader to merge.

Every replica counts what it routed in its own :class:`StepWindow` (stable and canary
:class:`~finpredict.gateway.analysis.VariantWindow`: counts and histograms, so they add up
exactly) and upserts it whole, keyed by rollout, window number and ``source`` (this process),
every ``STATE_POLL_S``. The leader sums every source's row of the current window with its own
live counts; a decision records how many replicas contributed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, exists, or_, select
from sqlalchemy.dialects import postgresql, sqlite

from finpredict.gateway.analysis import VariantWindow
from finpredict.gateway.state.db import read_tx, write_tx
from finpredict.gateway.state.schema import rollouts, window_stats


@dataclass
class StepWindow:
    """Both variants' measurements in window number ``window`` of a rollout."""

    window: int
    stable: VariantWindow = field(default_factory=VariantWindow)
    canary: VariantWindow = field(default_factory=VariantWindow)
    changed: bool = False  # recorded into since it was last published

    def side(self, variant: str) -> VariantWindow:
        return self.canary if variant == "canary" else self.stable

    @property
    def requests(self) -> int:
        return self.stable.requests + self.canary.requests

    def merge(self, other: StepWindow) -> None:
        self.stable.merge(other.stable)
        self.canary.merge(other.canary)

    def to_json(self) -> str:
        return json.dumps({"stable": self.stable.to_dict(), "canary": self.canary.to_dict()})

    @classmethod
    def from_json(cls, window: int, text: str) -> StepWindow:
        doc = json.loads(text)
        return cls(window, VariantWindow.from_dict(doc["stable"]), VariantWindow.from_dict(doc["canary"]))


@dataclass(frozen=True)
class Published:
    """One replica's published window."""

    replica: str
    source: str
    window: StepWindow


class WindowStore:
    """Publishes this process's windows and reads everybody's (blocking calls)."""

    def __init__(
        self, engine: Engine, *, replica: str, source: str, clock: Callable[[], float] = time.time
    ) -> None:
        self._engine = engine
        self.replica = replica
        self.source = source
        self._clock = clock

    def publish(self, windows: Sequence[tuple[str, int, str]]) -> None:
        """Upserts ``(rollout_id, window, StepWindow JSON)`` rows of this source."""
        if not windows:
            return
        insert = postgresql.insert if self._engine.dialect.name == "postgresql" else sqlite.insert
        now = self._clock()
        rows = [
            {
                "rollout_id": rollout_id,
                "window": window,
                "source": self.source,
                "replica": self.replica,
                "updated_at": now,
                "stats": stats,
            }
            for rollout_id, window, stats in windows
        ]
        stmt = insert(window_stats)
        stmt = stmt.on_conflict_do_update(
            index_elements=["rollout_id", "window", "source"],
            set_={"stats": stmt.excluded.stats, "updated_at": stmt.excluded.updated_at},
        )
        with write_tx(self._engine) as conn:
            conn.execute(stmt, rows)

    def read(self, rollout_id: str, window: int) -> list[Published]:
        """Every source's published measurements of one window."""
        return [
            Published(replica, source, StepWindow.from_json(window, text))
            for replica, source, text in self.read_rows(rollout_id, window)
        ]

    def read_rows(self, key: str, window: int) -> list[tuple[str, str, str]]:
        """``(replica, source, JSON)`` of every source's row of ``key`` (a rollout's id, or an
        experiment's: :mod:`finpredict.gateway.experiment_stats`) and ``window``."""
        t = window_stats
        with read_tx(self._engine) as conn:
            rows = conn.execute(
                select(t.c.replica, t.c.source, t.c.stats).where(t.c.rollout_id == key, t.c.window == window)
            ).all()
        return [(str(r[0]), str(r[1]), str(r[2])) for r in rows]

    def prune(self) -> int:
        """Deletes the rows of past windows and of ended rollouts."""
        t, r = window_stats, rollouts
        past = or_(r.c.active_model.is_(None), r.c.window > t.c.window)
        with write_tx(self._engine) as conn:
            return int(conn.execute(delete(t).where(exists().where(r.c.id == t.c.rollout_id, past))).rowcount)


def merge_windows(
    window: int, published: Sequence[Published], own: StepWindow | None, source: str, replica: str
) -> tuple[StepWindow, int]:
    """The sum of every other source's published ``window`` and this source's live ``own`` one,
    and how many replicas contributed requests to it."""
    merged = StepWindow(window)
    replicas: set[str] = set()
    for p in published:
        if p.source == source or p.window.window != window:
            continue
        merged.merge(p.window)
        if p.window.requests:
            replicas.add(p.replica)
    if own is not None and own.window == window:
        merged.merge(own)
        if own.requests:
            replicas.add(replica)
    return merged, len(replicas)
