"""Retries with capped exponential back-off and jitter, bounded by one overall deadline.

Only ``UNAVAILABLE`` and ``RESOURCE_EXHAUSTED`` are retried: they mean "not now", and scoring
with the same request id is idempotent. Everything else (``INVALID_ARGUMENT``,
``UNAUTHENTICATED``, ``DEADLINE_EXCEEDED`` ...) is final.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

RETRYABLE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED})


@dataclass(frozen=True)
class RetryPolicy:
    """How a call is retried.

    The ``n``-th retry (``n`` = 1, 2, ...) waits ``min(max_backoff_s, initial_backoff_s *
    multiplier ** (n - 1))`` scaled by a random factor in ``[1 - jitter, 1]`` (``jitter=1`` is
    "full jitter"). No wait ever runs past the call's deadline: when the next attempt could not
    start before it, the call fails with :class:`~finpredict.client.DeadlineExceededError` at once.
    """

    max_attempts: int = 5
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 2.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if self.initial_backoff_s < 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError("need 0 <= initial_backoff_s <= max_backoff_s")
        if self.multiplier < 1:
            raise ValueError("multiplier must be at least 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be in [0, 1]")

    def backoff(self, retry: int, rand: float) -> float:
        """Seconds to wait before retry number ``retry`` (1-based); ``rand`` is uniform in [0, 1)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * self.multiplier ** (retry - 1))
        return base * (1.0 - self.jitter * rand)

    @staticmethod
    def retryable(code: grpc.StatusCode) -> bool:
        return code in RETRYABLE_CODES


NO_RETRY = RetryPolicy(max_attempts=1)


class Deadline:
    """An absolute deadline on the monotonic clock (``None`` seconds: no deadline)."""

    def __init__(self, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds is not None and seconds <= 0:
            raise ValueError("timeout must be positive")
        self._clock = clock
        self._at = None if seconds is None else clock() + seconds

    def remaining(self) -> float | None:
        """Seconds left (never negative), or ``None`` without a deadline."""
        if self._at is None:
            return None
        return max(0.0, self._at - self._clock())


def jitter_source() -> Callable[[], float]:
    """The random source of back-off jitter (its own generator: never the global one)."""
    return random.Random().random
