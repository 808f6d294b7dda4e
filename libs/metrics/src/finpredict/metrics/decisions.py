"""Metrics of the thresholded decision (approve when ``p < threshold``) and of the labels."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolArr = npt.NDArray[np.bool_]
NAN = float("nan")


def approved(p: npt.ArrayLike, threshold: npt.ArrayLike) -> BoolArr:
    """The decision of each score: approved when ``p < threshold`` (a scalar or one per score)."""
    return np.asarray(np.asarray(p, dtype=np.float64) < np.asarray(threshold, dtype=np.float64))


def approval_rate(p: npt.ArrayLike, threshold: npt.ArrayLike) -> float:
    """The share of approved decisions; NaN without rows."""
    ok = approved(p, threshold)
    return float(ok.mean()) if ok.size else NAN


def approval_rates(p: npt.ArrayLike, groups: npt.ArrayLike, threshold: float) -> dict[str, float]:
    """The approval rate of each group (groups compared as text)."""
    ok = approved(p, threshold)
    gg = np.asarray(groups).astype(str)
    return {str(g): float(ok[gg == g].mean()) for g in np.unique(gg)}


def demographic_parity_difference(p: npt.ArrayLike, groups: npt.ArrayLike, threshold: float) -> float:
    """max - min approval rate across ``groups``; NaN without rows."""
    rates = approval_rates(p, groups, threshold)
    return float(max(rates.values()) - min(rates.values())) if rates else NAN


def accuracy(y: npt.ArrayLike, p: npt.ArrayLike, threshold: npt.ArrayLike) -> float:
    """The share of right decisions: declined (``p >= threshold``) == defaulted; NaN without rows."""
    yy = np.asarray(y).astype(bool)
    if not yy.size:
        return NAN
    return float(np.mean(~approved(p, threshold) == yy))


def confusion(y: npt.ArrayLike, p: npt.ArrayLike, threshold: float) -> dict[str, int]:
    """Counts with "positive" = predicted default (``p >= threshold``, i.e. declined)."""
    yy = np.asarray(y).astype(bool)
    pred = ~approved(p, threshold)
    return {
        "tp": int((pred & yy).sum()),
        "fp": int((pred & ~yy).sum()),
        "tn": int((~pred & ~yy).sum()),
        "fn": int((~pred & yy).sum()),
    }


def default_rate(y: npt.ArrayLike) -> float:
    """The share of labels that defaulted; NaN without rows."""
    yy = np.asarray(y, dtype=np.float64)
    return float(yy.mean()) if yy.size else NAN
