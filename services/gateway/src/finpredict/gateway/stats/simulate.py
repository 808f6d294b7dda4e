"""Synthetic rollouts through :func:`~.evaluate.evaluate`: no servers, the analysis code only.

The population: three inputs, ``debt_service_coverage`` (log-normal around 1.35),
``utilization`` (Beta(2, 3)) and ``income`` (log-normal around 49,000), and a true default
log-odds ``eta = -2.7 - 0.9 z_dscr + 0.7 z_util - 0.4 z_income`` (``z``: standardised inputs;
about 10 % default, AUC 0.79). Stable scores ``sigmoid(eta)`` (calibrated). A candidate:

* ``identical``: the same model;
* ``unit_shift``: trained on ``debt_service_coverage`` in percent; served ratios, it reads
  1.35 as 1.35 % and declines nearly everyone (its profile holds the percent values);
* ``halved_odds``: ``sigmoid(eta - log 2)``, miscalibrated in training too (its own profile
  agrees with it; ECE about 0.043 passes the registry's 0.05 gate);
* ``auc_loss``: for a random share of rows it scores another applicant's risk, which keeps the
  score distribution and nearly the calibration but costs about 2 AUC points;
* ``miscalibrated``: scores pushed toward 0.5, ``sigmoid(eta / MISCALIBRATION_TEMPERATURE)``: the
  same ranking (the same AUC), a validation profile that agrees with it, but a default rate
  claimed far above the truth: the label-free estimate (its expected AUC, if the scores were
  calibrated, is well below stable's) and, once labels arrive, the calibration check object;
* ``slow``: the same model, ``SLOW_FACTOR`` times slower: about 5 % of its calls over the 50 ms
  SLO (stable: none) and most over 1.5x stable's p99; the latency tests object.

Every request is a call that scores one application, with a latency drawn from a log-normal
distribution (median ``LATENCY_MEDIAN_MS``, p99 about 23 ms; the same for both arms unless the
candidate is ``slow``), from a generator of its own (the other draws are those of a simulation
without latencies).

Each analysis interval ("look") draws ``requests_per_look`` applicants per rollout, splits them
by the look's canary weight, fails 0.2 % of requests on both arms, approves scores below
``threshold``, and labels every scored row ``label_lag`` looks later. At every look each live
rollout is evaluated on its cumulative counts (one stratum per weight step) and drift_core
windows of each arm's inputs and scores against its own profile; the first ``rollback`` or
``halt`` stops it. Generation is vectorised over rollouts with numpy.
"""

from __future__ import annotations

import math
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt

import drift_core
from finpredict import metrics
from finpredict.gateway.stats.counts import (
    LATENCY_BUCKETS,
    SCORE_BUCKETS,
    ArmCounts,
    Stratum,
    bucket_of,
    latency_bucket,
    pooled,
)
from finpredict.gateway.stats.evaluate import CanaryEvidence, evaluate
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.skew import SCORE_COLUMN

Kind = Literal["identical", "unit_shift", "halved_odds", "auc_loss", "miscalibrated", "slow"]
KINDS: tuple[Kind, ...] = ("identical", "unit_shift", "halved_odds", "auc_loss", "miscalibrated", "slow")
FEATURES = ("debt_service_coverage", "utilization", "income")
ERROR_RATE = 0.002
AUC_LOSS_SHARE = 0.07  # share of rows scored on another applicant's risk (-0.020 AUC)
MISCALIBRATION_TEMPERATURE = 2.0  # the miscalibrated candidate's log-odds are divided by this
LATENCY_MEDIAN_MS = 8.0
LATENCY_SIGMA = 0.45  # of log latency: p99 = median x exp(2.326 sigma), about 23 ms
SLOW_FACTOR = 3.0  # the slow candidate's latencies are this multiple of stable's
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SimSettings:
    rollouts: int = 200
    requests_per_look: int = 1000
    # the canary weight at each look (a change of weight starts a new stratum)
    weights: tuple[float, ...] = (0.05, 0.05, 0.05) + (0.25,) * 7
    label_lag: int = 2
    threshold: float = 0.2
    reference_rows: int = 20_000
    seed: int = 7


