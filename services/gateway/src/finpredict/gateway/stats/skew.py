"""Training/serving skew and prediction consistency: each variant against its own profile.

Inputs are drift_core reports (:meth:`drift_core.Window.report`) of each variant's live
requests, counted on that variant's training reference profile (the inputs plus the score
column :data:`SCORE_COLUMN`, see ``finpredict.pipelines.profile``). PSI is drift_core's, over
the profile's buckets including the missing bucket.

Both arms receive the same population (a random split), so whatever moved the population moves
the stable arm's figures as much as the canary's; what the canary shows *beyond* stable is the
candidate's own doing. For a feature or the score, with ``psi_c`` (canary live vs the
candidate's reference) and ``psi_s`` (stable live vs stable's reference, 0 without one):

    excess = psi_c - psi_s

* **Skew**: a feature is skewed when ``excess > max_psi``, or when its missing share moved from
  the candidate's reference by more than ``max_missing_gap`` beyond what stable's moved, and by
  more than sampling explains (:data:`MISSING_Z` standard errors at the canary's row count). The
  verdict names the worst feature by excess. A candidate whose training data had a feature in
  other units sees live values fall outside its reference bins: a large ``psi_c``, while stable
  (whose reference is in the serving units) shows none.
* **Prediction consistency** (the score column): the candidate is inconsistent when
  ``excess > max_psi``. A population shift moves both arms (``psi_c ~ psi_s``: pass); a candidate
  retrained on the shifted population matches its own reference while stable does not
  (``excess < 0``: pass); a broken model moves alone (fail).

These are effect-size limits (the case study's PSI 0.25), not significance tests; below
``min_rows`` canary rows they do not judge (PSI's sampling bias is about ``(bins - 1) / n``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import drift_core

SCORE_COLUMN = "__score__"


@dataclass(frozen=True)
class FeatureSkew:
    name: str
    psi: float  # canary live vs the candidate's reference
    stable_psi: float  # stable live vs stable's reference (0 without one)
    excess: float
    missing_reference: float
    missing_live: float
    missing_excess: float  # |live - reference| of the canary minus the same for stable

    def describe(self) -> str:
        return (
            f"{self.name}: PSI {self.psi:.3f} vs the candidate's training profile "
            f"(stable's {self.stable_psi:.3f}), missing {self.missing_live:.1%} live vs "
            f"{self.missing_reference:.1%} in training"
        )


@dataclass(frozen=True)
class SkewVerdict:
    """``skewed``: some feature breached a limit; ``worst``: the feature with the largest excess."""

    skewed: bool
    judged: bool  # False below min_rows
    rows: int
    worst: FeatureSkew | None
    features: list[FeatureSkew]
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# A missing share's gap counts only beyond this many standard errors of the canary's sample (about
# a Bonferroni bound at alpha 0.05 over 50 features): with 500 rows and 40 % missing one standard
# error is 2.2 points, so a 5-point limit alone rolled back a good candidate on noise (seen: 39.8 %
# in training vs 34.6 % live, PSI 0.04).
MISSING_Z = 3.5


def missing_noise(reference_share: float, rows: int) -> float:
    """The gap in a missing share that sampling ``rows`` live rows explains (``MISSING_Z`` standard
    errors of a proportion around the reference share)."""
    if rows <= 0:
        return 1.0
    p = min(max(reference_share, 0.0), 1.0)
    return float(MISSING_Z * (p * (1.0 - p) / rows) ** 0.5)


def _stable_drift(stable: drift_core.DriftReport | None, name: str) -> tuple[float, float]:
    if stable is None or name not in stable.feature_names:
        return 0.0, 0.0
    f = stable[name]
    return f.psi, abs(f.missing_share_current - f.missing_share_reference)


def training_serving_skew(
    canary: drift_core.DriftReport,
    stable: drift_core.DriftReport | None = None,
    *,
    max_psi: float = 0.25,
    max_missing_gap: float = 0.05,
    min_rows: int = 500,
) -> SkewVerdict:
    """Per-feature skew of the canary's live inputs against the candidate's training profile."""
    features = []
    for f in canary.features:
        if f.name == SCORE_COLUMN:
            continue
        s_psi, s_gap = _stable_drift(stable, f.name)
        gap = abs(f.missing_share_current - f.missing_share_reference)
        features.append(
            FeatureSkew(
                f.name,
                f.psi,
                s_psi,
                f.psi - s_psi,
                f.missing_share_reference,
                f.missing_share_current,
                gap - s_gap,
            )
        )
    features.sort(key=lambda x: max(x.excess / max_psi, x.missing_excess / max_missing_gap), reverse=True)
    worst = features[0] if features else None
    rows = canary.n_current
    if rows < min_rows:
        return SkewVerdict(False, False, rows, worst, features, f"{rows}/{min_rows} canary rows")
    bad = [
        x
        for x in features
        if x.excess > max_psi
        or x.missing_excess > max(max_missing_gap, missing_noise(x.missing_reference, rows))
    ]
    if bad:
        reason = f"training/serving skew in {bad[0].name}: " + bad[0].describe()
        return SkewVerdict(True, True, rows, bad[0], features, reason)
    name = worst.name if worst else "-"
    return SkewVerdict(False, True, rows, worst, features, f"no skew (largest in {name})")


@dataclass(frozen=True)
class Consistency:
    """The canary's live scores against its own reference, judged with stable's shift."""

    consistent: bool
    judged: bool
    rows: int
    canary_psi: float
    stable_psi: float
    excess: float
    max_psi: float
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def prediction_consistency(
    canary: drift_core.DriftReport,
    stable: drift_core.DriftReport | None = None,
    *,
    max_psi: float = 0.25,
    min_rows: int = 500,
) -> Consistency:
    """Whether the canary's score distribution moved from its own reference beyond stable's move."""
    psi_c = canary[SCORE_COLUMN].psi
    psi_s, _ = _stable_drift(stable, SCORE_COLUMN)
    excess = psi_c - psi_s
    rows = canary.n_current
    figures = f"score PSI {psi_c:.3f} vs its own reference, stable's {psi_s:.3f} vs its own"
    if rows < min_rows:
        return Consistency(True, False, rows, psi_c, psi_s, excess, max_psi, f"{rows}/{min_rows} canary rows")
    if excess > max_psi:
        return Consistency(
            False,
            True,
            rows,
            psi_c,
            psi_s,
            excess,
            max_psi,
            f"the candidate's scores moved alone: {figures} (excess {excess:.3f} > {max_psi})",
        )
    kind = "population shift (both moved)" if psi_s > max_psi and psi_c > max_psi else "consistent"
    return Consistency(True, True, rows, psi_c, psi_s, excess, max_psi, f"{kind}: {figures}")
