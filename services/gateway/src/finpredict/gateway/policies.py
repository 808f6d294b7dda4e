"""A/B experiments and shadow mirroring per model, in the shared state next to the rollouts.

An experiment splits a model's traffic over N arms with fixed weights (sticky per entity, like
a canary, salted with the experiment's id); a shadow mirrors a share of a model's traffic to
another version after the response is sent. Both survive a gateway restart, and every replica
routes by the same ones.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from sqlalchemy import Connection, Engine, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite

from finpredict.gateway.routing import Arm, Split, hash_point
from finpredict.gateway.state import schema
from finpredict.gateway.state.db import bump_version, call, read_tx, write_tx
from finpredict.gateway.state.sync import Applied


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
    """Experiments (at most one running per model, none while the model has an active rollout) and
    shadows in the shared state database. ``experiments`` and ``shadows`` are this replica's
    in-memory copy, which the request path reads: changes made here apply at once, changes made
    by other replicas when :class:`~finpredict.gateway.state.sync.StateSync` refreshes it."""

    def __init__(self, engine: Engine, applied: Applied | None = None) -> None:
        self._engine = engine
        self._applied = applied or Applied()
        self.experiments: dict[str, Experiment] = {}
        self.shadows: dict[str, Shadow] = {}

    def load(self) -> tuple[dict[str, Experiment], dict[str, Shadow]]:
        """The running experiments and the shadows, by model, as stored (blocking)."""
        e, s = schema.experiments, schema.shadows
        with read_tx(self._engine) as conn:
            docs = conn.execute(select(e.c.doc).where(e.c.running_model.is_not(None))).scalars().all()
            rows = conn.execute(select(s.c.model, s.c.version, s.c.percent)).all()
        experiments = {x.model: x for x in map(Experiment.from_json, docs)}
        return experiments, {m: Shadow(m, int(v), float(p)) for m, v, p in rows}

    async def find_experiment(self, *, model: str = "", experiment_id: str = "") -> Experiment | None:
        """The experiment with ``experiment_id`` (running or stopped), else ``model``'s running one."""
        return await call("read", self._find, model, experiment_id)

    def _find(self, model: str, experiment_id: str) -> Experiment | None:
        e = schema.experiments
        where = e.c.id == experiment_id if experiment_id else e.c.running_model == model
        with read_tx(self._engine) as conn:
            doc = conn.execute(select(e.c.doc).where(where)).scalar_one_or_none()
        return Experiment.from_json(doc) if doc is not None else None

    def apply(self, experiments: dict[str, Experiment], shadows: dict[str, Shadow]) -> None:
        self.experiments, self.shadows = experiments, shadows

    async def start_experiment(self, exp: Experiment) -> None:
        self._applied.wrote(await call("write", self._insert, exp))
        self.experiments[exp.model] = exp

    async def stop_experiment(self, experiment_id: str) -> Experiment:
        """Stops a running experiment; KeyError if there is none with that id."""
        exp, version = await call("write", self._stop, experiment_id, time.time())
        self._applied.wrote(version)
        self.experiments.pop(exp.model, None)
        return exp

    async def set_shadow(self, shadow: Shadow | None, model: str) -> None:
        """Mirrors ``model`` to ``shadow`` (None: stops mirroring)."""
        if shadow is not None and not 0 < shadow.percent <= 100:
            raise PolicyError(f"percent: {shadow.percent} is outside (0, 100]")
        self._applied.wrote(await call("write", self._write_shadow, shadow, model))
        if shadow is None:
            self.shadows.pop(model, None)
        else:
            self.shadows[model] = shadow

    # ----- blocking writes (in a worker thread) ----------------------------------------------

    def _insert(self, exp: Experiment) -> int:
        e = schema.experiments
        with write_tx(self._engine) as conn:
            version = bump_version(conn)
            _refuse_if_busy(conn, exp.model)
            conn.execute(
                e.insert().values(id=exp.id, model=exp.model, running_model=exp.model, doc=exp.to_json())
            )
        return version

    def _stop(self, experiment_id: str, now: float) -> tuple[Experiment, int]:
        e = schema.experiments
        with write_tx(self._engine) as conn:
            running = (e.c.id == experiment_id, e.c.running_model.is_not(None))
            doc = conn.execute(select(e.c.doc).where(*running)).scalar_one_or_none()
            if doc is None:
                raise KeyError(experiment_id)
            version = bump_version(conn)
            exp = Experiment.from_json(doc)
            exp.stopped_at = now
            conn.execute(update(e).where(e.c.id == exp.id).values(running_model=None, doc=exp.to_json()))
        return exp, version

    def _write_shadow(self, shadow: Shadow | None, model: str) -> int:
        s = schema.shadows
        with write_tx(self._engine) as conn:
            version = bump_version(conn)
            if shadow is None:
                conn.execute(delete(s).where(s.c.model == model))
                return version
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            stmt = insert(s).values(model=model, version=shadow.version, percent=shadow.percent)
            conn.execute(
                stmt.on_conflict_do_update(
                    index_elements=["model"],
                    set_={"version": stmt.excluded.version, "percent": stmt.excluded.percent},
                )
            )
        return version


def _refuse_if_busy(conn: Connection, model: str) -> None:
    """Inside a write transaction (serialised by the change counter): the model is free for an experiment."""
    r, e = schema.rollouts, schema.experiments
    if conn.execute(select(r.c.id).where(r.c.active_model == model)).first() is not None:
        raise PolicyError(f"model: {model!r} has an active rollout; finish it first")
    if conn.execute(select(e.c.id).where(e.c.running_model == model)).first() is not None:
        raise PolicyError(f"model: {model!r} already has a running experiment")
