"""The rollout state machine and its store: steps, breaches, manual actions, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from finpredict.gateway.analysis import Verdict
from finpredict.gateway.rollout import Rollout, RolloutError, RolloutState, RolloutStore

ADVANCE = Verdict("advance", "within limits", {})
WAIT = Verdict("wait", "not enough traffic yet: canary 12/200", {})
ROLLBACK = Verdict("rollback", "score distribution drifted from stable: PSI 0.412 > 0.25", {})


def test_good_candidate_walks_every_step_then_asks_for_promotion() -> None:
    r = Rollout("credit-risk", stable_version=1, candidate_version=2)
    seen = [r.weight]
    for t in range(3):
        r.apply(WAIT, now=float(t))
        assert r.weight == seen[-1], "wait keeps the step"
        r.apply(ADVANCE, now=float(t) + 0.5)
        seen.append(r.weight)
    assert seen == [1.0, 5.0, 25.0, 100.0]
    assert r.state is RolloutState.PROMOTING
    r.mark_promoted(now=9.0)
    assert (r.state, r.weight, r.ended_at) == (RolloutState.PROMOTED, 100.0, 9.0)
    assert [d.verdict for d in r.decisions] == ["wait", "advance"] * 3 + ["promoted"]


def test_breach_rolls_back_at_once_with_the_reason() -> None:
    r = Rollout("credit-risk", 1, 2)
    r.apply(ADVANCE, now=1.0)
    r.apply(ROLLBACK, now=2.0)
    assert (r.state, r.weight) == (RolloutState.ROLLED_BACK, 0.0)
    assert r.decisions[-1].reason == ROLLBACK.reason
    assert r.decisions[-1].step_index == 1
    with pytest.raises(RolloutError, match="not progressing"):
        r.apply(ADVANCE, now=3.0)


def test_pause_resume_abort_and_manual_promotion() -> None:
    r = Rollout("credit-risk", 1, 2)
    r.pause("weekend freeze", now=1.0)
    with pytest.raises(RolloutError, match="not progressing"):
        r.apply(ADVANCE, now=2.0)
    assert r.weight == 1.0, "a paused canary keeps its traffic"
    r.resume("freeze over", now=3.0)
    r.request_promotion("hotfix", now=4.0)
    assert (r.state, r.weight) == (RolloutState.PROMOTING, 100.0)
    other = Rollout("credit-risk", 1, 3)
    other.abort("wrong candidate", now=1.0)
    assert (other.state, other.weight) == (RolloutState.ABORTED, 0.0)
    with pytest.raises(RolloutError, match="only a running rollout"):
        other.abort("again", now=2.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"steps": [1.0, 5.0]}, "must end at 100"),
        ({"steps": [5.0, 1.0, 100.0]}, "increasing"),
        ({"steps": [0.0, 100.0]}, "increasing percentages"),
        ({"candidate_version": 1}, "already the stable version"),
        ({"analysis_interval_s": 0.0}, "analysis_interval"),
        ({"min_requests_per_step": 0}, "min_requests_per_step"),
    ],
)
def test_invalid_rollouts_are_refused(kwargs: dict[str, object], message: str) -> None:
    args: dict[str, object] = {"model": "m", "stable_version": 1, "candidate_version": 2, **kwargs}
    with pytest.raises(RolloutError, match=message):
        Rollout(**args)  # type: ignore[arg-type]


def test_store_survives_a_restart_and_allows_one_active_rollout_per_model(tmp_path: Path) -> None:
    db = tmp_path / "rollouts.db"
    store = RolloutStore(db)
    r = Rollout("credit-risk", 1, 2, steps=[0.5, 10.0, 100.0])
    store.create(r)
    r.apply(ADVANCE, now=1.0)
    store.save(r)
    with pytest.raises(RolloutError, match="already has an active rollout"):
        store.create(Rollout("credit-risk", 1, 3))
    store.create(Rollout("fraud", 4, 5))
    store.close()

    reopened = RolloutStore(db)
    (resumed,) = [x for x in reopened.active() if x.model == "credit-risk"]
    assert (resumed.id, resumed.step_index, resumed.weight) == (r.id, 1, 10.0)
    assert resumed.split().salt == r.id, "customers keep their variant across the restart"
    assert resumed.decisions == r.decisions
    resumed.apply(ROLLBACK, now=2.0)
    reopened.save(resumed)
    reopened.create(Rollout("credit-risk", 1, 3))  # the model is free again
    assert {x.candidate_version for x in reopened.list("credit-risk")} == {2, 3}
    reopened.close()
