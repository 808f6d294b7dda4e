"""Property tests: drift_core against the plain numpy reference on random data."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import drift_core as dc
from finpredict.testkit import drift_reference as ref

SETTINGS = settings(max_examples=150, deadline=None)

# values with many ties, NaN and infinities mixed with arbitrary finite floats
VALUES = st.one_of(
    st.sampled_from([0.0, 1.0, 2.0, -1.5, 3.25, math.nan, math.inf, -math.inf]),
    st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False),
)


@st.composite
def matrices(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 60, max_cols: int = 5) -> np.ndarray:
    n_rows = draw(st.integers(min_rows, max_rows))
    n_cols = draw(st.integers(1, max_cols))
    x = draw(hnp.arrays(np.float64, (n_rows, n_cols), elements=VALUES))
    if draw(st.booleans()):  # a constant column
        x[:, draw(st.integers(0, n_cols - 1))] = draw(st.sampled_from([0.0, 7.5]))
    if draw(st.booleans()):
        x = np.asfortranarray(x)
    return x


def close(a: float, b: float) -> bool:
    # 1e-12 relative; the absolute floor only matters where the exact value is 0
    return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-14)


@SETTINGS
@given(
    ref_data=matrices(),
    n_bins=st.integers(1, 12),
    binning=st.sampled_from(["quantile", "uniform"]),
    data=st.data(),
)
def test_edges_counts_and_statistics_match_numpy(ref_data, n_bins, binning, data):
    n_rows = data.draw(st.integers(1, 60))
    batch = data.draw(hnp.arrays(np.float64, (n_rows, ref_data.shape[1]), elements=VALUES))
    if data.draw(st.booleans()):
        batch = np.asfortranarray(batch)
    profile = dc.Profile.fit(ref_data, n_bins=n_bins, binning=binning)
    for j in range(ref_data.shape[1]):
        e = ref.edges(ref_data[:, j], n_bins, binning)
        got = profile.edges(j)
        assert got is not None
        assert np.array_equal(got, e), (got, e)
        assert np.array_equal(profile.reference_counts(j), ref.numeric_counts(ref_data[:, j], e))
    window = profile.histograms(batch)
    report = window.report()
    for j in range(ref_data.shape[1]):
        e = ref.edges(ref_data[:, j], n_bins, binning)
        expected = ref.numeric_counts(ref_data[:, j], e)
        actual = ref.numeric_counts(batch[:, j], e)
        assert np.array_equal(window.counts(j), actual)
        f = report[j]
        assert close(f.psi, ref.psi(expected, actual)), (f.psi, ref.psi(expected, actual))
        assert close(f.kl, ref.kl(actual, expected))
        assert close(f.js, ref.js(actual, expected))
        assert f.missing_share_current == np.isnan(batch[:, j]).mean()
    worst = int(np.argmax(report.psi))
    assert report.worst.name == report.feature_names[worst]


@SETTINGS
@given(ref_data=matrices(), data=st.data())
def test_categorical_counts_match_numpy(ref_data, data):
    n_cols = ref_data.shape[1]
    cat = data.draw(st.lists(st.integers(0, n_cols - 1), unique=True, min_size=1))
    batch = data.draw(hnp.arrays(np.float64, (data.draw(st.integers(1, 40)), n_cols), elements=VALUES))
    profile = dc.Profile.fit(ref_data, categorical=cat)
    window = profile.histograms(batch)
    for j in range(n_cols):
        if j in cat:
            cats = ref.categories(ref_data[:, j])
            assert profile.is_categorical(j)
            assert profile.categories(j) == cats.tolist()
            assert np.array_equal(profile.reference_counts(j), ref.categorical_counts(ref_data[:, j], cats))
            assert np.array_equal(window.counts(j), ref.categorical_counts(batch[:, j], cats))
        else:
            assert not profile.is_categorical(j)
            e = ref.edges(ref_data[:, j], 10)
            assert np.array_equal(window.counts(j), ref.numeric_counts(batch[:, j], e))


@SETTINGS
@given(batch=matrices(min_rows=2, max_rows=80), data=st.data())
def test_merging_any_split_equals_the_whole(batch, data):
    profile = dc.Profile.fit(batch, n_bins=data.draw(st.integers(1, 12)))
    n = batch.shape[0]
    cuts = sorted(data.draw(st.lists(st.integers(1, n - 1), max_size=5, unique=True)))
    merged = profile.window()
    for lo, hi in zip([0, *cuts], [*cuts, n], strict=True):
        part = profile.window()
        part.add(np.ascontiguousarray(batch[lo:hi]))
        merged.merge(part)
    whole = profile.histograms(batch)
    assert merged == whole
    assert merged.n_rows == n
    for j in range(batch.shape[1]):
        assert np.array_equal(merged.counts(j), whole.counts(j))
    # and through serialisation
    assert dc.Window.from_bytes(merged.to_bytes()) == whole


@SETTINGS
@given(
    p=st.lists(st.integers(0, 1000), min_size=1, max_size=20).filter(any),
    data=st.data(),
)
def test_free_statistics_match_numpy(p, data):
    q = data.draw(st.lists(st.integers(0, 1000), min_size=len(p), max_size=len(p)).filter(any))
    assert close(dc.psi(p, q), ref.psi(p, q))
    assert close(dc.kl(p, q), ref.kl(p, q))
    assert close(dc.js(p, q), ref.js(p, q))
    # proportions give the same result as counts
    pp = (np.asarray(p) / sum(p)).tolist()
    assert math.isclose(dc.psi(pp, q), dc.psi(p, q), rel_tol=1e-12, abs_tol=1e-14)


@SETTINGS
@given(values=hnp.arrays(np.float64, st.integers(0, 200), elements=VALUES), k=st.integers(0, 12))
def test_histogram_counts_kernel_matches_numpy(values, k):
    e = np.unique(np.linspace(-3.0, 5.0, k)) if k else np.empty(0)
    counts, missing = dc.histogram_counts(values, e)
    want = ref.numeric_counts(values, e)
    assert np.array_equal(counts, want[:-1])
    assert missing == want[-1]


def test_single_row_batches_and_large_blocks_match():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(20_011, 9))  # not a multiple of the row block or of 4 lanes
    x[rng.random(x.shape) < 0.05] = np.nan
    profile = dc.Profile.fit(x)
    for j in range(9):
        assert np.array_equal(profile.edges(j), ref.edges(x[:, j], 10))
        assert np.array_equal(
            profile.reference_counts(j), ref.numeric_counts(x[:, j], ref.edges(x[:, j], 10))
        )
    one = profile.histograms(x[:1])
    for j in range(9):
        assert np.array_equal(one.counts(j), ref.numeric_counts(x[:1, j], ref.edges(x[:, j], 10)))
    f = profile.histograms(np.asfortranarray(x))
    c = profile.histograms(x)
    assert f == c
