"""Every documented error case raises its DriftCoreError subclass with a message naming the
problem (table-driven)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl
import pytest

import drift_core as dc

X = np.random.default_rng(0).normal(size=(100, 3))
PROFILE = dc.Profile.fit(X, feature_names=["a", "b", "c"])
OTHER = dc.Profile.fit(X * 2.0, feature_names=["a", "b", "c"])


def _merge_mismatch() -> None:
    w = PROFILE.window()
    w.merge(OTHER.histograms(X))


def _bad_json_edges() -> None:
    doc = PROFILE.to_json().replace('"edges":[', '"edges":[5.0,', 1)
    dc.Profile.from_json(doc)


CASES: list[tuple[str, Callable[[], Any], type[dc.DriftCoreError], str]] = [
    # shape
    ("3-D array", lambda: dc.Profile.fit(np.zeros((2, 2, 2))), dc.ShapeError, r"1-D .* or 2-D .* got 3-D"),
    ("0-D array", lambda: PROFILE.score(np.float64(1.0), allow_copy=True), dc.ShapeError, r"got 0-D"),
    ("no columns", lambda: dc.Profile.fit(np.zeros((5, 0))), dc.ShapeError, r"no columns"),
    (
        "names vs columns",
        lambda: dc.Profile.fit(X, feature_names=["a"]),
        dc.ShapeError,
        r"1 feature names for 3 columns",
    ),
    (
        "psi lengths",
        lambda: dc.psi([1, 2], [1, 2, 3]),
        dc.ShapeError,
        r"expected has 2 buckets but actual has 3",
    ),
    # dtype
    (
        "int64 array",
        lambda: dc.Profile.fit(np.zeros((4, 2), dtype=np.int64)),
        dc.DtypeError,
        r"float64, got int64",
    ),
    ("float32 batch", lambda: PROFILE.score(X.astype(np.float32)), dc.DtypeError, r"float64, got float32"),
    ("list input", lambda: PROFILE.score([[1.0, 2.0, 3.0]]), dc.DtypeError, r"numpy.ndarray .* got list"),
    (
        "string column",
        lambda: PROFILE.score(pl.DataFrame({"a": [1.0], "b": [2.0], "c": [object()]})),
        dc.DtypeError,
        r"column 'c'",
    ),
    # layout
    (
        "column slice",
        lambda: PROFILE.score(np.zeros((10, 6))[:, ::2]),
        dc.LayoutError,
        r"not contiguous .* allow_copy=True",
    ),
    ("row slice", lambda: PROFILE.score(X[::2]), dc.LayoutError, r"not contiguous"),
    # profile mismatch
    (
        "feature count",
        lambda: PROFILE.score(np.zeros((4, 2))),
        dc.ProfileMismatchError,
        r"2 features but the profile has 3",
    ),
    (
        "window add count",
        lambda: PROFILE.window().add(np.zeros((4, 5))),
        dc.ProfileMismatchError,
        r"5 features but the profile has 3",
    ),
    ("merge other profile", _merge_mismatch, dc.ProfileMismatchError, r"different profiles"),
    (
        "frame lacks column",
        lambda: PROFILE.score(pl.DataFrame({"a": [1.0], "b": [2.0]})),
        dc.ProfileMismatchError,
        r"lacks .*'c'",
    ),
    # empty
    (
        "fit 0 rows",
        lambda: dc.Profile.fit(np.zeros((0, 3))),
        dc.EmptyInputError,
        r"reference data \(0 rows\) is empty",
    ),
    (
        "score 0 rows",
        lambda: PROFILE.score(np.zeros((0, 3))),
        dc.EmptyInputError,
        r"batch \(0 rows\) is empty",
    ),
    (
        "empty window report",
        lambda: PROFILE.window().report(),
        dc.EmptyInputError,
        r"window \(no rows added\)",
    ),
    ("all-zero counts", lambda: dc.kl([0, 0], [1, 1]), dc.EmptyInputError, r"all buckets are zero"),
    ("no buckets", lambda: dc.js([], []), dc.EmptyInputError, r"no buckets"),
    # edges
    (
        "NaN edge",
        lambda: dc.histogram_counts(np.ones(3), np.array([0.0, np.nan])),
        dc.InvalidEdgesError,
        r"finite: edge 1 is NaN",
    ),
    (
        "inf edge",
        lambda: dc.histogram_counts(np.ones(3), np.array([np.inf])),
        dc.InvalidEdgesError,
        r"edge 0 is inf",
    ),
    (
        "unsorted edges",
        lambda: dc.histogram_counts(np.ones(3), np.array([1.0, 0.0])),
        dc.InvalidEdgesError,
        r"strictly increasing",
    ),
    ("unsorted edges in JSON", _bad_json_edges, dc.InvalidEdgesError, r"strictly increasing"),
    (
        "overflowing uniform edges",
        lambda: dc.Profile.fit(np.array([[-1.7e308], [1.7e308]]), binning="uniform"),
        dc.InvalidEdgesError,
        r"finite",
    ),
    # arguments
    (
        "n_bins 0",
        lambda: dc.Profile.fit(X, n_bins=0),
        dc.InvalidArgumentError,
        r"n_bins must be between 1 and",
    ),
    (
        "binning name",
        lambda: dc.Profile.fit(X, binning="equal"),
        dc.InvalidArgumentError,
        r'"quantile" or "uniform", got "equal"',
    ),
    ("negative count", lambda: dc.psi([1, -1], [1, 1]), dc.InvalidArgumentError, r"expected\[1\] is -1"),
    ("NaN proportion", lambda: dc.js([1, float("nan")], [1, 1]), dc.InvalidArgumentError, r"p\[1\] is NaN"),
    ("unknown feature", lambda: PROFILE.edges("zzz"), dc.InvalidArgumentError, r'no feature named "zzz"'),
    ("feature index", lambda: PROFILE.edges(7), dc.InvalidArgumentError, r"index 7 is out of range for 3"),
    (
        "duplicate names",
        lambda: dc.Profile.fit(X, feature_names=["a", "a", "b"]),
        dc.InvalidArgumentError,
        r'duplicate feature name "a"',
    ),
    (
        "categorical index",
        lambda: dc.Profile.fit(X, categorical=[5]),
        dc.InvalidArgumentError,
        r"index 5 is out of range",
    ),
    (
        "categorical name",
        lambda: dc.Profile.fit(X, categorical=["q"]),
        dc.InvalidArgumentError,
        r'"q" is not among',
    ),
    # serialisation
    ("bytes header", lambda: dc.Profile.from_bytes(b"garbage"), dc.SerializationError, r"DRIFTPRF"),
    ("window header", lambda: dc.Window.from_bytes(PROFILE.to_bytes()), dc.SerializationError, r"DRIFTWIN"),
    ("json fields", lambda: dc.Profile.from_json("{}"), dc.SerializationError, r"missing field"),
    ("json syntax", lambda: dc.Window.from_json("{"), dc.SerializationError, r"cannot decode window"),
]


@pytest.mark.parametrize(("call", "exc", "pattern"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_cases(call: Callable[[], Any], exc: type[dc.DriftCoreError], pattern: str) -> None:
    with pytest.raises(exc, match=pattern) as info:
        call()
    # one hierarchy: every error is a DriftCoreError and a ValueError
    assert isinstance(info.value, dc.DriftCoreError)
    assert isinstance(info.value, ValueError)


def test_allow_copy_accepts_what_borrowing_refuses() -> None:
    refused = [X.astype(np.float32), X[::2], [[1.0, 2.0, 3.0]], np.asarray(X, dtype=np.int64)]
    for data in refused:
        with pytest.raises((dc.DtypeError, dc.LayoutError)):
            PROFILE.score(data)
        want = PROFILE.score(np.ascontiguousarray(np.asarray(data, dtype=np.float64)))
        got = PROFILE.score(data, allow_copy=True)
        assert np.array_equal(got.psi, want.psi)


def test_exception_hierarchy() -> None:
    for name in [
        "ShapeError",
        "DtypeError",
        "LayoutError",
        "ProfileMismatchError",
        "EmptyInputError",
        "InvalidEdgesError",
        "InvalidArgumentError",
        "SerializationError",
    ]:
        assert issubclass(getattr(dc, name), dc.DriftCoreError)
    assert issubclass(dc.DriftCoreError, ValueError)
