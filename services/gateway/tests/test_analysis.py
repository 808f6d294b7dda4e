"""Canary analysis: wait without traffic, roll back on each kind of breach, advance otherwise."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from finpredict.gateway.analysis import Thresholds, VariantWindow, analyze
from finpredict.gateway.canary_stats import arm_counts
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
        ({"latency_ms": 80.0}, "> SLO 50.0 ms"),
        ({"latency_ms": 12.0}, "x stable's"),
        ({"score_shift": 0.25}, "PSI"),
    ],
)
def test_rolls_back_on_each_breach_naming_it(canary_kwargs: dict[str, float], reason_fragment: str) -> None:
    verdict = analyze(_window(2000, seed=1), _window(500, seed=2, **canary_kwargs), Thresholds(), MIN)
    assert verdict.action == "rollback"
    assert reason_fragment in verdict.reason, verdict.reason


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


def test_auc_matches_sklearn_with_ties() -> None:
    w = VariantWindow()
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(500), 1)  # many ties
    labels = rng.random(500) < scores
    w.record_outcomes(scores.tolist(), labels.tolist(), 0.5)
    assert w.auc() == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert math.isnan(VariantWindow().auc())
