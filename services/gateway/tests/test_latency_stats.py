"""Latency in the canary analysis: the per-application SLO judged on single-application calls with
always-valid tests of the share slower than it (not raw p99s of small windows), batch calls
measured apart, and a hold instead of a rollback when both variants are over the SLO."""

from __future__ import annotations

import numpy as np
import pytest

from finpredict.gateway.analysis import Thresholds, VariantWindow, analyze
from finpredict.gateway.canary_stats import arm_counts, combine, stat_limits
from finpredict.gateway.stats import ArmCounts, CanaryEvidence, StatLimits, Stratum, comparisons, evaluate
from finpredict.gateway.stats.latency import latency_tests, quantile_ms, slower_than
from finpredict.gateway.stats.sequential import Evidence, decide

MIN = 200


def _calls(n: int, median_ms: float, *, seed: int, batch: int = 1) -> VariantWindow:
    """A window of ``n`` calls of ``batch`` applications each, log-normal latencies (sigma 0.45)."""
    rng = np.random.default_rng(seed)
    w = VariantWindow()
    for ms in rng.lognormal(np.log(median_ms), 0.45, n):
        w.record_batch(batch, ok=True, latency_ms=float(ms), scores=rng.beta(2, 8, batch).tolist())
    return w


def _judge(stable: VariantWindow, canary: VariantWindow, limits: Thresholds | None = None) -> tuple[str, str]:
    """The verdict of one analysis of a rollout whose one stratum is these windows (its weight as
    the requests split, so the sample ratio holds)."""
    limits = limits or Thresholds()
    window = analyze(stable, canary, limits, MIN)
    weight = canary.requests / (canary.requests + stable.requests)
    strata = [Stratum.canary(weight, arm_counts(stable), arm_counts(canary))]
    statistics = evaluate(CanaryEvidence(strata), stat_limits(limits))
    verdict = combine(window, statistics)
    return verdict.action, verdict.reason


def test_batch_calls_are_counted_as_requests_but_their_latency_apart() -> None:
    w = VariantWindow()
    w.record_batch(200, ok=True, latency_ms=80.0, scores=[0.1] * 200)  # a batch call
    w.record_batch(1, ok=True, latency_ms=80.0, scores=[0.1], call_size=200)  # its canary group of one
    w.record(ok=True, latency_ms=4.0, score=0.1)  # a single-application call
    w.record(ok=False, latency_ms=9.0)
    assert (w.requests, w.errors, w.calls) == (203, 1, 2)
    assert int(w.batch_latency_counts.sum()) == 2  # once per call, not once per application
    assert w.batch_latency_ms(0.99) == pytest.approx(80.0, rel=0.03)
    assert slower_than(w.latency_counts, 8.0) == 1  # the 80 ms calls are not single-application ones
    assert slower_than(w.latency_counts, 50.0) == 0
    counts = arm_counts(w)
    assert counts.calls == 2
    assert counts.requests == 203


def test_windows_and_counts_published_before_the_split_still_load() -> None:
    w = _calls(50, 5.0, seed=1, batch=3)
    w.record(ok=True, latency_ms=7.0, score=0.2)
    doc = w.to_dict()
    restored = VariantWindow.from_dict(doc)
    assert np.array_equal(restored.batch_latency_counts, w.batch_latency_counts)
    assert restored.calls == 1
    old = {k: v for k, v in doc.items() if k != "batch_latency"}  # a replica of the previous release
    assert int(VariantWindow.from_dict(old).batch_latency_counts.sum()) == 0
    counts = arm_counts(w).to_dict()
    assert ArmCounts.from_dict(counts).calls == 1
    del counts["latency"]
    assert ArmCounts.from_dict(counts).calls == 0


def test_the_histogram_reads_quantiles_and_shares_within_a_bucket() -> None:
    w = _calls(2000, 10.0, seed=2)
    exact = np.sort(np.random.default_rng(2).lognormal(np.log(10.0), 0.45, 2000))
    assert quantile_ms(w.latency_counts, 0.99) == pytest.approx(np.quantile(exact, 0.99), rel=0.03)
    for limit in (12.0, 25.0):  # a call counts as slower when its whole bucket (2.5 % wide) is
        assert (exact > limit * 1.025).sum() <= slower_than(w.latency_counts, limit) <= (exact > limit).sum()


