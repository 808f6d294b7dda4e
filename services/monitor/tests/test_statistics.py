"""Acceptance 6: the statistics the monitor serves equal an independent computation on the raw
stored records (Parquet read directly, histograms with numpy on the profile's edges, PSI / KL /
JS by their formulas with the documented epsilon rule, AUC with scikit-learn). Also the drift
report command on the same data."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import numpy as np
import polars as pl
import pytest
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.cli import app
from finpredict.testkit.monitor import MODEL, authed, monitor_env, stub
from finpredict.testkit.process import start_service

EPS = 1e-4


def _shares(counts: np.ndarray) -> np.ndarray:
    shares = counts.astype(np.float64) / counts.sum()
    return np.where(counts == 0, EPS, shares)


def _buckets(profile: drift_core.Profile, feature: str, values: pl.Series) -> np.ndarray:
    """Counts in the profile's bucket order: bins (or categories + unseen), then missing."""
    n_buckets = len(profile.bucket_labels(feature))
    missing = values.is_null().to_numpy()
    idx = np.full(values.len(), n_buckets - 1)
    if profile.is_categorical(feature):
        cats = [str(c) for c in profile.categories(feature) or []]
        lookup = {c: i for i, c in enumerate(cats)}
        present = values.to_list()
        idx = np.array([n_buckets - 1 if v is None else lookup.get(v, len(cats)) for v in present])
    else:
        edges = profile.edges(feature)
        assert edges is not None
        x = values.cast(pl.Float64).to_numpy()
        idx[~missing] = np.searchsorted(edges, x[~missing], side="right")  # left-closed bins
    return np.bincount(idx, minlength=n_buckets)


def _psi(e: np.ndarray, a: np.ndarray) -> float:
    return float(np.sum((a - e) * np.log(a / e)))


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    return float(np.sum(p * np.log(p / q)))


def _js(p: np.ndarray, q: np.ndarray) -> float:
    m = (p + q) / 2
    return _kl(p, m) / 2 + _kl(q, m) / 2


Replayed = tuple[Path, pb.GetDriftReportResponse, pb.GetDriftReportResponse]


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory, profile_bytes: bytes) -> Iterator[Replayed]:
    """Two days (calm, then a recession) with labels 30 h late, through one real monitor."""
    work = tmp_path_factory.mktemp("stats")
    (work / "profiles" / MODEL).mkdir(parents=True)
    (work / "profiles" / MODEL / "1.bin").write_bytes(profile_bytes)
    proc = start_service("monitor", work, env=monitor_env(work))
    try:
        with grpc.insecure_channel(proc.target) as plain:
            ch = authed(plain)
            sc = rp.Scenario(days=2, per_hour=60, drift="recession", shift_day=1, seed=71)
            result = rp.replay(ch, rp.generate(sc), MODEL, 1, label_delay=timedelta(hours=30))
            assert result.outcomes_matched == 2 * 24 * 60
            ref = types_pb2.ModelRef(name=MODEL, version=1)
            s = stub(ch)
            daily = s.GetDriftReport(
                pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_DAILY), timeout=30
            )
            hourly = s.GetDriftReport(
                pb.GetDriftReportRequest(model=ref, window=pb.WINDOW_SIZE_HOURLY), timeout=30
            )
        yield work, daily, hourly
    finally:
        proc.stop()


