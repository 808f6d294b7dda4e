"""Model-quality metrics, one implementation each (the pipeline's gates, the monitor, the rollout analysis).

Definitions (``y``: 1/True when the applicant defaulted; ``p``: the predicted probability of
default; the decision is "approve" when ``p < threshold``, "decline" otherwise):

* :func:`auc_roc`: area under the ROC curve of ``p`` against ``y``, from average ranks (tied
  scores get their mean rank), i.e. the Mann-Whitney U statistic / (n_pos * n_neg).
* :func:`expected_calibration_error`: 10 equal-width bins on [0, 1] (bin b holds p in
  [b/10, (b+1)/10), the last bin includes 1.0), weighted by bin count:
  ECE = sum_b (n_b / N) * |mean(y in b) - mean(p in b)|; empty bins contribute 0.
* :func:`approval_rate`: the share of approved decisions; :func:`approval_rates` the same per
  group of a protected attribute.
* :func:`demographic_parity_difference`: max - min approval rate across the groups (fairlearn's
  ``demographic_parity_difference`` with ``method="between_groups"``); it depends on the
  decision threshold.
* :func:`accuracy`: the share of decisions that were right (declined == defaulted).
* :func:`default_rate`: the share of labels that defaulted.

A metric that is undefined on its input (no rows; AUC without both classes) is NaN, never an
exception: a caller that must refuse such input checks for it (``math.isfinite``).
"""

from finpredict.metrics.calibration import Calibration, calibration, expected_calibration_error
from finpredict.metrics.decisions import (
    accuracy,
    approval_rate,
    approval_rates,
    approved,
    confusion,
    default_rate,
    demographic_parity_difference,
)
from finpredict.metrics.ranking import auc_roc, roc_curve

__all__ = [
    "Calibration",
    "accuracy",
    "approval_rate",
    "approval_rates",
    "approved",
    "auc_roc",
    "calibration",
    "confusion",
    "default_rate",
    "demographic_parity_difference",
    "expected_calibration_error",
    "roc_curve",
]
