"""The demo's HTML report, rendered by a real headless Chromium (Debian's ``chromium``, installed
by ``scripts/setup_os.sh``; Playwright drives it, no browser download): every plot is in the
page and drawn from the data, the page is self-contained (no request leaves the file), the
browser logs no error, and the screenshot is a real picture, not a blank page."""

from __future__ import annotations

import base64
import json
import math
import random
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from finpredict.demo import report as dr

CHROMIUM = "/usr/bin/chromium"
PLOTS = ["plot-drift", "plot-drift-lines", "plot-scores", "plot-rollout", "plot-latency"]
DAYS = 14
FEATURES = [f"feature_{i:02d}" for i in range(45)]
DRIFTING = ["annual_revenue", "utilisation", "days_past_due"]


def synthetic_report(seed: int = 7) -> Any:
    """A week of stable traffic, a recession from day 10 that drifts three features, one canary
    that was promoted to 100% and one rolled back at 5%."""
    rng = random.Random(seed)
    drift: dict[int, dict[str, float]] = {}
    for day in range(DAYS):
        feats = {f: abs(rng.gauss(0.02, 0.012)) for f in FEATURES}
        for k, f in enumerate(DRIFTING):
            feats[f] = abs(rng.gauss(0.03, 0.01)) + (0.12 * (day - 9) / (k + 1) if day >= 10 else 0.0)
        drift[day] = feats
    gates = [
        ("auc_roc", 0.861, 0.82, ">="),
        ("ece", 0.021, 0.05, "<="),
        ("compute_p99_ms", 9.4, 50.0, "<="),
        ("demographic_parity_diff", 0.031, 0.05, "<="),
    ]
    v1 = dr.VersionRow(
        version=1,
        created_at="2026-03-02T09:14:00Z",
        gates=[dr.Gate(n, v, t, c, True) for n, v, t, c in gates],
        aliases=["production"],
    )
    v2 = dr.VersionRow(
        version=2,
        created_at="2026-03-12T06:01:00Z",
        gates=[dr.Gate(n, v * 1.01, t, c, True) for n, v, t, c in gates],
        note="retrained on recession data",
    )
    v3 = dr.VersionRow(
        version=3,
        created_at="2026-03-12T07:30:00Z",
        gates=[dr.Gate("auc_roc", 0.801, 0.82, ">=", False), dr.Gate("ece", 0.04, 0.05, "<=", True)],
        note="refused by the registry",
    )
    d = dr.RolloutDecision
    promoted = dr.Rollout(
        id="ro-1",
        model="credit-default",
        baseline_version=1,
        candidate_version=2,
        outcome="completed",
        decisions=[
            d(0, 0, 1, "start", "canary at the first step"),
            d(60, 1, 5, "promote", "error rate, p99 and score KL within bounds"),
            d(120, 2, 25, "promote", "within bounds"),
            d(150, 2, 25, "hold", "not enough samples yet (412 < 500)"),
            d(180, 3, 100, "promote", "within bounds"),
            d(240, 4, 100, "complete", "production -> v2"),
        ],
    )
    rolled_back = dr.Rollout(
        id="ro-2",
        model="credit-default",
        baseline_version=2,
        candidate_version=4,
        outcome="rolled_back",
        decisions=[
            d(0, 0, 1, "start", ""),
            d(60, 1, 5, "promote", "within bounds"),
            d(95, 1, 0, "rollback", "canary p99 131 ms > 100 ms"),
        ],
    )
    return dr.DemoReport(
        model="credit-default",
        generated_at="2026-03-12T08:00:00Z",
        versions=[v1, v2, v3],
        rollouts=[promoted, rolled_back],
        drift=drift,
        scores=dr.ScoreSamples(
            stable=[rng.betavariate(2, 9) for _ in range(3000)],
            canary=[rng.betavariate(2.4, 8) for _ in range(600)],
            stable_label="stable v1",
            canary_label="canary v2",
            threshold=0.35,
        ),
        latency=[
            dr.LatencyPhase("model server", samples_ms=[rng.lognormvariate(1.2, 0.4) for _ in range(400)]),
            dr.LatencyPhase("gateway", samples_ms=[rng.lognormvariate(1.6, 0.5) for _ in range(400)]),
            dr.LatencyPhase("canary (rolled back)", p50_ms=38.0, p99_ms=131.0),
        ],
        alerts=[
            dr.Alert("feature_psi_3_days", 12, 0.61, 0.25, "annual_revenue"),
            dr.Alert("prediction_kl", 10.5, 0.14, 0.1),
        ],
        measured=dr.Measured(
            commit_to_production_s=1260, time_to_detect_h=11, time_to_rollback_s=35, p50_ms=3.4, p99_ms=9.8
        ),
        links=dr.Links(
            wandb_dir="wandb/offline-run-20260312_080000-abc123",
            prometheus_url="http://127.0.0.1:9090",
            other={"drift report": "reports/drift.html"},
        ),
    )


def test_json_round_trip_is_exact_and_strict() -> None:
    report = synthetic_report()
    text = report.to_json()
    assert dr.DemoReport.from_json(text) == report
    assert dr.DemoReport.from_json(text).drift[3]["utilisation"] == report.drift[3]["utilisation"]
    # Not-a-number values are left out, so the file is strict JSON.
    report.drift[0]["feature_00"] = math.nan
    report.scores.canary.append(math.inf)
    strict = json.loads(report.to_json(), parse_constant=lambda c: pytest.fail(f"non-strict JSON: {c}"))
    assert "feature_00" not in strict["drift"]["0"]
    assert len(strict["scores"]["canary"]) == 600


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert shutil.which("chromium") or Path(CHROMIUM).exists(), (
        "headless Chromium is missing: run `bash scripts/setup_os.sh` (Debian package chromium)"
    )
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True)
        yield chromium
        chromium.close()


