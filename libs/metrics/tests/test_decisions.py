"""Decision metrics (approve when p < threshold): approval rates, demographic parity, accuracy,
confusion counts and the default rate, with hand-computed values and degenerate input."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from finpredict.metrics import (
    accuracy,
    approval_rate,
    approval_rates,
    approved,
    confusion,
    default_rate,
    demographic_parity_difference,
)

P = [0.1, 0.1, 0.3, 0.1, 0.3, 0.3, 0.1, 0.1, 0.1]
G = ["a", "a", "a", "b", "b", "b", "c", "c", "c"]


def test_a_score_equal_to_the_threshold_is_declined() -> None:
    assert approved([0.19, 0.2, 0.21], 0.2).tolist() == [True, False, False]
    assert approved([0.5, 0.5], [0.6, 0.4]).tolist() == [True, False]  # one threshold per score


@pytest.mark.parametrize(
    ("threshold", "rates", "dpd"),
    [
        (0.2, {"a": 2 / 3, "b": 1 / 3, "c": 1.0}, 2 / 3),
        (0.5, {"a": 1.0, "b": 1.0, "c": 1.0}, 0.0),  # everyone approved
        (0.1, {"a": 0.0, "b": 0.0, "c": 0.0}, 0.0),  # p == threshold: nobody approved
    ],
)
def test_approval_rates_and_demographic_parity(threshold: float, rates: dict[str, float], dpd: float) -> None:
    assert approval_rates(P, G, threshold) == pytest.approx(rates)
    assert demographic_parity_difference(P, G, threshold) == pytest.approx(dpd)


def test_groups_are_compared_as_text() -> None:
    assert approval_rates([0.1, 0.9, 0.1], [1, 1, 2], 0.5) == {"1": 0.5, "2": 1.0}
    assert demographic_parity_difference([0.1, 0.9], ["x", "x"], 0.5) == 0.0  # one group


@pytest.mark.parametrize(
    ("p", "threshold", "expected"),
    [(P, 0.2, 6 / 9), ([0.4, 0.6], 0.5, 0.5), ([0.4, 0.6], [0.3, 0.7], 0.5), ([0.4], 0.4, 0.0)],
)
def test_approval_rate(p: list[float], threshold: float | list[float], expected: float) -> None:
    assert approval_rate(p, threshold) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("y", "p", "threshold", "expected"),
    [
        ([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.6], 0.5, 0.5),  # declined [T, F, F, T]
        ([1, 0, 1, 0], [0.9, 0.1, 0.2, 0.6], [0.95, 0.5, 0.1, 0.7], 0.75),  # per-row thresholds
        ([True, False], [0.5, 0.49], 0.5, 1.0),  # p == threshold is declined
    ],
)
def test_accuracy(y: list[int], p: list[float], threshold: float | list[float], expected: float) -> None:
    assert accuracy(y, p, threshold) == pytest.approx(expected)


def test_confusion_counts_predicted_defaults_as_positives() -> None:
    y = [1, 1, 0, 0, 0]
    p = [0.9, 0.1, 0.8, 0.1, 0.5]
    assert confusion(y, p, 0.5) == {"tp": 1, "fn": 1, "fp": 2, "tn": 1}


@pytest.mark.parametrize(("y", "expected"), [([1, 0, 0, 1], 0.5), ([True, False, False], 1 / 3), ([0], 0.0)])
def test_default_rate(y: list[int], expected: float) -> None:
    assert default_rate(y) == pytest.approx(expected)


@pytest.mark.parametrize(
    "value",
    [
        lambda: approval_rate([], 0.5),
        lambda: demographic_parity_difference([], [], 0.5),
        lambda: accuracy([], [], 0.5),
        lambda: default_rate([]),
    ],
    ids=["approval_rate", "demographic_parity_difference", "accuracy", "default_rate"],
)
def test_undefined_without_rows_is_nan(value: Callable[[], float]) -> None:
    assert math.isnan(value())


def test_empty_confusion_and_rates() -> None:
    assert confusion([], [], 0.5) == {"tp": 0, "fp": 0, "tn": 0, "fn": 0}
    assert approval_rates(np.array([]), np.array([]), 0.5) == {}
