"""The rollout's statistics: what each analysis adds to :func:`~finpredict.gateway.analysis.analyze`.

Delayed labels reach the analysis through the gateway's ``RecordOutcomes``: the monitor answers
with the predictions it matched (score, threshold, and the rollout id and variant the gateway
logged each with), and the replica that forwarded them counts each into its open window of that
rollout's variant (:meth:`~finpredict.gateway.live.LiveRollouts.record_outcomes`; a prediction
served before the rollout, or by another, counts in none), published and merged like every other
count; the default-rate and AUC tests and the calibration check judge them since the start. The
AUC test's non-inferiority margin is the rollout's ``max_auc_drop`` (:func:`stat_limits`).

A rollout keeps its counts since it started (``Rollout.strata``, in the shared state, so a new
leader carries on from them): one :class:`~finpredict.gateway.stats.Stratum` per canary weight,
holding the closed analysis windows of that step. At each analysis the open window (every
replica's, merged) is added to the current step's stratum and
:func:`~finpredict.gateway.stats.evaluate` judges the whole: its always-valid tests may look at
every analysis without raising the false-rollback rate above the rollout's alpha.

The inputs each variant counted on its own reference profile are kept the same way
(``Rollout.inputs``, :func:`cumulative_inputs`): the model checks (training/serving skew and
prediction consistency) judge everything since the start. They decide whenever the candidate has
a reference profile (its inputs were counted). The canary's score drift against stable is always
measured; a model retrained on a shifted population is *meant* to score differently from stable,
so it rolls back only without a reference profile (the fallback), or while stable's own traffic
still fits stable's own profile: no population shift then explains a canary scoring unlike
stable on the same traffic (:func:`model_checks`, :func:`population_shift`).

Latency is judged here too, not on the window's raw p99s: the single-application calls each
variant made since the start (:attr:`VariantWindow.latency_counts`, counted into the strata) go to
the statistics' latency tests (:mod:`finpredict.gateway.stats.latency`: the canary's share of calls
slower than the SLO, and than the ratio x stable's p99, against 1 %, each with its share of the
rollout's alpha); when both variants are over the SLO the step holds instead of rolling back.

Which decides (:func:`combine`): a breach found by the window analysis (errors, and in the
fallback score drift) rolls back with its own reason; then a sample-ratio mismatch halts (the
split is broken, so no comparison can be trusted; :func:`halts`); then a statistics rollback
(skew naming the worst feature, consistency, the estimate, a sequential test, latency); then a
hold (both variants over the latency SLO: ``wait``, whatever the window says); then a window that
would advance waits while the model checks lack the canary rows to judge (not enough evidence is
never a pass); then the score drift against stable where it still decides; otherwise the window
analysis's ``wait`` or ``advance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

import drift_core
from finpredict.gateway.analysis import Thresholds, VariantWindow, Verdict, score_drift_breach
from finpredict.gateway.state.windows import StepWindow
from finpredict.gateway.stats import ArmCounts, StatLimits, StatsVerdict, Stratum
from finpredict.gateway.stats.skew import SCORE_COLUMN


def arm_counts(window: VariantWindow) -> ArmCounts:
    """A variant's window as the statistics count it (the score and latency grids are the same),
    with the delayed labels that arrived during the window (whenever their prediction was served)."""
    counts = ArmCounts(
        requests=window.requests,
        errors=window.errors,
        approved=window.approved,
        score_counts=window.score_counts.astype(np.int64),
        latency_counts=window.latency_counts.astype(np.int64),
    )
    counts.merge(window.outcomes)
    return counts


def cumulative_strata(
    stored: Sequence[Mapping[str, Any]], weight: float, window: StepWindow
) -> list[Stratum]:
    """The stored strata with the open ``window`` added to the stratum of canary ``weight`` (percent):
    the last one when it has that weight, else a new one."""
    strata = [Stratum.from_dict(s) for s in stored]
    share = weight / 100.0
    if not strata or strata[-1].weights.get("canary") != share:
        strata.append(Stratum.canary(share))
    current = strata[-1]
    current.arms["stable"].merge(arm_counts(window.stable))
    current.arms["canary"].merge(arm_counts(window.canary))
    return strata


def cumulative_inputs(stored: Mapping[str, str], window: StepWindow) -> dict[str, drift_core.Window]:
    """Each variant's counted inputs since the start: the stored ones (``Rollout.inputs``) plus the
    open ``window``'s (a variant that counted none is absent)."""
    out: dict[str, drift_core.Window] = {}
    for variant in ("stable", "canary"):
        kept = stored.get(variant)
        total = VariantWindow(inputs=drift_core.Window.from_json(kept) if kept else None)
        live = window.side(variant).inputs
        if live is not None:
            total.add_inputs(live)  # a copy: the open window is left as it is
        if total.inputs is not None and total.inputs.n_rows:
            out[variant] = total.inputs
    return out


