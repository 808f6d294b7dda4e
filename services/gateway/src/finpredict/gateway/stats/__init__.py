"""Statistics of model-aware rollouts: tell a better model from a broken one, with stated error rates.

* :mod:`.sequential`: the always-valid normal-mixture SPRT / confidence sequence every
  comparison uses (Johari, Pekelis and Walsh 2017; Howard, Ramdas et al. 2021).
* :mod:`.counts`: the mergeable per-arm, per-step counts the statistics read.
* :mod:`.comparisons`: canary-minus-stable effects (error, approval and default rates; AUC with
  the DeLong variance).
* :mod:`.srm`: sample-ratio mismatch (chi-square and an always-valid decision).
* :mod:`.skew`: training/serving skew and prediction consistency against each variant's own
  profile, judged against stable's own shift.
* :mod:`.estimate`: label-free expected AUC and default rate (CBPE) and calibration checks.
* :mod:`.limits`: alpha, its Bonferroni split across the gating tests, margins, mixing scales.
* :mod:`.evaluate`: one analysis of a canary (the controller's entry point).
* :mod:`.ab`: A/B experiments: per-arm figures, effects, a stopping recommendation.
* :mod:`.simulate`: synthetic rollouts through :func:`evaluate` (the tests' and benchmark's).
"""

from finpredict.gateway.stats.ab import Experiment, compare_arms
from finpredict.gateway.stats.counts import ArmCounts, Stratum
from finpredict.gateway.stats.evaluate import CanaryEvidence, StatsVerdict, evaluate
from finpredict.gateway.stats.limits import StatLimits
from finpredict.gateway.stats.sequential import TestDecision

__all__ = [
    "ArmCounts",
    "CanaryEvidence",
    "Experiment",
    "StatLimits",
    "StatsVerdict",
    "Stratum",
    "TestDecision",
    "compare_arms",
    "evaluate",
]