@dataclass
class SimResult:
    kind: Kind
    settings: SimSettings
    stopped: npt.NDArray[np.bool_]
    halted: npt.NDArray[np.bool_]
    look: npt.NDArray[np.int64]  # first stopping look, -1 if never
    canary_requests: npt.NDArray[np.int64]  # canary requests seen when stopped
    canary_labeled: npt.NDArray[np.int64]  # canary labelled rows at the last analysis
    canary_calls: npt.NDArray[np.int64]  # canary calls with a latency at the last analysis
    checks: Counter[str] = field(default_factory=Counter)  # what stopped each rollout

    @property
    def stop_rate(self) -> float:
        return float(self.stopped.mean())

    @property
    def median_samples(self) -> float:
        hit = self.canary_requests[self.stopped]
        return float(np.median(hit)) if hit.size else math.nan


def _population(rng: np.random.Generator, n: int) -> tuple[F64, F64]:
    """(inputs in serving units, n x 3; true log-odds)."""
    log_dscr = rng.normal(0.3, 0.35, n)
    util = rng.beta(2.0, 3.0, n)
    log_income = rng.normal(10.8, 0.5, n)
    x = np.column_stack([np.exp(log_dscr), util, np.exp(log_income)])
    return x, _eta(x)


def _eta(x: F64) -> F64:
    z_dscr = (np.log(x[:, 0]) - 0.3) / 0.35
    z_util = (x[:, 1] - 0.4) / 0.2
    z_income = (np.log(x[:, 2]) - 10.8) / 0.5
    return np.asarray(-2.7 - 0.9 * z_dscr + 0.7 * z_util - 0.4 * z_income, dtype=np.float64)


def _sigmoid(v: F64) -> F64:
    return np.asarray(1.0 / (1.0 + np.exp(-v)), dtype=np.float64)


def candidate_scores(kind: Kind, x: F64, eta: F64, rng: np.random.Generator) -> F64:
    """The candidate's scores for inputs ``x`` in serving units (true log-odds ``eta``)."""
    if kind == "unit_shift":
        served = x.copy()
        served[:, 0] = x[:, 0] / 100.0  # a model fitted on percent reads the ratio as percent
        return _sigmoid(_eta(served))
    if kind == "halved_odds":
        return _sigmoid(eta - math.log(2.0))
    if kind == "miscalibrated":
        return _sigmoid(eta / MISCALIBRATION_TEMPERATURE)
    if kind == "auc_loss":
        other = rng.random(eta.size) < AUC_LOSS_SHARE
        mixed = eta.copy()
        mixed[other] = eta[rng.permutation(eta.size)[other]]
        return _sigmoid(mixed)
    return _sigmoid(eta)


def truth(kind: Kind, n: int = 400_000, seed: int = 11) -> dict[str, float]:
    """The candidate's true quality on a large draw: AUC of both models, the candidate's ECE."""
    rng = np.random.default_rng(seed)
    x, eta = _population(rng, n)
    y = rng.random(n) < _sigmoid(eta)
    p = candidate_scores(kind, x, eta, rng)
    return {
        "default_rate": float(y.mean()),
        "auc_stable": metrics.auc_roc(y, _sigmoid(eta)),
        "auc_candidate": metrics.auc_roc(y, p),
        "ece_candidate": metrics.expected_calibration_error(y, p),
    }


def _profile(inputs: F64, scores: F64) -> drift_core.Profile:
    data = np.ascontiguousarray(np.column_stack([inputs, scores]))
    return drift_core.Profile.fit(data, feature_names=[*FEATURES, SCORE_COLUMN], n_bins=10)