def population_shift(stable: drift_core.DriftReport | None, limits: StatLimits) -> str | None:
    """What moved stable's live traffic away from stable's own reference profile beyond the PSI limit
    (its worst feature, or its scores), or None: no shift seen (no profile, too few rows, none)."""
    if stable is None or stable.n_current < limits.min_rows:
        return None
    drifted = stable.drifted(limits.max_psi)
    if not drifted:
        return None
    name = drifted[0]
    what = "its scores" if name == SCORE_COLUMN else name
    return f"{what} PSI {stable[name].psi:.3f} on stable's own profile"


def model_checks(
    reports: Mapping[str, drift_core.DriftReport], candidate_version: int, limits: StatLimits
) -> dict[str, Any]:
    """How an analysis judges the canary's scores, for :func:`combine` and the decision's statistics:
    ``mode`` ``reference`` (the candidate has a reference profile: skew and consistency against
    each variant's own profile) or ``fallback`` (it has none: its scores against stable's), and
    whether the score drift against stable still rolls back (``score_drift_gates``: in the fallback,
    or while no population shift on stable's own profile explains a canary scoring unlike stable)."""
    if "canary" not in reports:
        return {
            "mode": "fallback",
            "score_drift_gates": True,
            "population_shift": None,
            "detail": f"v{candidate_version} has no reference profile: "
            "its score drift against stable decides",
        }
    shift = population_shift(reports.get("stable"), limits)
    if shift is not None:
        detail = f"the score drift against stable is reported only: the population moved ({shift})"
    elif "stable" not in reports:
        detail = "the score drift against stable decides too: stable has no profile to show a shift"
    else:
        detail = "the score drift against stable decides too: stable's traffic fits stable's own profile"
    return {
        "mode": "reference",
        "score_drift_gates": shift is None,
        "population_shift": shift,
        "detail": "skew and prediction consistency against each variant's own reference profile decide; "
        + detail,
    }


def stat_limits(thresholds: Thresholds) -> StatLimits:
    """The statistics' limits of a rollout: the shared ones from its thresholds, the rest default."""
    return StatLimits(
        error_rate_margin=thresholds.max_error_rate_increase,
        auc_margin=thresholds.max_auc_drop,
        max_psi=thresholds.max_score_psi,
        min_labeled=thresholds.min_labeled,
        max_latency_ms=thresholds.max_p99_latency_ms,
        max_latency_ratio=thresholds.max_p99_latency_ratio,
    )


def halts(window: Verdict, stats: StatsVerdict) -> bool:
    """Whether the analysis halts the rollout: the split is broken and nothing rolled it back."""
    return window.action != "rollback" and stats.action == "halt"


def combine(
    window: Verdict,
    stats: StatsVerdict,
    checks: Mapping[str, Any] | None = None,
    limits: Thresholds | None = None,
) -> Verdict:
    """The verdict of an analysis that does not halt, with the window analysis's figures (``checks``:
    :func:`model_checks`, with the rollout's ``limits``; without them the window's verdict stands
    unless the statistics roll back)."""
    if window.action != "rollback" and stats.action == "rollback":
        return Verdict("rollback", "; ".join(stats.reasons), window.metrics)
    if window.action != "rollback" and stats.action == "hold":
        return Verdict("wait", "; ".join(stats.holds), window.metrics)
    if window.action != "advance" or checks is None or checks["mode"] != "reference":
        return window
    if stats.skew is not None and not stats.skew.judged:
        return Verdict(
            "wait",
            f"not enough canary rows for the model checks yet ({stats.skew.reason} counted on its "
            "reference profile)",
            window.metrics,
        )
    breach = score_drift_breach(window.metrics, limits or Thresholds())
    if breach and checks["score_drift_gates"]:
        why = "no population shift on stable's own profile explains it"
        return Verdict("rollback", f"{breach} ({why})", window.metrics)
    return window
