"""Keeps this replica's in-memory routing state in step with the shared database.

Every ``STATE_POLL_S`` the sync reads the change counter; when it moved, it loads the active
rollouts, running experiments and shadows and swaps them into the controller and the policy
store (the request path only ever reads those in-memory copies). Then it publishes this
replica's window measurements. A change this replica wrote itself is applied at once; a
snapshot older than such a change is not applied (it would undo it for a moment).

While the database is unreachable, routing keeps the last state it loaded: the failures are
counted (``finpredict_gateway_state_errors_total``), the age of the state is exported
(``finpredict_gateway_state_age_seconds``), and the outage and the recovery are logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Set
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from finpredict.gateway import metrics
from finpredict.gateway.state.db import StateUnavailableError, call, current_version, read_tx

if TYPE_CHECKING:
    from finpredict.gateway.live import LiveRollouts
    from finpredict.gateway.policies import Experiment, PolicyStore, Shadow
    from finpredict.gateway.rollout import Rollout, RolloutStore
    from finpredict.gateway.state.windows import WindowStore

log = logging.getLogger("finpredict.gateway.state")


@dataclass
class Applied:
    """Which change of the shared state this replica's in-memory copy reflects."""

    version: int = -1  # the change counter of the last snapshot applied
    floor: int = 0  # the newest change this replica wrote itself

    def wrote(self, version: int) -> None:
        self.floor = max(self.floor, version)


@dataclass(frozen=True)
class Snapshot:
    version: int
    rollouts: list[Rollout]  # active
    ended: list[Rollout]  # rollouts that were active in memory and have ended since
    experiments: dict[str, Experiment]
    shadows: dict[str, Shadow]


class StateSync:
    """Refreshes the in-memory state and publishes the window measurements, every ``poll_s``."""

    def __init__(
        self,
        engine: Engine,
        rollouts: RolloutStore,
        live: LiveRollouts,
        policies: PolicyStore,
        windows: WindowStore,
        applied: Applied,
        poll_s: float,
    ) -> None:
        self._engine = engine
        self._rollouts = rollouts
        self._live = live
        self._policies = policies
        self._windows = windows
        self._applied = applied
        self.poll_s = poll_s
        self._last_ok = time.monotonic()
        self._unreachable = False
        self._task: asyncio.Task[None] | None = None
        metrics.STATE_AGE_SECONDS.set_function(lambda: time.monotonic() - self._last_ok)

    async def refresh(self) -> bool:
        """One poll; True when a newer snapshot was applied. Raises StateUnavailableError."""
        snapshot = await call("refresh", self._load, self._live.models(), self._applied.version)
        self._reachable()
        if snapshot is None or snapshot.version < self._applied.floor:
            return False
        self._live.apply(snapshot.rollouts, snapshot.ended)
        self._policies.apply(snapshot.experiments, snapshot.shadows)
        self._applied.version = snapshot.version
        metrics.STATE_VERSION.set(snapshot.version)
        return True

    def _load(self, models: Set[str], applied: int) -> Snapshot | None:
        with read_tx(self._engine) as conn:
            version = current_version(conn)
        if version == applied:
            return None
        active = self._rollouts.active()
        gone = models - {r.model for r in active}
        ended = [r for r in map(self._rollouts.latest, sorted(gone)) if r is not None]
        experiments, shadows = self._policies.load()
        return Snapshot(version, active, ended, experiments, shadows)

    async def publish(self) -> None:
        """Upserts this replica's windows that changed since the last publication (their pending
        inputs counted first)."""
        await self._live.count_inputs()
        payload = self._live.unpublished()
        if not payload:
            return
        try:
            await call("publish", self._windows.publish, payload)
        except StateUnavailableError:
            self._live.mark_unpublished([rollout_id for rollout_id, _, _ in payload])
            raise

    async def step(self) -> None:
        try:
            await self.refresh()
            await self.publish()
        except StateUnavailableError as exc:
            if not self._unreachable:
                log.warning(
                    "shared state unreachable: routing keeps the last known state",
                    extra={"state_version": self._applied.version, "error": str(exc)},
                )
            self._unreachable = True

    def _reachable(self) -> None:
        self._last_ok = time.monotonic()
        if self._unreachable:
            log.info("shared state reachable again", extra={"state_version": self._applied.version})
        self._unreachable = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="state-sync")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                await self.step()
            except Exception:
                log.exception("state sync step failed")

    async def close(self) -> None:
        """Stops polling after a last publication (best effort)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(StateUnavailableError):
            await self.publish()
