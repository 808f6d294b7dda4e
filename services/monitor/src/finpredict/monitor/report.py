"""``finpredict drift report``: a self-contained HTML page (inline SVG, no scripts, no network)
with per-feature PSI over time and score distributions, computed from the monitor's stored
records and the version's reference profile."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import polars as pl

import drift_core
from finpredict.monitor.drift_input import SCORE_COLUMN, drift_frame
from finpredict.monitor.store import RecordStore

W, H, PAD = 260, 120, 28


@dataclass
class DayDrift:
    day: datetime
    count: int
    psi: dict[str, float]
    score_props: list[float]
    score_kl: float


def compute(data_dir: Path, profile: drift_core.Profile, model: str, version: int) -> list[DayDrift]:
    """Daily drift of one version from the stored records (independent of the live windows)."""
    frame = RecordStore(data_dir).read_predictions()
    frame = frame.filter((pl.col("model") == model) & (pl.col("version") == version))
    if frame.is_empty():
        return []
    frame = frame.with_columns(pl.col("time").dt.truncate("1d").alias("_day"))
    out = []
    has_score = SCORE_COLUMN in profile.feature_names
    ref = profile.reference_proportions(SCORE_COLUMN) if has_score else None
    for (day,), part in sorted(frame.partition_by("_day", as_dict=True).items(), key=lambda kv: str(kv[0])):
        assert isinstance(day, datetime)
        window = profile.histograms(drift_frame(profile, part), allow_copy=True)
        report = window.report()
        psi = {f.name: f.psi for f in report.features if f.name != SCORE_COLUMN}
        props = [float(x) for x in window.proportions(SCORE_COLUMN)] if has_score else []
        kl = float(drift_core.kl(ref, window.proportions(SCORE_COLUMN))) if ref is not None else math.nan
        out.append(DayDrift(day, part.height, psi, props, kl))
    return out


def _line_chart(title: str, xs: list[str], ys: list[float], threshold: float | None) -> str:
    finite = [y for y in ys if math.isfinite(y)]
    top = max([*finite, threshold or 0.0, 1e-9]) * 1.1
    n = max(len(ys) - 1, 1)

    def px(i: int) -> float:
        return PAD + i * (W - 2 * PAD) / n

    def py(y: float) -> float:
        return H - PAD + -(y / top) * (H - 2 * PAD)

    points = " ".join(f"{px(i):.1f},{py(y):.1f}" for i, y in enumerate(ys) if math.isfinite(y))
    over = threshold is not None and any(y > threshold for y in finite)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img">',
        f"<title>{html.escape(title)}</title>",
        f'<text x="4" y="12" font-size="11" font-weight="bold" fill="{"#b00" if over else "#222"}">'
        f"{html.escape(title)}</text>",
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#999"/>',
        f'<text x="2" y="{PAD + 4}" font-size="9">{top:.2g}</text>',
        f'<text x="{PAD}" y="{H - 8}" font-size="9">{html.escape(xs[0] if xs else "")}</text>',
        f'<text x="{W - PAD - 40}" y="{H - 8}" font-size="9">{html.escape(xs[-1] if xs else "")}</text>',
    ]
    if threshold is not None:
        parts.append(
            f'<line x1="{PAD}" y1="{py(threshold):.1f}" x2="{W - PAD}" y2="{py(threshold):.1f}" '
            f'stroke="#d33" stroke-dasharray="4 3"/>'
        )
    parts.append(f'<polyline fill="none" stroke="#2462c2" stroke-width="1.5" points="{points}"/>')
    for i, y in enumerate(ys):
        if math.isfinite(y):
            parts.append(f'<circle cx="{px(i):.1f}" cy="{py(y):.1f}" r="2" fill="#2462c2"/>')
    parts.append("</svg>")
    return "".join(parts)


def _bars(title: str, labels: list[str], series: dict[str, list[float]]) -> str:
    colours = ["#888", "#2462c2", "#d33", "#393"]
    w, h = 620, 220
    top = max([v for vs in series.values() for v in vs] + [1e-9]) * 1.1
    groups = len(labels)
    gw = (w - 2 * PAD) / max(groups, 1)
    bw = gw / (len(series) + 1)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
        f'<title>{html.escape(title)}</title><text x="4" y="12" font-size="12" font-weight="bold">'
        f"{html.escape(title)}</text>",
        f'<line x1="{PAD}" y1="{h - PAD}" x2="{w - PAD}" y2="{h - PAD}" stroke="#999"/>',
    ]
    for s, (name, values) in enumerate(series.items()):
        colour = colours[s % len(colours)]
        parts.append(
            f'<rect x="{w - 190}" y="{16 + 12 * s}" width="8" height="8" fill="{colour}"/>'
            f'<text x="{w - 178}" y="{24 + 12 * s}" font-size="10">{html.escape(name)}</text>'
        )
        for g, v in enumerate(values):
            bh = v / top * (h - 2 * PAD)
            x = PAD + g * gw + s * bw
            parts.append(
                f'<rect x="{x:.1f}" y="{h - PAD - bh:.1f}" width="{bw:.1f}" height="{bh:.1f}" '
                f'fill="{colour}">'
                f"<title>{html.escape(name)} {html.escape(labels[g])}: {v:.3f}</title></rect>"
            )
    for g, label in enumerate(labels):
        parts.append(
            f'<text x="{PAD + g * gw:.1f}" y="{h - 14}" font-size="8">{html.escape(label[:10])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def render(
    days: list[DayDrift], profile: drift_core.Profile, model: str, version: int, psi_threshold: float
) -> str:
    """The HTML page."""
    xs = [d.day.strftime("%m-%d") for d in days]
    features = [f for f in profile.feature_names if f != SCORE_COLUMN]
    worst = sorted(features, key=lambda f: max((d.psi.get(f, 0.0) for d in days), default=0.0), reverse=True)
    charts = "".join(
        f'<div class="c">{_line_chart(f, xs, [d.psi.get(f, math.nan) for d in days], psi_threshold)}</div>'
        for f in worst
    )
    score_section = "<p>The reference profile has no score distribution.</p>"
    if SCORE_COLUMN in profile.feature_names and days:
        labels = profile.bucket_labels(SCORE_COLUMN)
        ref = [float(x) for x in profile.reference_proportions(SCORE_COLUMN)]
        worst_day = max(days, key=lambda d: d.score_kl if math.isfinite(d.score_kl) else -1)
        series = {"reference": ref, f"first day {xs[0]}": days[0].score_props}
        series[f"highest KL {worst_day.day:%m-%d}"] = worst_day.score_props
        series[f"last day {xs[-1]}"] = days[-1].score_props
        score_section = _bars(
            "Score distribution (share per reference bucket)", labels, series
        ) + _line_chart("score KL(reference || day)", xs, [d.score_kl for d in days], 0.1)
    rows = "".join(
        f"<tr><td>{d.day:%Y-%m-%d}</td><td>{d.count}</td><td>{d.score_kl:.4f}</td>"
        f"<td>{html.escape(', '.join(f for f in worst if d.psi.get(f, 0) > psi_threshold) or '-')}</td></tr>"
        for d in days
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Drift report {html.escape(model)} v{version}</title>
<style>body{{font-family:sans-serif;margin:1.5em}} .grid{{display:flex;flex-wrap:wrap;gap:6px}}
.c{{border:1px solid #ddd}} table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:2px 6px}}</style>
</head><body>
<h1>Drift report: {html.escape(model)} version {version}</h1>
<p>{len(days)} daily windows, {sum(d.count for d in days)} predictions. PSI against the version's reference
profile; dashed red line: the alert threshold ({psi_threshold}). Features sorted by their worst day.</p>
<h2>Score distribution</h2>{score_section}
<h2>Per-feature PSI over time (daily)</h2><div class="grid">{charts}</div>
<h2>Days</h2><table><tr><th>day</th><th>predictions</th><th>score KL</th><th>features with PSI &gt;
{psi_threshold}</th></tr>{rows}</table>
</body></html>
"""
