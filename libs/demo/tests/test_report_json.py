"""The demo report from saved data: a JSON round trip, and the page rendered by
``python -m finpredict.demo.report`` with every plot in it (Chromium renders it in
``tests/demo/test_report_render.py``)."""

from __future__ import annotations

import math
from pathlib import Path

from finpredict.demo import report as dr
from finpredict.demo.report.__main__ import main

PLOTS = ["plot-drift", "plot-drift-lines", "plot-scores", "plot-rollout", "plot-latency"]


def fixture_report() -> dr.DemoReport:
    return dr.DemoReport(
        model="credit-default",
        generated_at="2025-01-02T03:04:05+00:00",
        versions=[
            dr.VersionRow(1, "2025-01-01T00:00:00+00:00", [dr.Gate("auc_roc", 0.86, 0.82, ">=", True)]),
            dr.VersionRow(2, "2025-01-02T00:00:00+00:00", [dr.Gate("ece", 0.07, 0.05, "<=", False)]),
        ],
        rollouts=[
            dr.Rollout(
                "r-1",
                "credit-default",
                1,
                2,
                "rolled_back",
                [
                    dr.RolloutDecision(0.0, 0, 1.0, "start"),
                    dr.RolloutDecision(2.5, 0, 0.0, "rollback", "psi", "score PSI 0.412 KL 0.090; SRM ok"),
                ],
            )
        ],
        drift={0: {"utilisation": 0.01, "revenue": 0.02}, 1: {"utilisation": 0.4, "revenue": math.nan}},
        scores=dr.ScoreSamples(stable=[0.1, 0.2, math.inf], canary=[0.3, 0.4], threshold=0.25),
        latency=[dr.LatencyPhase("single calls", samples_ms=[4.0, 5.0, 6.0])],
        alerts=[dr.Alert("feature_psi_3d", 1.0, 0.4, 0.25, "utilisation")],
        measured=dr.Measured(time_to_rollback_s=2.5, p50_ms=5.0, p99_ms=6.0),
        links=dr.Links(wandb_dir="/tmp/wandb"),
    )


def test_the_json_round_trip_drops_only_non_finite_values() -> None:
    report = fixture_report()
    back = dr.DemoReport.from_json(report.to_json())
    assert back.drift == {0: {"utilisation": 0.01, "revenue": 0.02}, 1: {"utilisation": 0.4}}
    assert back.scores.stable == [0.1, 0.2]
    assert back.versions == report.versions
    assert back.rollouts == report.rollouts
    assert back.measured == report.measured


def test_a_saved_report_renders_every_plot(tmp_path: Path) -> None:
    data = tmp_path / "report.json"
    data.write_text(fixture_report().to_json())
    out = tmp_path / "html" / "report.html"
    assert main([str(data), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    for plot in PLOTS:
        assert f'id="{plot}"' in page, plot
    assert "<script" not in page
    assert "r-1" in page
    assert "rolled_back" in page
    assert "score PSI 0.412 KL 0.090; SRM ok" in page  # what drove each decision
    assert page == dr.render_html(dr.DemoReport.from_json(data.read_text()))
