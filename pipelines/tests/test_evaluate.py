"""The compute gate of the ``evaluate`` stage: the p99 of every timing of every round (never the
best round), with what it timed stated in its detail."""

from __future__ import annotations

from finpredict.pipelines.evaluate import ComputeTimes, compute_gate

FAST = [1.0] * 100


def test_one_slow_round_fails_the_gate_however_fast_the_others_are() -> None:
    slow = [1.0] * 90 + [80.0] * 10  # 10 of 300 timings (3.3%) at 80 ms
    gate = compute_gate(ComputeTimes([FAST, slow, FAST]), 50.0)
    assert (gate.name, gate.comparator, gate.threshold) == ("compute_p99_ms", "<=", 50.0)
    assert gate.value == 80.0  # the best round's p99 is 1 ms
    assert not gate.passed
    assert gate.detail == (
        "p99 of 300 in-process single-row predictions (feature dict -> probability, nthread=1, "
        "no server), pooled over 3 rounds of 100 rows; p99 by round [1.0, 80.0, 1.0] ms"
    )


def test_the_gate_is_not_the_worst_round_either() -> None:
    two_slow = [1.0] * 98 + [80.0] * 2  # that round's p99 is 80 ms; 2 of 300 pooled timings (0.7%)
    gate = compute_gate(ComputeTimes([FAST, two_slow, FAST]), 50.0)
    assert gate.value == 1.0
    assert gate.passed
    assert "p99 by round [1.0, 80.0, 1.0] ms" in gate.detail
