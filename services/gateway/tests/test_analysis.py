"""Canary analysis: wait without traffic, roll back on each kind of breach, advance otherwise
(latency is reported by the window and judged by the statistics: test_latency_stats.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from finpredict.gateway.analysis import Thresholds, VariantWindow, analyze
from finpredict.gateway.canary_stats import arm_counts, stat_limits
from finpredict.gateway.stats import CanaryEvidence, Stratum, evaluate

MIN = 200


def _window(
    n: int,
    *,
    seed: int,
    error_rate: float = 0.0,
    latency_ms: float = 5.0,
    score_shift: float = 0.0,
    label_noise: float | None = None,
) -> VariantWindow:
    rng = np.random.default_rng(seed)
    w = VariantWindow()
    scores = np.clip(rng.beta(2, 8, n) + score_shift, 0, 1)
    fails = rng.random(n) < error_rate
    for i in range(n):
        w.record(ok=not fails[i], latency_ms=float(rng.gamma(4, latency_ms / 4)), score=float(scores[i]))
    if label_noise is not None:
        defaulted = rng.random(n) < scores  # labels follow the scores ...
        flip = rng.random(n) < label_noise  # ... except for a share of noise
        w.record_outcomes(scores.tolist(), (defaulted ^ flip).tolist(), 0.5)
    return w


def test_waits_for_enough_traffic_and_says_so() -> None:
    verdict = analyze(_window(1000, seed=1), _window(37, seed=2), Thresholds(), MIN)
    assert verdict.action == "wait"
    assert "canary 37/200" in verdict.reason


def test_advances_when_canary_behaves_like_stable() -> None:
    verdict = analyze(_window(2000, seed=1), _window(500, seed=2), Thresholds(), MIN)
    assert verdict.action == "advance", verdict.reason
    assert verdict.metrics["score_psi"] < 0.1


@pytest.mark.parametrize(
    ("canary_kwargs", "reason_fragment"),
    [
        ({"error_rate": 0.05}, "error rate"),
        ({"score_shift": 0.25}, "PSI"),
    ],
)
def test_rolls_back_on_each_breach_naming_it(canary_kwargs: dict[str, float], reason_fragment: str) -> None:
    verdict = analyze(_window(2000, seed=1), _window(500, seed=2, **canary_kwargs), Thresholds(), MIN)
    assert verdict.action == "rollback"
    assert reason_fragment in verdict.reason, verdict.reason


@pytest.mark.parametrize(("canary_latency_ms", "test"), [(80.0, "latency_slo"), (15.0, "latency_ratio")])
def test_latency_is_reported_by_the_window_and_judged_by_the_statistics(
    canary_latency_ms: float, test: str
) -> None:
    """A raw p99 of one window decides nothing (at 1 % canary it is the maximum of a few dozen
    calls); the statistics' latency tests over every call since the start roll the canary back."""
    stable, canary = _window(2000, seed=1), _window(500, seed=2, latency_ms=canary_latency_ms)
    verdict = analyze(stable, canary, Thresholds(), MIN)
    assert verdict.action == "advance", verdict.reason
    assert verdict.metrics["canary_p99_ms"] > verdict.metrics["stable_p99_ms"]
    statistics = evaluate(CanaryEvidence([Stratum.canary(0.2, arm_counts(stable), arm_counts(canary))]))
    assert statistics.action == "rollback"
    assert test in statistics.checks, statistics.reasons


def test_labels_report_the_window_auc_and_the_statistics_roll_back_an_auc_drop() -> None:
    """The window only reports each variant's AUC (a fixed limit re-tested at every window would roll
    back good models by chance); the statistics' always-valid AUC test rolls the canary back."""
    stable = _window(2000, seed=1, label_noise=0.0)
    canary = _window(800, seed=2, label_noise=0.3)
    verdict = analyze(stable, canary, Thresholds(), MIN)
    assert verdict.action == "advance", verdict.reason
    assert verdict.metrics["stable_auc"] - verdict.metrics["canary_auc"] > 0.1
    restored = VariantWindow.from_dict(canary.to_dict())
    assert restored.labeled == canary.labeled == 800
    strata = [Stratum.canary(0.25, arm_counts(stable), arm_counts(restored))]
    statistics = evaluate(CanaryEvidence(strata))
    assert statistics.action == "rollback"
    assert "auc" in statistics.checks, statistics.reasons


def test_max_auc_drop_is_the_margin_of_the_always_valid_auc_test() -> None:
    """A rollout's ``max_auc_drop`` is its AUC test's non-inferiority margin: the test rolls back when
    the always-valid bound shows canary AUC < stable AUC - max_auc_drop, not for a drop within it,
    spends its share of the rollout's alpha, and records margin, statistic, bound and sample sizes."""
    stable = _window(3000, seed=1, label_noise=0.0)
    canary = _window(1500, seed=2, label_noise=0.3)
    drop = stable.auc() - canary.auc()
    assert drop > 0.1
    strata = [Stratum.canary(0.25, arm_counts(stable), arm_counts(canary))]
    for max_auc_drop, rolls_back in ((Thresholds().max_auc_drop, True), (drop + 0.1, False)):
        limits = stat_limits(Thresholds(max_auc_drop=max_auc_drop))
        statistics = evaluate(CanaryEvidence(strata), limits)
        (auc,) = [t for t in statistics.tests if t.metric == "auc"]
        assert (auc.margin, auc.worse, auc.reject) == (max_auc_drop, "lower", rolls_back)
        assert auc.estimate == pytest.approx(-drop, abs=0.01)
        assert (auc.upper < -max_auc_drop) is rolls_back  # the confidence sequence's upper end
        assert (auc.statistic < -auc.bound) is rolls_back  # the same, as the statistic at the margin
        assert (auc.n_canary, auc.n_stable) == (1500, 3000)
        assert auc.alpha_spent == limits.alpha_for("auc") < limits.alpha
        assert sum(limits.alpha_for(m) for m in limits.gating()) == pytest.approx(limits.alpha)
        named = [r for r in statistics.reasons if f"auc: {auc.estimate:+.4f}" in r]
        assert bool(named) is rolls_back, statistics.reasons
        assert all(f"margin {max_auc_drop:g}" in r for r in named)
        recorded = next(t for t in statistics.to_dict()["tests"] if t["metric"] == "auc")
        assert recorded["margin"] == max_auc_drop
        assert {"statistic", "bound", "n_canary", "n_stable", "alpha_spent"} <= set(recorded)


def test_auc_matches_sklearn_with_ties() -> None:
    w = VariantWindow()
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 1)  # many ties
    labels = rng.random(500) < scores
    w.record_outcomes(scores.tolist(), labels.tolist(), 0.5)
    assert w.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(VariantWindow().auc())
