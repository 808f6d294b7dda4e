"""Delayed labels in the live analysis, without servers: the predictions the monitor matched to
outcomes go to the arm that served them, by the rollout or experiment id they were logged with (the
open window of that rollout's variant, or that experiment's arm; a prediction served before or
outside them counts in none); every replica publishes its experiment counts to the shared state and
any replica sums them into per-arm statistics that cover the simulation's truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from prometheus_client import REGISTRY

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.gateway.canary_stats import arm_counts
from finpredict.gateway.experiment_stats import EXPERIMENT_WINDOW, experiment_statistics, merged_counts
from finpredict.gateway.live import LiveRollouts
from finpredict.gateway.policies import Experiment
from finpredict.gateway.rollout import Rollout
from finpredict.gateway.routing import Arm
from finpredict.gateway.state.db import create_state_engine, migrate, sqlite_url
from finpredict.gateway.state.windows import WindowStore

THRESHOLD = 0.3


def labelled(
    model: str,
    version: int,
    score: float,
    defaulted: bool,
    *,
    variant: str,
    rollout_id: str = "",
    experiment_id: str = "",
) -> monitor_pb2.LabelledPrediction:
    return monitor_pb2.LabelledPrediction(
        request_id=f"r-{version}-{score}",
        model=types_pb2.ModelRef(name=model, version=version),
        score=score,
        threshold=THRESHOLD,
        defaulted=defaulted,
        variant=variant,
        rollout_id=rollout_id,
        experiment_id=experiment_id,
    )


def _ignored() -> float:
    value = REGISTRY.get_sample_value("finpredict_gateway_outcomes_analysed_total", {"result": "ignored"})
    assert value is not None
    return value


def test_labels_go_to_the_rollout_arm_that_served_them() -> None:
    live = LiveRollouts()
    earlier = Rollout("credit", 1, 2, steps=[5.0, 100.0])  # ended, then restarted for the same version
    rollout = Rollout("credit", 1, 2, steps=[5.0, 100.0])
    live.apply([rollout])
    ignored = _ignored()
    live.record_outcomes(
        [
            labelled("credit", 2, 0.1, True, variant="canary", rollout_id=rollout.id),  # approved, defaulted
            labelled("credit", 2, 0.8, False, variant="canary", rollout_id=rollout.id),  # declined
            labelled("credit", 1, 0.2, False, variant="stable", rollout_id=rollout.id),  # approved
            # served by the same versions before this rollout: by stable alone, by the earlier rollout
            labelled("credit", 1, 0.1, True, variant="stable"),
            labelled("credit", 2, 0.1, True, variant="canary", rollout_id=earlier.id),
            labelled("credit", 1, 0.1, True, variant="stable", rollout_id=earlier.id),
            labelled("other", 2, 0.2, True, variant="stable"),  # a model without a rollout or an experiment
        ],
        {},
    )
    window = live.window(rollout.id)
    assert window is not None
    assert window.changed
    canary, stable = arm_counts(window.canary), arm_counts(window.stable)
    assert (canary.labeled, canary.labeled_approved, canary.labeled_approved_defaults) == (2, 1, 1)
    assert (stable.labeled, stable.labeled_approved, stable.labeled_approved_defaults) == (1, 1, 0)
    assert _ignored() == ignored + 4
    # published with the window: the leader reads the labels back from the shared state
    (_, _, text), *_ = live.unpublished()
    assert '"outcomes"' in text


def test_every_replicas_experiment_counts_add_up_to_intervals_that_cover_the_truth(tmp_path: Path) -> None:
    engine = create_state_engine(sqlite_url(tmp_path / "gateway.db"))
    migrate(engine)
    exp = Experiment("credit", [Arm("control", 1, 50.0), Arm("treatment", 2, 50.0)])
    truth = {"control": 0.05, "treatment": 0.25}  # P(default) of an applicant each arm served
    rng = np.random.default_rng(5)
    replicas = {
        name: (LiveRollouts(), WindowStore(engine, replica=name, source=f"{name}/1")) for name in "ab"
    }
    served = dict.fromkeys(truth, 0)
    for name, (live, store) in replicas.items():
        for i in range(1500):
            arm = exp.split().assign(f"{name}-{i}")
            score = float(rng.beta(2, 5))
            live.experiments.record(exp.id, arm.name, 1, ok=True, scores=[score], threshold=THRESHOLD)
            served[arm.name] += 1
            defaulted = bool(rng.random() < truth[arm.name])
            row = labelled("credit", arm.version, score, defaulted, variant=arm.name, experiment_id=exp.id)
            live.record_outcomes([row], {"credit": exp})
        store.publish(live.unpublished())
    live_a, store_a = replicas["a"]
    rows = store_a.read_rows(exp.id, EXPERIMENT_WINDOW)
    arms, contributed = merged_counts(rows, live_a.experiments.counts(exp.id), store_a.source, "a")
    assert contributed == 2
    assert {name: c.requests for name, c in arms.items()} == served
    (comparison,) = experiment_statistics(exp, arms)["comparisons"]
    by_arm = {a["arm"]: a for a in comparison["arms"]}
    for name, p in truth.items():
        rate = by_arm[name]["default_rate"]
        assert rate["lower"] <= p <= rate["upper"], (name, rate)
    effect = next(e for e in comparison["effects"] if e["metric"] == "default_rate")
    assert effect["lower"] <= truth["treatment"] - truth["control"] <= effect["upper"], effect
    assert comparison["recommendation"] == "stop_a_better"


def test_a_version_serving_in_several_arms_gets_each_arms_labels_to_that_arm() -> None:
    """One version in two arms of an experiment, and as the canary of a rollout of the same model:
    each label counts for the arm that served its prediction, and only there."""
    live = LiveRollouts()
    exp = Experiment("credit", [Arm("a", 2, 50.0), Arm("b", 2, 50.0)])
    rollout = Rollout("credit", 1, 2, steps=[5.0, 100.0])
    live.apply([rollout])
    ignored = _ignored()
    live.record_outcomes(
        [
            labelled("credit", 2, 0.1, True, variant="a", experiment_id=exp.id),
            labelled("credit", 2, 0.1, False, variant="b", experiment_id=exp.id),
            labelled("credit", 2, 0.8, True, variant="b", experiment_id=exp.id),
            labelled("credit", 2, 0.1, False, variant="canary", rollout_id=rollout.id),
            labelled("credit", 2, 0.1, True, variant="c", experiment_id=exp.id),  # no such arm
            labelled("credit", 2, 0.1, True, variant="a", experiment_id="stopped0000"),  # not running
        ],
        {"credit": exp},
    )
    arms = live.experiments.counts(exp.id)
    assert (arms["a"].labeled, arms["a"].labeled_approved_defaults) == (1, 1)
    assert (arms["b"].labeled, arms["b"].labeled_approved, arms["b"].labeled_approved_defaults) == (2, 1, 0)
    window = live.window(rollout.id)
    assert window is not None
    canary, stable = arm_counts(window.canary), arm_counts(window.stable)
    assert (canary.labeled, canary.labeled_approved_defaults, stable.labeled) == (1, 0, 0)
    assert _ignored() == ignored + 2