class Watched:
    """A page that records console errors, page errors and every request leaving the file."""

    def __init__(self, browser: Browser) -> None:
        self.page: Page = browser.new_page(viewport={"width": 1200, "height": 900})
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.on(
            "request", lambda r: None if r.url.startswith(("file:", "data:")) else self.outside.append(r.url)
        )

    def open(self, path: Path) -> Page:
        self.page.goto(path.as_uri(), wait_until="load")
        return self.page


def _picture_stats(browser: Browser, png: bytes) -> dict[str, float]:
    """Decodes the PNG in the browser and measures it: size, colours, non-background share."""
    page = browser.new_page()
    try:
        return page.evaluate(  # type: ignore[no-any-return]
            """async (b64) => {
                const img = new Image();
                img.src = 'data:image/png;base64,' + b64;
                await img.decode();
                const c = document.createElement('canvas');
                c.width = img.width; c.height = img.height;
                const ctx = c.getContext('2d');
                ctx.drawImage(img, 0, 0);
                const d = ctx.getImageData(0, 0, c.width, c.height).data;
                const colours = new Set();
                let ink = 0, n = 0;
                for (let i = 0; i < d.length; i += 4 * 5) {
                    n++;
                    colours.add((d[i] << 16) | (d[i + 1] << 8) | d[i + 2]);
                    if (d[i] < 225 || d[i + 1] < 225 || d[i + 2] < 225) ink++;
                }
                return {width: c.width, height: c.height, colours: colours.size, ink: ink / n};
            }""",
            base64.b64encode(png).decode(),
        )
    finally:
        page.close()


def test_report_renders_in_chromium(browser: Browser, tmp_path: Path) -> None:
    report = synthetic_report()
    path = dr.write_report(report, tmp_path / "out" / "demo.html")
    assert path == tmp_path / "out" / "demo.html"
    text = path.read_text()
    assert "<script" not in text  # nothing to run, nothing to fetch
    assert 'src="http' not in text
    assert "url(" not in text

    watched = Watched(browser)
    page = watched.open(path)
    for plot in PLOTS:
        box = page.locator(f"#{plot}").bounding_box()
        assert box is not None, f"{plot} is not in the page"
        assert box["width"] > 300, f"{plot} is {box['width']} px wide"
        assert box["height"] > 100, f"{plot} is {box['height']} px high"

    # Each plot is drawn from the data.
    threshold = report.psi_threshold
    over = sum(1 for feats in report.drift.values() for v in feats.values() if v > threshold)
    assert over > 0
    assert page.locator("#plot-drift rect.cell").count() == DAYS * (len(FEATURES) + len(DRIFTING))
    assert page.locator("#plot-drift rect.cell.over").count() == over
    assert page.locator("#plot-drift-lines polyline").count() == 6
    assert page.locator("#plot-drift-lines .alert-marker").count() == len(report.alerts)
    assert page.locator("#plot-scores rect.bar").count() > 20  # two overlaid histograms
    rollouts = page.locator("#plot-rollout svg.rollout")
    assert rollouts.count() == 2
    for i, ro in enumerate(report.rollouts):
        assert page.locator(f"#plot-rollout-{i} circle.decision").count() == len(ro.decisions)
    assert page.locator("#plot-latency rect.bar").count() == 2 * len(report.latency)
    ids = page.eval_on_selector_all("[id]", "els => els.map(e => e.id)")
    assert len(ids) == len(set(ids)), "duplicate element ids"
    assert page.locator("#measured .card").count() == 4
    assert page.locator("#measured .card.ok").count() == 3  # deploy, rollback, p99 within target
    assert page.locator("#versions tbody tr").count() == 3
    assert page.locator("#versions .chip.bad").count() == 1
    assert page.locator("#alerts tbody tr").count() == 2
    assert "wandb/offline-run-20260312_080000-abc123" in page.locator("#links").inner_text()
    assert page.locator('#links a[href="http://127.0.0.1:9090"]').count() == 1

    png = page.screenshot(full_page=True, path=str(tmp_path / "demo-report.png"))
    assert watched.errors == []
    assert watched.outside == []
    assert len(png) > 100_000, f"screenshot is only {len(png)} bytes"
    stats = _picture_stats(browser, png)
    assert stats["width"] == 1200
    assert stats["height"] > 2000  # the whole page, not one viewport
    assert stats["colours"] > 200
    assert stats["ink"] > 0.02, f"only {stats['ink']:.1%} of the screenshot is not background"


def test_empty_report_renders_with_placeholders(browser: Browser, tmp_path: Path) -> None:
    path = dr.write_report(dr.DemoReport(model="m", generated_at="now"), tmp_path / "empty.html")
    watched = Watched(browser)
    page = watched.open(path)
    for plot in PLOTS:
        assert page.locator(f"#{plot}").count() == 1, plot
    assert page.locator("svg.empty").count() == 4  # drift (2), scores, latency
    assert "not measured" in page.locator("#measured").inner_text()
    assert watched.errors == []
    assert watched.outside == []
