"""One-time import of the files a single gateway kept its state in before the shared database
(``rollouts.db`` and ``policies.db`` in its data folder), so an upgraded gateway resumes its
rollouts, experiments and shadows. It runs at start when the state database is the default
SQLite one and still empty; the old files are left in place.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

from sqlalchemy import Engine, func, select

from finpredict.gateway.policies import Experiment
from finpredict.gateway.rollout import Rollout, stored_columns
from finpredict.gateway.state import schema
from finpredict.gateway.state.db import bump_version, write_tx

log = logging.getLogger("finpredict.gateway.state")


def _rows(path: Path, query: str) -> list[tuple[object, ...]]:
    if not path.exists():
        return []
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return db.execute(query).fetchall()
    except sqlite3.OperationalError:  # not the old layout
        return []
    finally:
        db.close()


def import_legacy(engine: Engine, data_dir: Path) -> int:
    """Copies the old files' rollouts, experiments and shadows into an empty state database;
    returns how many rows it copied (0 when there was nothing to copy or the database is in use)."""
    rollouts = [
        Rollout.from_json(str(d)) for (d,) in _rows(data_dir / "rollouts.db", "SELECT doc FROM rollouts")
    ]
    policies = data_dir / "policies.db"
    experiments = [
        (Experiment.from_json(str(d)), bool(r))
        for d, r in _rows(policies, "SELECT doc, running FROM experiments")
    ]
    shadows = _rows(policies, "SELECT model, version, percent FROM shadows")
    if not (rollouts or experiments or shadows):
        return 0
    with write_tx(engine) as conn:
        for table in (schema.rollouts, schema.experiments, schema.shadows):
            if conn.execute(select(func.count()).select_from(table)).scalar_one():
                return 0
        bump_version(conn)
        for rollout in rollouts:
            conn.execute(schema.rollouts.insert().values(**stored_columns(rollout, revision=1)))
        for exp, running in experiments:
            conn.execute(
                schema.experiments.insert().values(
                    id=exp.id,
                    model=exp.model,
                    running_model=exp.model if running else None,
                    doc=exp.to_json(),
                )
            )
        for model, version, percent in shadows:
            conn.execute(schema.shadows.insert().values(model=model, version=version, percent=percent))
    copied = len(rollouts) + len(experiments) + len(shadows)
    log.info(
        "imported the state of the previous version",
        extra={"rollouts": len(rollouts), "experiments": len(experiments), "shadows": len(shadows)},
    )
    return copied
