"""The rollout's statistics: what each analysis adds to :func:`~finpredict.gateway.analysis.analyze`.

A rollout keeps its counts since it started (``Rollout.strata``, in the shared state, so a new
leader carries on from them): one :class:`~finpredict.gateway.stats.Stratum` per canary weight,
holding the closed analysis windows of that step. At each analysis the open window (every
replica's, merged) is added to the current step's stratum and
:func:`~finpredict.gateway.stats.evaluate` judges the whole: its always-valid tests may look at
every analysis without raising the false-rollback rate above the rollout's alpha.

Which decides (:func:`combine`): a breach found by the window analysis (errors, latency, score
drift) rolls back with its own reason; then a sample-ratio mismatch halts (the split is broken,
so no comparison can be trusted; :func:`halts`); then a statistics rollback; otherwise the window
analysis's ``wait`` or ``advance`` (:func:`combine`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from finpredict.gateway.analysis import Thresholds, VariantWindow, Verdict
from finpredict.gateway.state.windows import StepWindow
from finpredict.gateway.stats import ArmCounts, StatLimits, StatsVerdict, Stratum


def arm_counts(window: VariantWindow) -> ArmCounts:
    """A variant's window as the statistics count it (the score grids are the same)."""
    return ArmCounts(
        requests=window.requests,
        errors=window.errors,
        approved=window.approved,
        score_counts=window.score_counts.astype(np.int64),
    )


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


def stat_limits(thresholds: Thresholds) -> StatLimits:
    """The statistics' limits of a rollout: the shared ones from its thresholds, the rest default."""
    return StatLimits(
        error_rate_margin=thresholds.max_error_rate_increase,
        max_psi=thresholds.max_score_psi,
        min_labeled=thresholds.min_labeled,
    )


def halts(window: Verdict, stats: StatsVerdict) -> bool:
    """Whether the analysis halts the rollout: the split is broken and nothing rolled it back."""
    return window.action != "rollback" and stats.action == "halt"


def combine(window: Verdict, stats: StatsVerdict) -> Verdict:
    """The verdict of an analysis that does not halt, with the window analysis's figures."""
    if window.action != "rollback" and stats.action == "rollback":
        return Verdict("rollback", "; ".join(stats.reasons), window.metrics)
    return window