def profiles(kind: Kind, settings: SimSettings) -> tuple[drift_core.Profile, drift_core.Profile]:
    """(stable's, the candidate's) training reference profiles (inputs in training units)."""
    rng = np.random.default_rng(settings.seed + 1)
    x, eta = _population(rng, settings.reference_rows)
    stable = _profile(x, _sigmoid(eta))
    trained = x.copy()
    if kind == "unit_shift":
        trained[:, 0] *= 100.0  # the training data held percent; its own scores were right
        return stable, _profile(trained, _sigmoid(eta))
    return stable, _profile(trained, candidate_scores(kind, x, eta, rng))


Ints = npt.NDArray[np.int64]
Mask = npt.NDArray[np.bool_]


def _per_rollout(index: npt.NDArray[np.intp], mask: Mask, rollouts: int) -> Ints:
    return np.bincount(index[mask], minlength=rollouts).astype(np.int64)


def _hist(
    rollout: npt.NDArray[np.intp],
    buckets: npt.NDArray[np.intp],
    mask: npt.NDArray[np.bool_],
    rollouts: int,
    size: int = SCORE_BUCKETS,
) -> npt.NDArray[np.int64]:
    flat = rollout[mask] * size + buckets[mask]
    counts = np.bincount(flat, minlength=rollouts * size)
    return counts.reshape(rollouts, size).astype(np.int64)


@dataclass
class _ArmLook:
    """One look's increments for every rollout of one arm."""

    requests: npt.NDArray[np.int64]
    errors: npt.NDArray[np.int64]
    approved: npt.NDArray[np.int64]
    scores: npt.NDArray[np.int64]
    defaulted: npt.NDArray[np.int64]
    repaid: npt.NDArray[np.int64]
    labeled_approved: npt.NDArray[np.int64]
    labeled_approved_defaults: npt.NDArray[np.int64]
    latency: npt.NDArray[np.int64]


def _arm_look(
    rollout: npt.NDArray[np.intp],
    arm: npt.NDArray[np.bool_],
    ok: npt.NDArray[np.bool_],
    scores: F64,
    y: npt.NDArray[np.bool_],
    threshold: float,
    rollouts: int,
    latency_ms: F64,
) -> _ArmLook:
    buckets = bucket_of(scores)
    scored = arm & ok
    approved = scored & (scores < threshold)
    return _ArmLook(
        _per_rollout(rollout, arm, rollouts),
        _per_rollout(rollout, arm & ~ok, rollouts),
        _per_rollout(rollout, approved, rollouts),
        _hist(rollout, buckets, scored, rollouts),
        _hist(rollout, buckets, scored & y, rollouts),
        _hist(rollout, buckets, scored & ~y, rollouts),
        _per_rollout(rollout, approved, rollouts),
        _per_rollout(rollout, approved & y, rollouts),
        _hist(rollout, latency_bucket(latency_ms), arm, rollouts, LATENCY_BUCKETS),
    )


def _add_requests(arm: ArmCounts, look: _ArmLook, r: int) -> None:
    arm.requests += int(look.requests[r])
    arm.errors += int(look.errors[r])
    arm.approved += int(look.approved[r])
    arm.score_counts += look.scores[r]
    arm.latency_counts += look.latency[r]


def _add_labels(arm: ArmCounts, look: _ArmLook, r: int) -> None:
    arm.defaulted += look.defaulted[r]
    arm.repaid += look.repaid[r]
    arm.labeled_approved += int(look.labeled_approved[r])
    arm.labeled_approved_defaults += int(look.labeled_approved_defaults[r])


def _strata_index(weights: Sequence[float]) -> list[int]:
    out, k = [], 0
    for i, w in enumerate(weights):
        if i and w != weights[i - 1]:
            k += 1
        out.append(k)
    return out