def test_served_statistics_equal_an_independent_computation(replayed: Replayed) -> None:
    tmp_path, daily, hourly = replayed
    profile = drift_core.Profile.from_bytes((tmp_path / "profiles" / MODEL / "1.bin").read_bytes())
    preds = pl.read_parquet(
        str(tmp_path / "data" / "predictions" / "**" / "*.parquet"), hive_partitioning=False
    )
    outcomes = pl.read_parquet(
        str(tmp_path / "data" / "outcomes" / "**" / "*.parquet"), hive_partitioning=False
    )
    preds = preds.join(outcomes.select("request_id", "defaulted", "observed_at"), on="request_id", how="left")
    features = [f for f in profile.feature_names if f != "__score__"]
    for size, resp in (("1d", daily), ("1h", hourly)):
        windows = preds.with_columns(pl.col("time").dt.truncate(size).alias("w")).partition_by(
            "w", as_dict=True
        )
        assert len(resp.windows) == len(windows)
        for w in resp.windows:
            raw = windows[(w.start.ToDatetime(tzinfo=rp.START.tzinfo),)]
            assert w.count == raw.height
            served = {fd.feature: fd for fd in w.features}
            assert set(served) == set(features)
            for f in features:
                counts = _buckets(profile, f, raw[f"f.{f}"])
                expected = _psi(_shares(profile.reference_counts(f)), _shares(counts))
                assert served[f].psi == pytest.approx(expected, rel=1e-9, abs=1e-12), (size, f)
                ref_f, cur_f = _shares(profile.reference_counts(f)), _shares(counts)
                assert served[f].kl == pytest.approx(_kl(cur_f, ref_f), rel=1e-9, abs=1e-12), (size, f)
                assert served[f].js == pytest.approx(_js(cur_f, ref_f), rel=1e-9, abs=1e-12), (size, f)
                assert served[f].missing_share == pytest.approx(raw[f"f.{f}"].null_count() / raw.height)
            ref = _shares(profile.reference_counts("__score__"))
            cur = _shares(_buckets(profile, "__score__", raw["score"]))
            assert w.score_kl == pytest.approx(_kl(ref, cur), rel=1e-9)
            assert w.score_js == pytest.approx(_js(ref, cur), rel=1e-9)
            # the score histogram itself, on the reference's bins (then missing)
            score_edges = profile.edges("__score__")
            assert score_edges is not None
            assert list(w.score_histogram.edges) == score_edges.tolist()
            assert list(w.score_histogram.counts) == _buckets(profile, "__score__", raw["score"]).tolist()
            assert list(w.score_histogram.reference_proportions) == pytest.approx(
                profile.reference_proportions("__score__").tolist()
            )
            labeled = raw.filter(pl.col("defaulted").is_not_null())
            assert w.labeled == labeled.height
            y = labeled["defaulted"].to_numpy()
            s = labeled["score"].to_numpy()
            assert w.accuracy == pytest.approx(np.mean((s >= labeled["threshold"].to_numpy()) == y))
            assert w.auc == pytest.approx(roc_auc_score(y, s)) if 0 < y.sum() < y.size else np.isnan(w.auc)
            bins = np.minimum((s * 10).astype(int), 9)
            ece = (
                sum(abs(y[bins == b].mean() - s[bins == b].mean()) * (bins == b).sum() for b in set(bins))
                / y.size
            )
            assert w.ece == pytest.approx(ece)
            delay = (labeled["observed_at"] - labeled["time"]).dt.total_seconds().median() / 3600
            assert w.label_delay_hours == pytest.approx(delay)
            assert w.approval_rate == pytest.approx((raw["score"] < raw["threshold"]).mean())
    # the recession day drifts, the calm day does not
    assert (
        max(fd.psi for fd in daily.windows[1].features)
        > 0.25
        > max(fd.psi for fd in daily.windows[0].features)
    )


def test_drift_report_renders_psi_over_time_and_score_distributions(
    replayed: Replayed, tmp_path: Path
) -> None:
    work = replayed[0]
    out = tmp_path / "report.html"
    args = ["report", "--model", MODEL, "--version", "1", "--data-dir", str(work / "data")]
    args += ["--profiles-dir", str(work / "profiles"), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert page.count("<polyline") == 45 + 1  # one PSI chart per feature + the score KL chart
    assert page.count("<svg") == 45 + 2  # + the score distribution bars
    assert "credit_utilization" in page
    assert "Score distribution" in page
    assert "<script" not in page  # no network, no scripts at view time
    assert "http" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
    no_data = [a if a != str(work / "data") else str(tmp_path / "nothing") for a in args]
    missing = CliRunner().invoke(app, no_data)
    assert missing.exit_code != 0
    assert "no stored predictions" in missing.output
