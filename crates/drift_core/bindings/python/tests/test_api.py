"""The published Python API: stubs, serialisation, data frames, windows, reports."""

from __future__ import annotations

import ast
import inspect
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

import drift_core as dc
from drift_core import _drift_core

STUB = Path(dc.__file__).with_name("_drift_core.pyi")


def _stub_names() -> tuple[set[str], dict[str, set[str]]]:
    tree = ast.parse(STUB.read_text())
    names: set[str] = set()
    members: dict[str, set[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            names.add(node.name)
            members[node.name] = {
                n.name for n in node.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")
            }
        elif isinstance(node, ast.FunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
    return {n for n in names if not n.startswith("_") or n == "__version__"}, members


def test_stub_and_module_have_the_same_public_names() -> None:
    stub, members = _stub_names()
    module = {n for n in dir(_drift_core) if not n.startswith("_") or n == "__version__"}
    assert stub == module
    for cls, names in members.items():
        runtime = {n for n in dir(getattr(_drift_core, cls)) if not n.startswith("_")}
        if issubclass(getattr(_drift_core, cls), BaseException):
            continue
        assert names == runtime, cls
    # the package re-exports everything
    assert set(dc.__all__) == module


def test_fit_signature_is_keyword_only() -> None:
    sig = inspect.signature(dc.Profile.fit)
    assert next(iter(sig.parameters)) == "data"
    assert all(p.kind is p.KEYWORD_ONLY for p in list(sig.parameters.values())[1:])


def test_profile_accessors_and_roundtrips() -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(5000, 3))
    x[:50, 1] = np.nan
    p = dc.Profile.fit(x, feature_names=["age", "income", "score"], n_bins=5)
    assert p.feature_names == ["age", "income", "score"]
    assert (p.n_features, p.n_rows, p.n_bins, p.binning) == (3, 5000, 5, "quantile")
    edges = p.edges("income")
    assert edges is not None
    assert edges.shape == (4,)
    counts = p.reference_counts("income")
    assert counts.sum() == 5000
    assert counts[-1] == 50
    assert np.allclose(p.reference_proportions(1), counts / 5000)
    labels = p.bucket_labels("income")
    assert len(labels) == 6
    assert labels[0].startswith("[-inf, ")
    assert labels[-1] == "<missing>"
    for back in (
        dc.Profile.from_bytes(p.to_bytes()),
        dc.Profile.from_json(p.to_json()),
        pickle.loads(pickle.dumps(p)),
    ):
        assert back == p
        assert back.fingerprint == p.fingerprint
        assert np.array_equal(back.edges("income"), edges)
    assert json.loads(p.to_json())["features"][1]["name"] == "income"
    assert p != dc.Profile.fit(x[:100])


def test_missing_share_jump_is_drift() -> None:
    """Acceptance 5: missing share 1% -> 20% with the same non-missing distribution."""
    rng = np.random.default_rng(5)
    n = 200_000
    ref = rng.normal(size=n)
    ref[rng.random(n) < 0.01] = np.nan
    cur = rng.normal(size=n)
    cur[rng.random(n) < 0.20] = np.nan
    profile = dc.Profile.fit(ref)
    report = profile.score(cur)
    assert report.psi[0] > 0.25
    assert report.drifted(0.25) == ["f0"]
    f = report.worst
    assert abs(f.missing_share_reference - 0.01) < 0.002
    assert abs(f.missing_share_current - 0.20) < 0.005
    # a tool that drops missing values sees (almost) no drift on the same data
    ref_values = profile.reference_counts(0)[:-1]
    cur_values = profile.histograms(cur).counts(0)[:-1]
    assert dc.psi(ref_values, cur_values) < 0.01


def test_shifted_feature_is_the_worst() -> None:
    rng = np.random.default_rng(2)
    ref = rng.normal(size=(20_000, 4))
    cur = rng.normal(size=(20_000, 4))
    cur[:, 2] += 1.0
    report = dc.Profile.fit(ref).score(cur)
    assert report.worst.name == "f2"
    assert report.drifted() == ["f2"]
    assert report["f2"].psi == report.psi[2] > 0.25
    assert report[0].psi < 0.01
    assert len(report) == 4
    d = report.to_dict()
    assert d["worst"] == "f2"
    assert d["n_current"] == 20_000
    assert len(d["features"]) == 4


def test_score_distribution_1d_kl() -> None:
    rng = np.random.default_rng(4)
    scores = rng.beta(2, 5, size=50_000)
    profile = dc.Profile.fit(scores, feature_names=["p_default"], n_bins=20)
    same = profile.score(rng.beta(2, 5, size=10_000))
    moved = profile.score(rng.beta(3, 4, size=10_000))
    assert same.kl[0] < 0.01 < 0.1 < moved.kl[0]
    assert moved.js[0] > same.js[0]


def test_windows_hour_to_day() -> None:
    rng = np.random.default_rng(6)
    x = rng.normal(size=(24_000, 5))
    profile = dc.Profile.fit(x)
    day = profile.window()
    hours = []
    for h in range(24):
        w = dc.Window(profile)
        w.add(x[h * 1000 : (h + 1) * 1000])
        hours.append(w)
        day.merge(w)
    assert day == profile.histograms(x)
    snap = day.snapshot()
    day.add(x[:10])
    assert snap.n_rows == 24_000
    assert day.n_rows == 24_010
    assert dc.Window.from_json(snap.to_json()) == snap
    assert pickle.loads(pickle.dumps(snap)) == snap
    assert snap.profile == profile
    assert [c.sum() for c in snap.all_counts()] == [24_000] * 5
    assert np.isclose(snap.proportions(0).sum(), 1.0)
    # merging a window into itself doubles it
    snap.merge(snap)
    assert snap.n_rows == 48_000
    snap.clear()
    assert snap.n_rows == 0
    # reports of windows equal reports of the same rows scored at once
    assert np.array_equal(day.report().psi, profile.score(np.concatenate([x, x[:10]])).psi)


def test_polars_frames() -> None:
    ref = pl.DataFrame(
        {
            "amount": [10.0, 20.0, None, 40.0, float("nan"), 60.0] * 50,
            "purpose": ["car", "home", "car", None, "edu", "car"] * 50,
            "term": [12, 24, 36, 12, 24, 36] * 50,
        },
        schema_overrides={"purpose": pl.Categorical},
    )
    p = dc.Profile.fit(ref, categorical=["term"])
    assert p.feature_names == ["amount", "purpose", "term"]
    assert p.categories("purpose") == ["car", "edu", "home"]
    assert p.categories("term") == [12.0, 24.0, 36.0]
    assert p.categories("amount") is None
    assert p.edges("purpose") is None
    assert p.reference_counts("amount")[-1] == 100  # null and NaN are both missing
    assert p.reference_counts("purpose").tolist() == [150, 50, 50, 0, 50]  # car edu home unseen missing
    assert p.bucket_labels("purpose") == ["car", "edu", "home", "<unseen>", "<missing>"]
    cur = pl.DataFrame(
        {
            "term": [12, 60],  # columns in another order, plus an extra column
            "extra": ["x", "y"],
            "purpose": ["boat", None],
            "amount": [15.0, 15.0],
        }
    )
    w = p.histograms(cur)
    assert w.counts("purpose").tolist() == [0, 0, 0, 1, 1]
    assert w.counts("term").tolist() == [1, 0, 0, 1, 0]
    # the same frame as numpy codes gives the same counts for the numeric columns
    n = p.score(ref)
    assert np.allclose(n.psi, 0.0, atol=1e-12)
    series = dc.Profile.fit(pl.Series("score", [0.1, 0.2, 0.3, 0.4]))
    assert series.feature_names == ["score"]
    assert dc.Profile.from_bytes(p.to_bytes()).categories("purpose") == ["car", "edu", "home"]


def test_fortran_and_c_order_are_borrowed_alike() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(3000, 6))
    p = dc.Profile.fit(x)
    assert dc.Profile.fit(np.asfortranarray(x)) == p
    assert p.histograms(np.asfortranarray(x)) == p.histograms(x)
    # a single column of a Fortran array is contiguous: borrowed, no allow_copy needed
    q = dc.Profile.fit(np.ascontiguousarray(x[:, :1]))
    assert q.histograms(np.asfortranarray(x)[:, 0]) == q.histograms(np.ascontiguousarray(x[:, 0]))


def test_thread_pool_size_from_environment() -> None:
    code = (
        "import drift_core, numpy as np; drift_core.Profile.fit(np.ones((10, 2))); "
        "print(drift_core.num_threads())"
    )
    for env_value, want in (("3", "3"), ("1", "1")):
        env = {**os.environ, dc.NUM_THREADS_ENV: env_value}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == want
    assert dc.num_threads() >= 1


def test_simd_and_portable_kernels_agree_on_edge_values() -> None:
    # values exactly on edges, +/-0.0, infinities and NaN, in both layouts and many widths
    edges_src = np.array([[-1.0, 0.0, 1.0, 2.0, 3.0, 5.0] * 7]).T
    p = dc.Profile.fit(edges_src, n_bins=6)
    e = p.edges(0)
    assert e is not None
    vals = np.concatenate([e, -e, [0.0, -0.0, np.inf, -np.inf, np.nan, 1e300, -1e300]])
    for width in (1, 3, 4, 5, 9):
        x = np.tile(vals[:, None], (1, width))
        pw = dc.Profile.fit(np.tile(edges_src, (1, width)), n_bins=6)
        for arr in (x, np.asfortranarray(x)):
            w = pw.histograms(arr)
            for j in range(width):
                counts, missing = dc.histogram_counts(np.ascontiguousarray(x[:, j]), e)
                assert w.counts(j).tolist() == [*counts.tolist(), missing]
