"""Sticky traffic assignment: which variant serves an entity.

An entity id is hashed (BLAKE2b, keyed by a per-rollout salt) to a point in [0, 1); the point
is compared with the cumulative weights of the variants. So:

- a customer stays on one variant for as long as the weights and salt stay the same,
- weights are exact to 1e-6 (0.5% and even 0.01% canaries work, unlike per-request coin flips
  in meshes with integer percentages),
- raising the canary weight from 5% to 25% keeps every customer already on the canary there
  (the canary owns the low end of the interval and only grows),
- a new salt (a new rollout) reshuffles who is in the canary.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

_SCALE = float(1 << 64)


def hash_point(entity_id: str, salt: str = "") -> float:
    """A stable pseudo-random point in [0, 1) for ``entity_id`` under ``salt``."""
    digest = hashlib.blake2b(entity_id.encode(), digest_size=8, key=salt.encode()[:64]).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class Arm:
    """One variant with its share of traffic in percent."""

    name: str
    version: int
    weight: float


class RoutingError(ValueError):
    """The arms do not describe a valid split (the message names the problem)."""


@dataclass(frozen=True)
class Split:
    """A weighted split of traffic over arms, assigned by entity hash."""

    arms: tuple[Arm, ...]
    salt: str = ""

    def __post_init__(self) -> None:
        if not self.arms:
            raise RoutingError("a split needs at least one arm")
        names = [a.name for a in self.arms]
        if len(set(names)) != len(names):
            raise RoutingError(f"arm names must be unique: {names}")
        for arm in self.arms:
            if not 0.0 <= arm.weight <= 100.0:
                raise RoutingError(f"arm {arm.name!r}: weight {arm.weight} is outside [0, 100]")
        total = sum(a.weight for a in self.arms)
        if abs(total - 100.0) > 1e-6:
            raise RoutingError(f"arm weights must add up to 100, not {total:g}")

    @classmethod
    def canary(cls, stable_version: int, canary_version: int, canary_percent: float, salt: str) -> Split:
        """Stable plus a canary at ``canary_percent``; the canary owns the low end of [0, 1)."""
        return cls(
            (
                Arm("canary", canary_version, canary_percent),
                Arm("stable", stable_version, 100.0 - canary_percent),
            ),
            salt,
        )

    def assign(self, entity_id: str) -> Arm:
        """The arm that serves ``entity_id``."""
        point = hash_point(entity_id, self.salt) * 100.0
        cumulative = 0.0
        for arm in self.arms:
            cumulative += arm.weight
            if point < cumulative:
                return arm
        return next(a for a in reversed(self.arms) if a.weight > 0)

    def weights(self) -> Sequence[tuple[str, float]]:
        return [(a.name, a.weight) for a in self.arms]
