"""Training/serving skew and prediction consistency, each variant against its own profile."""

from __future__ import annotations

import numpy as np
import pytest

import drift_core
from finpredict.gateway.stats.skew import SCORE_COLUMN, prediction_consistency, training_serving_skew

NAMES = ["debt_service_coverage", "utilization", SCORE_COLUMN]


def _data(
    n: int, seed: int, *, dscr_scale: float = 1.0, shift: float = 0.0, score_shift: float = 0.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dscr = np.exp(rng.normal(0.3 + shift, 0.35, n)) * dscr_scale
    util = rng.beta(2, 3, n)
    score = np.clip(rng.beta(2, 8, n) + score_shift, 0, 1)
    return np.ascontiguousarray(np.column_stack([dscr, util, score]))


def _report(reference: np.ndarray, live: np.ndarray) -> drift_core.DriftReport:
    profile = drift_core.Profile.fit(reference, feature_names=NAMES, n_bins=10)
    return profile.histograms(live).report()


REF = _data(20_000, 1)


def test_a_candidate_trained_on_percent_is_skewed_on_that_feature() -> None:
    canary = _report(_data(20_000, 1, dscr_scale=100.0), _data(1000, 2))
    stable = _report(REF, _data(5000, 3))
    verdict = training_serving_skew(canary, stable)
    assert verdict.skewed
    assert verdict.judged
    assert verdict.worst is not None
    assert verdict.worst.name == "debt_service_coverage"
    assert "debt_service_coverage" in verdict.reason
    assert "PSI" in verdict.reason


@pytest.mark.parametrize(
    ("canary_ref", "live_shift", "skewed"),
    [
        (REF, 0.0, False),  # same population, same units
        (REF, 0.5, False),  # the population moved for both arms: not the candidate's skew
        (_data(20_000, 5, shift=0.5), 0.5, False),  # retrained on the moved population
    ],
)
def test_population_shift_is_not_skew(canary_ref: np.ndarray, live_shift: float, skewed: bool) -> None:
    canary = _report(canary_ref, _data(1000, 2, shift=live_shift))
    stable = _report(REF, _data(5000, 3, shift=live_shift))
    assert training_serving_skew(canary, stable).skewed is skewed


def test_a_missing_share_jump_is_skew() -> None:
    live = _data(1000, 2)
    live[:200, 1] = np.nan  # utilization missing for 20 % of canary requests only
    verdict = training_serving_skew(_report(REF, live), _report(REF, _data(5000, 3)))
    assert verdict.skewed
    assert verdict.worst is not None
    assert verdict.worst.name == "utilization"


def test_a_missing_share_gap_that_sampling_explains_is_not_skew() -> None:
    # the demo's good candidate: 40 % missing in its training month, 34 % in 500 live rows
    # (about 3 standard errors; PSI far below its limit): over the 5-point limit, but noise
    rng = np.random.default_rng(11)
    ref = _data(20_000, 1)
    ref[rng.random(20_000) < 0.40, 1] = np.nan
    live = _data(500, 2)
    live[:170, 1] = np.nan
    stable_ref, stable_live = _data(20_000, 4), _data(5000, 3)
    stable_ref[rng.random(20_000) < 0.35, 1] = np.nan
    stable_live[rng.random(5000) < 0.35, 1] = np.nan
    verdict = training_serving_skew(_report(ref, live), _report(stable_ref, stable_live))
    utilization = next(f for f in verdict.features if f.name == "utilization")
    assert utilization.missing_excess > 0.05  # over the limit alone ...
    assert not verdict.skewed, verdict.reason  # ... but within sampling noise at 500 rows
    # the same gap over 5,000 live rows is no longer noise
    many = _data(5000, 2)
    many[:1700, 1] = np.nan
    assert training_serving_skew(_report(ref, many), _report(stable_ref, stable_live)).skewed


def test_too_few_rows_are_not_judged() -> None:
    canary = _report(_data(20_000, 1, dscr_scale=100.0), _data(100, 2))
    verdict = training_serving_skew(canary, None, min_rows=500)
    assert not verdict.skewed
    assert not verdict.judged


@pytest.mark.parametrize(
    ("canary_score_shift", "stable_score_shift", "consistent"),
    [
        (0.0, 0.0, True),
        (0.3, 0.0, False),  # the candidate's scores moved alone: broken
        (0.3, 0.3, True),  # both moved: population shift
        (0.0, 0.3, True),  # stable moved, the (retrained) candidate did not
    ],
)
def test_prediction_consistency(
    canary_score_shift: float, stable_score_shift: float, consistent: bool
) -> None:
    canary = _report(REF, _data(2000, 2, score_shift=canary_score_shift))
    stable = _report(REF, _data(5000, 3, score_shift=stable_score_shift))
    verdict = prediction_consistency(canary, stable)
    assert verdict.consistent is consistent
    assert verdict.judged
    assert verdict.excess == pytest.approx(verdict.canary_psi - verdict.stable_psi)