def simulate(kind: Kind, settings: SimSettings | None = None, limits: StatLimits | None = None) -> SimResult:
    """Runs ``settings.rollouts`` rollouts of a ``kind`` candidate through :func:`evaluate`."""
    settings = settings or SimSettings()
    limits = limits or StatLimits()
    rng = np.random.default_rng(settings.seed)
    latency_rng = np.random.default_rng(settings.seed + 2)
    stable_profile, canary_profile = profiles(kind, settings)
    rollouts, n = settings.rollouts, settings.requests_per_look
    stratum_of = _strata_index(settings.weights)
    strata: list[list[Stratum]] = [[] for _ in range(rollouts)]
    windows = [(canary_profile.window(), stable_profile.window()) for _ in range(rollouts)]
    pending: deque[tuple[int, _ArmLook, _ArmLook]] = deque()
    stopped = np.zeros(rollouts, dtype=bool)
    halted = np.zeros(rollouts, dtype=bool)
    look_at = np.full(rollouts, -1, dtype=np.int64)
    canary_seen = np.zeros(rollouts, dtype=np.int64)
    stop_samples = np.zeros(rollouts, dtype=np.int64)
    checks: Counter[str] = Counter()
    rollout = np.repeat(np.arange(rollouts), n)
    for t, weight in enumerate(settings.weights):
        size = rollouts * n
        x, eta = _population(rng, size)
        to_canary: Mask = rng.random(size) < weight
        ok: Mask = rng.random(size) >= ERROR_RATE
        y: Mask = rng.random(size) < _sigmoid(eta)
        p_stable = _sigmoid(eta)
        p_canary = candidate_scores(kind, x, eta, rng)
        thr = settings.threshold
        latency = latency_rng.lognormal(math.log(LATENCY_MEDIAN_MS), LATENCY_SIGMA, size)
        c_latency = latency * SLOW_FACTOR if kind == "slow" else latency
        c_look = _arm_look(rollout, to_canary, ok, p_canary, y, thr, rollouts, c_latency)
        s_look = _arm_look(rollout, ~to_canary, ok, p_stable, y, thr, rollouts, latency)
        pending.append((stratum_of[t], c_look, s_look))
        labels_due = pending.popleft() if len(pending) > settings.label_lag else None
        canary_seen += c_look.requests
        live: Ints = np.flatnonzero(~stopped)
        canary_rows = np.column_stack([x, p_canary])
        stable_rows = np.column_stack([x, p_stable])
        for r in live.tolist():
            if len(strata[r]) <= stratum_of[t]:
                strata[r].append(Stratum.canary(weight))
            current = strata[r][stratum_of[t]].arms
            _add_requests(current["canary"], c_look, r)
            _add_requests(current["stable"], s_look, r)
            if labels_due is not None:
                k, c_lab, s_lab = labels_due
                _add_labels(strata[r][k].arms["canary"], c_lab, r)
                _add_labels(strata[r][k].arms["stable"], s_lab, r)
            rows = slice(r * n, (r + 1) * n)
            c_sel, s_sel = (to_canary & ok)[rows], (~to_canary & ok)[rows]
            cw, sw = windows[r]
            if c_sel.any():
                cw.add(np.ascontiguousarray(canary_rows[rows][c_sel]))
            if s_sel.any():
                sw.add(np.ascontiguousarray(stable_rows[rows][s_sel]))
            inputs = CanaryEvidence(
                strata[r], cw.report() if cw.n_rows else None, sw.report() if sw.n_rows else None
            )
            verdict = evaluate(inputs, limits)
            if verdict.action in ("rollback", "halt"):
                stopped[r], halted[r] = True, verdict.action == "halt"
                look_at[r], stop_samples[r] = t, canary_seen[r]
                checks.update(verdict.checks)
    labeled = np.array([pooled(s, "canary").labeled for s in strata], dtype=np.int64)
    calls = np.array([pooled(s, "canary").calls for s in strata], dtype=np.int64)
    return SimResult(kind, settings, stopped, halted, look_at, stop_samples, labeled, calls, checks)
