"""A plain numpy reference implementation of drift_core's conventions (tests only).

Written independently of the Rust code, straight from the documented conventions:
edges = interior quantiles (numpy ``linear``) or equal-width edges of the finite reference
values, duplicates merged; bins left-closed with open outer bins; NaN -> missing bucket;
categorical -> one bucket per reference category, then unseen, then missing; empty buckets
get the share 1e-4.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

EPS = 1e-4

F64 = npt.NDArray[np.float64]
U64 = npt.NDArray[np.uint64]


def edges(col: F64, n_bins: int, binning: str = "quantile") -> F64:
    finite = col[np.isfinite(col)]
    if finite.size == 0 or n_bins == 1:
        return np.empty(0)
    if binning == "quantile":
        e = np.quantile(finite, np.arange(1, n_bins) / n_bins, method="linear")
    else:
        lo, hi = finite.min(), finite.max()
        step = (hi - lo) / n_bins
        e = lo + np.arange(1, n_bins) * step
    return np.unique(e)


def numeric_counts(col: F64, e: F64) -> U64:
    nan = np.isnan(col)
    bins = np.searchsorted(e, col[~nan], side="right")
    counts = np.bincount(bins, minlength=e.size + 1)
    return np.append(counts, nan.sum()).astype(np.uint64)


def categories(col: F64) -> F64:
    return np.unique(col[np.isfinite(col)])


def categorical_counts(col: F64, cats: F64) -> U64:
    nan = np.isnan(col)
    x = col[~nan]
    idx = np.searchsorted(cats, x, side="left")
    inside = idx < cats.size
    known = np.zeros(x.size, dtype=bool)
    known[inside] = cats[idx[inside]] == x[inside]
    counts = np.bincount(idx[known], minlength=cats.size + 1)
    counts[cats.size] += int((~known).sum())
    return np.append(counts, nan.sum()).astype(np.uint64)


def shares(v: npt.ArrayLike) -> F64:
    a = np.asarray(v, dtype=np.float64)
    s: F64 = a / a.sum()
    s[a == 0] = EPS
    return s


def psi(expected: npt.ArrayLike, actual: npt.ArrayLike) -> float:
    e, a = shares(expected), shares(actual)
    return float(np.sum((a - e) * np.log(a / e)))


def kl(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    ps, qs = shares(p), shares(q)
    return float(np.sum(ps * np.log(ps / qs)))


def js(p: npt.ArrayLike, q: npt.ArrayLike) -> float:
    ps, qs = shares(p), shares(q)
    m = (ps + qs) / 2
    return float(0.5 * np.sum(ps * np.log(ps / m)) + 0.5 * np.sum(qs * np.log(qs / m)))
