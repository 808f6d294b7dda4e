"""The controller lease: exactly one replica runs the rollout analysis, and a stale one writes nothing.

The lease is one row (holder, token, expiry). A replica acquires it when it has expired (or is
free, or names this replica: a restarted gateway takes its lease back at once), which
increments the token; the holder renews it every third of the lease period. Every decision
the holder writes first checks, in the same transaction, that the lease still has its holder
and token and has not expired (:meth:`Fence.holds`, which also locks the row, so a takeover
waits for the write or the write sees the takeover): a replica that was paused, partitioned or
slow past its lease affects 0 rows and writes nothing (fencing). Another replica takes over
within ``period + period / 3`` of the leader's last renewal, inside two lease periods.

Expiry times are the replicas' wall clocks (NTP-synchronised hosts; the lease period is
seconds, the skew milliseconds). The fencing token, not the clock, keeps two leaders from
writing.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, or_, select, update

from finpredict.gateway import metrics
from finpredict.gateway.state.db import UNAVAILABLE_ERRORS, read_tx, write_tx
from finpredict.gateway.state.schema import CONTROLLER_LEASE, leases

log = logging.getLogger("finpredict.gateway.lease")


class LeaseLostError(RuntimeError):
    """A write under a lease this replica no longer holds; nothing was written."""


@dataclass(frozen=True)
class Fence:
    """Proof of having been granted the lease: the holder and the token it got."""

    holder: str
    token: int
    name: str = CONTROLLER_LEASE

    def holds(self, conn: Connection, now: float) -> bool:
        """Inside a write transaction: locks the lease row; True while it still has this holder and
        token and has not expired at ``now``. Write only if so."""
        t = leases
        return (
            conn.execute(
                update(t)
                .where(
                    t.c.name == self.name,
                    t.c.holder == self.holder,
                    t.c.token == self.token,
                    t.c.expires_at > now,
                )
                .values(token=t.c.token)
            ).rowcount
            == 1
        )


@dataclass(frozen=True)
class LeaseHolder:
    """Who holds the lease as the database says."""

    holder: str
    token: int
    expires_at: float


class Lease:
    """Acquires, renews and releases one lease row for ``holder`` (blocking calls)."""

    def __init__(
        self,
        engine: Engine,
        holder: str,
        period_s: float,
        *,
        name: str = CONTROLLER_LEASE,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self.holder = holder
        self.period_s = period_s
        self.name = name
        self._clock = clock

    def acquire_or_renew(self, fence: Fence | None) -> Fence | None:
        """Renews ``fence`` while it is current, else acquires the lease if it is free, expired or
        names this holder (a new token). None: another replica holds it."""
        t = leases
        now = self._clock()
        expires = now + self.period_s
        with write_tx(self._engine) as conn:
            if fence is not None:
                mine = (t.c.holder == self.holder, t.c.token == fence.token, t.c.expires_at > now)
                renewed = conn.execute(
                    update(t).where(t.c.name == self.name, *mine).values(expires_at=expires)
                ).rowcount
                if renewed == 1:
                    return fence
            free = or_(t.c.expires_at <= now, t.c.holder == "", t.c.holder == self.holder)
            token = conn.execute(
                update(t)
                .where(t.c.name == self.name, free)
                .values(holder=self.holder, token=t.c.token + 1, expires_at=expires)
                .returning(t.c.token)
            ).scalar_one_or_none()
        return Fence(self.holder, int(token), self.name) if token is not None else None

    def release(self, fence: Fence) -> bool:
        """Gives the lease up (a clean shutdown: another replica takes over at its next try)."""
        t = leases
        with write_tx(self._engine) as conn:
            mine = (t.c.name == self.name, t.c.holder == fence.holder, t.c.token == fence.token)
            return conn.execute(update(t).where(*mine).values(holder="", expires_at=0.0)).rowcount == 1

    def current(self) -> LeaseHolder:
        t = leases
        with read_tx(self._engine) as conn:
            row = conn.execute(
                select(t.c.holder, t.c.token, t.c.expires_at).where(t.c.name == self.name)
            ).one()
        return LeaseHolder(str(row[0]), int(row[1]), float(row[2]))


class LeaseKeeper:
    """Holds the lease for this replica in the background: renews it every third of the period
    while held, tries to acquire it as often otherwise. ``fence`` is the current grant (None when
    another replica leads); the database, not this copy, decides whether a write may happen."""

    def __init__(self, lease: Lease) -> None:
        self.lease = lease
        self.fence: Fence | None = None
        self._task: asyncio.Task[None] | None = None
        self._unreachable = False

    @property
    def interval_s(self) -> float:
        return self.lease.period_s / 3

    async def step(self) -> None:
        """One renewal or acquisition attempt."""
        before = self.fence
        try:
            after = await asyncio.to_thread(self.lease.acquire_or_renew, before)
        except UNAVAILABLE_ERRORS as exc:
            metrics.STATE_ERRORS_TOTAL.labels("lease").inc()
            if not self._unreachable:
                log.warning("cannot renew or acquire the controller lease: %s", type(exc).__name__)
            self._unreachable = True
            return
        self._unreachable = False
        self._set(after)

    def lost(self, fence: Fence, why: str) -> None:
        """A write under ``fence`` was refused: stop acting as the controller until re-acquired."""
        if self.fence == fence:
            log.warning(
                "lost the controller lease: %s", why, extra={"replica": fence.holder, "token": fence.token}
            )
            self._set(None, logged=True)

    def _set(self, fence: Fence | None, *, logged: bool = False) -> None:
        before, self.fence = self.fence, fence
        metrics.CONTROLLER_LEADER.set(1 if fence is not None else 0)
        if fence is not None and fence != before:
            log.info("became the rollout controller", extra={"replica": fence.holder, "token": fence.token})
        elif fence is None and before is not None and not logged:
            log.warning(
                "lost the controller lease: another replica holds it",
                extra={"replica": before.holder, "token": before.token},
            )

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="controller-lease")

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.step()
            except Exception:
                log.exception("controller lease step failed")

    async def close(self) -> None:
        """Stops renewing and releases the lease (so another replica takes over at once)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        fence, self.fence = self.fence, None
        metrics.CONTROLLER_LEADER.set(0)
        if fence is not None:
            with contextlib.suppress(*UNAVAILABLE_ERRORS):
                await asyncio.to_thread(self.lease.release, fence)
