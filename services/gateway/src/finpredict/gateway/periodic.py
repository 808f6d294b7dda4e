"""A coroutine run every few seconds in a task of its own, until closed (the rollout controller's
analysis loop, the hand-off watcher's look at the registry)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable


class Periodic:
    """Runs ``tick`` every ``interval_s``; a failed tick is logged and the next one runs as planned.
    Exceptions of the ``expected`` types (a dependency away for a while) are logged at DEBUG, any
    other with its traceback."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], Awaitable[object]],
        interval_s: float,
        log: logging.Logger,
        expected: tuple[type[BaseException], ...] = (),
    ) -> None:
        self.name = name
        self._tick = tick
        self._interval = interval_s
        self._log = log
        self._expected = expected
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._loop(), name=self.name)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            try:
                await self._tick()
            except self._expected as exc:
                self._log.debug("%s: %s", self.name, exc)
            except Exception:
                self._log.exception("%s failed", self.name)
            await asyncio.sleep(self._interval)
