"""One canary analysis: what each check decides, the alpha split, and the record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from finpredict.gateway.stats.counts import ArmCounts, Stratum
from finpredict.gateway.stats.evaluate import CanaryEvidence, evaluate
from finpredict.gateway.stats.limits import StatLimits


def _arm(
    n: int,
    rng: np.random.Generator,
    *,
    errors: int = 0,
    labels: int = 0,
    odds: float = 1.0,
    squeeze: float | None = None,
) -> ArmCounts:
    """``n`` requests, ``errors`` of them failed, the first ``labels`` scored ones labelled."""
    p = rng.beta(1.5, 10, n - errors)
    served = p * odds / (1 - p + p * odds)
    if squeeze is not None:  # scores pushed toward 0.5
        served = 0.5 + (served - 0.5) * squeeze
    arm = ArmCounts()
    arm.add_requests(requests=n, errors=errors, scores=served, threshold=0.2)
    arm.add_outcomes(served[:labels], rng.random(labels) < p[:labels], threshold=0.2)
    return arm


def test_alpha_is_split_over_the_gating_tests() -> None:
    limits = StatLimits()
    assert "approval_rate" not in limits.gating()
    assert sum(limits.alpha_for(m) for m in limits.gating()) == pytest.approx(0.05)
    assert limits.alpha_for("approval_rate") == 0.05  # report-only: its own interval at alpha
    gating = StatLimits(approval_rate_margin=0.05)
    assert "approval_rate" in gating.gating()
    assert sum(gating.alpha_for(m) for m in gating.gating()) == pytest.approx(0.05)


def test_a_healthy_canary_passes_and_the_record_is_json() -> None:
    rng = np.random.default_rng(1)
    strata = [Stratum.canary(0.1, _arm(9000, rng, labels=3000), _arm(1000, rng, labels=1000))]
    verdict = evaluate(CanaryEvidence(strata))
    assert verdict.action == "pass"
    assert not verdict.reasons
    doc = json.loads(json.dumps(verdict.to_dict(), allow_nan=False))
    assert {t["metric"] for t in doc["tests"]} == {
        "error_rate",
        "approval_rate",
        "default_rate",
        "auc",
        "latency_slo",
        "latency_ratio",
    }
    auc = next(t for t in doc["tests"] if t["metric"] == "auc")
    assert auc["n_canary"] == 1000
    # gating shares: error rate, default rate, AUC 0.2 each; calibration 0.1 x 2; latency 0.1 x 2
    assert auc["alpha_spent"] == pytest.approx(0.05 * 0.2 / 1.0)
    assert doc["calibration"]["labeled"] == 1000
    assert doc["expected"]["canary"]["n"] == 1000


@pytest.mark.parametrize(
    ("canary_kwargs", "canary_n", "check"),
    [
        ({"errors": 300}, 1000, "error_rate"),  # +30 points of errors
        ({"labels": 3000, "odds": 0.5}, 3000, "calibration"),
        ({"squeeze": 0.3}, 2000, "estimate"),  # no labels needed: the expected AUC collapses
    ],
)
def test_a_broken_canary_rolls_back_naming_the_check(
    canary_kwargs: dict[str, float], canary_n: int, check: str
) -> None:
    rng = np.random.default_rng(2)
    stable = _arm(9 * canary_n, rng, labels=3 * canary_n)
    strata = [Stratum.canary(0.1, stable, _arm(canary_n, rng, **canary_kwargs))]  # type: ignore[arg-type]
    verdict = evaluate(CanaryEvidence(strata))
    assert verdict.action == "rollback"
    assert check in verdict.checks


def test_label_tests_wait_for_enough_labels() -> None:
    rng = np.random.default_rng(3)
    strata = [Stratum.canary(0.1, _arm(9000, rng, labels=3000), _arm(1000, rng, labels=50))]
    tests = {t.metric: t for t in evaluate(CanaryEvidence(strata)).tests}
    assert not tests["auc"].informative
    assert not tests["default_rate"].informative
    assert tests["error_rate"].informative


def test_a_broken_split_halts() -> None:
    rng = np.random.default_rng(4)
    strata = [Stratum.canary(0.01, _arm(9800, rng), _arm(200, rng))]
    verdict = evaluate(CanaryEvidence(strata))
    assert verdict.action == "halt"
    assert verdict.checks[0] == "sample_ratio"