def test_slow_batches_are_not_an_application_over_the_slo() -> None:
    """The old judgement counted a 200-application batch of 80 ms as 200 requests of 80 ms against the
    per-application SLO of 50 ms; now batches are reported per call and nothing is judged on them."""
    stable, canary = _calls(30, 80.0, seed=3, batch=200), _calls(10, 80.0, seed=4, batch=200)
    action, reason = _judge(stable, canary)
    assert action == "advance", reason
    assert "batch p99" in reason


def test_identical_latencies_advance_and_record_the_tests() -> None:
    stable, canary = _calls(3000, 8.0, seed=5), _calls(1000, 8.0, seed=6)
    action, reason = _judge(stable, canary)
    assert action == "advance", reason
    assert "per application" in reason
    strata = [Stratum.canary(0.25, arm_counts(stable), arm_counts(canary))]
    statistics = evaluate(CanaryEvidence(strata))
    tests = {t.metric: t for t in statistics.tests}
    for metric in ("latency_slo", "latency_ratio"):
        t = tests[metric]
        assert not t.reject
        assert t.informative
        assert (t.n_canary, t.n_stable, t.margin) == (1000, 3000, 0.01)
        assert t.alpha_spent == pytest.approx(StatLimits().alpha_for(metric))
    assert statistics.to_dict()["latency"]["hold"] == ""


def test_a_canary_over_the_slo_while_stable_is_not_rolls_back() -> None:
    action, reason = _judge(_calls(3000, 8.0, seed=7), _calls(1000, 30.0, seed=8))
    assert action == "rollback"
    assert "slower than the 50 ms SLO" in reason
    assert "latency_slo" in reason


def test_a_canary_much_slower_than_stable_rolls_back_on_the_ratio() -> None:
    """Both within the SLO, the canary 2.4x slower: about 10 % of its calls are slower than 1.5x
    stable's p99."""
    action, reason = _judge(_calls(3000, 5.0, seed=9), _calls(1000, 12.0, seed=10))
    assert action == "rollback"
    assert "1.5x stable's p99" in reason
    assert "latency_ratio" in reason
    assert "SLO" not in reason


def test_both_over_the_slo_holds_the_step_and_blames_the_platform() -> None:
    action, reason = _judge(_calls(3000, 40.0, seed=11), _calls(1000, 40.0, seed=12))
    assert action == "wait"
    assert "both variants are over the 50 ms SLO" in reason
    assert "not the candidate" in reason


def test_too_few_canary_calls_are_not_judged() -> None:
    """A p99 of a few dozen calls is their maximum: no test judges before min_latency_calls."""
    limits = StatLimits()
    stable, canary = _calls(3000, 8.0, seed=13), _calls(limits.min_latency_calls - 1, 200.0, seed=14)
    verdict = latency_tests([Stratum.canary(0.01, arm_counts(stable), arm_counts(canary))], limits)
    assert not any(t.informative or t.reject for t in verdict.tests)
    assert not verdict.hold


def test_the_share_test_keeps_its_alpha_at_the_slo_under_peeking() -> None:
    """At exactly 1 % of calls over the SLO (the null's boundary), looked at every 100 calls for 3,000
    calls, 200 canaries at alpha 0.05 reject at most the 99 % quantile of Bin(200, 0.05) (18)."""
    rng = np.random.default_rng(15)
    limits = StatLimits()
    rejected = 0
    for _ in range(200):
        slow = calls = 0
        for _ in range(30):
            slow, calls = slow + int(rng.binomial(100, 0.01)), calls + 100
            t = decide(
                "latency_slo",
                Evidence.of([comparisons.rate(slow, calls)]),
                margin=limits.latency_share,
                worse="higher",
                alpha=0.05,
                tau=limits.taus["latency"],
                n_stable=0,
                n_canary=calls,
                method="",
            )
            if t.reject:
                rejected += 1
                break
    assert rejected <= 18
