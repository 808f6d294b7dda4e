"""One request's groups reach the rollout window together.

A request whose applications are split between stable and the canary is scored as two concurrent
model-server calls. If each group were recorded when its own call returned, an analysis tick
between the two would count stable's rows and not yet the canary's: a split that does not match
its weights, which the sample-ratio test halts on (found by the 14-day scheduled-retraining
replay). The groups are recorded together once both have answered, and a failed group is
recorded too. Each group carries the size of its whole call: a canary group of one application
from a batch call is not a single-application call (the latency SLO judges only those).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, cast

import grpc
import pytest

from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as ms_pb
from finpredict.gateway.backend import BackendError, Scored
from finpredict.gateway.catalog import VersionInfo
from finpredict.gateway.scoring import Application, ScoringCore

MODEL = "credit-default"
STABLE, CANARY = 1, 2


@dataclass
class _Arm:
    name: str
    version: int


@dataclass
class _Split:
    def assign(self, entity_id: str) -> _Arm:
        return _Arm("canary", CANARY) if entity_id.startswith("c") else _Arm("stable", STABLE)


@dataclass
class _Rollout:
    id: str = "r1"
    step_index: int = 0
    stable_version: int = STABLE


@dataclass
class _Live:
    recorded: list[tuple[str, int, bool, int]] = field(default_factory=list)

    def record_batch(
        self, rollout_id: str, variant: str, n: int, *, ok: bool, call_size: int, **_: Any
    ) -> None:
        self.recorded.append((variant, n, ok, call_size))


@dataclass
class _Controller:
    live: _Live = field(default_factory=_Live)

    def active(self, model: str) -> _Rollout:
        return _Rollout()

    def split(self, rollout: _Rollout) -> _Split:
        return _Split()


class _Catalog:
    async def production(self, model: str) -> int:
        return STABLE

    async def version(self, model: str, version: int) -> VersionInfo:
        return VersionInfo(model, version, types_pb2.FeatureSchema(), 0.5)


class _Backend:
    """Stable answers at once; the canary when released (or fails, when told to)."""

    def __init__(self, *, canary_fails: bool = False) -> None:
        self.stable_answered = asyncio.Event()
        self.release_canary = asyncio.Event()
        self.canary_fails = canary_fails

    async def predict(self, model: str, version: int, rows: list[ms_pb.FeatureRow], **_: Any) -> Scored:
        if version == CANARY:
            await self.release_canary.wait()
            if self.canary_fails:
                raise BackendError(grpc.StatusCode.UNAVAILABLE, "canary down")
        else:
            self.stable_answered.set()
        return Scored([ms_pb.Prediction(score=0.1) for _ in rows], 0.5)


def _core(backend: _Backend, controller: _Controller) -> ScoringCore:
    policies = cast(Any, type("P", (), {"experiments": {}, "shadows": {}})())
    return ScoringCore(cast(Any, _Catalog()), cast(Any, backend), cast(Any, controller), policies, None)


@pytest.mark.parametrize("canary_fails", [False, True])
async def test_a_split_request_is_recorded_only_when_every_group_has_answered(canary_fails: bool) -> None:
    backend, controller = _Backend(canary_fails=canary_fails), _Controller()
    core = _core(backend, controller)
    apps = [Application(entity_id=e, features={}) for e in ("s1", "s2", "s3", "c1")]
    task = asyncio.create_task(core.score(MODEL, apps))
    await asyncio.wait_for(backend.stable_answered.wait(), timeout=5)
    # the stable group's call has returned (recording it eagerly would have happened by now)
    assert controller.live.recorded == []  # stable answered, the canary not yet: nothing counted
    backend.release_canary.set()
    results = await asyncio.wait_for(task, timeout=5)
    assert len(results) == 4
    assert sorted(controller.live.recorded) == sorted(
        [("stable", 3, True, 4), ("canary", 1, not canary_fails, 4)]
    )


async def test_a_single_application_call_is_recorded_as_one() -> None:
    backend, controller = _Backend(), _Controller()
    backend.release_canary.set()
    core = _core(backend, controller)
    await asyncio.wait_for(core.score(MODEL, [Application(entity_id="c1", features={})]), timeout=5)
    assert controller.live.recorded == [("canary", 1, True, 1)]
