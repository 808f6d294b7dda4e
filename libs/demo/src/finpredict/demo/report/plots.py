"""The demo report's plots, each one inline SVG drawn from the report's data."""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence

from finpredict.demo.report.model import (
    P99_ALERT_MS,
    P99_GATE_MS,
    Alert,
    LatencyPhase,
    Rollout,
    ScoreSamples,
)
from finpredict.demo.report.svg import (
    BAD,
    CANARY,
    MUTED,
    SERIES,
    STABLE,
    VERDICT_COLOURS,
    WARN,
    Frame,
    empty_plot,
    escape,
    fmt_number,
    legend_block,
    nice_ticks,
    svg_doc,
)


def _heat_colour(psi: float, threshold: float) -> str:
    """White -> yellow -> orange below the threshold; red -> dark red above it."""
    stops = [(0.0, (255, 255, 255)), (0.5, (254, 227, 145)), (1.0, (253, 141, 60)), (2.0, (215, 48, 31))]
    stops.append((4.0, (127, 0, 0)))
    t = max(0.0, psi / threshold) if threshold > 0 else 0.0
    for (a, ca), (b, cb) in itertools.pairwise(stops):
        if t <= b:
            f = (t - a) / (b - a)
            r, g, bl = (round(ca[i] + (cb[i] - ca[i]) * f) for i in range(3))
            return f"rgb({r},{g},{bl})"
    return "rgb(127,0,0)"


def _features_by_worst(drift: Mapping[int, Mapping[str, float]]) -> list[str]:
    worst: dict[str, float] = {}
    for feats in drift.values():
        for f, v in feats.items():
            if math.isfinite(v):
                worst[f] = max(worst.get(f, 0.0), v)
            else:
                worst.setdefault(f, 0.0)
    return sorted(worst, key=lambda f: (-worst[f], f))


def plot_drift_heatmap(drift: Mapping[int, Mapping[str, float]], threshold: float) -> str:
    title = "Feature drift: PSI per feature and day"
    if not drift:
        return empty_plot("plot-drift", title, "no drift windows in this run")
    days = sorted(drift)
    features = _features_by_worst(drift)
    cell_w = max(14, min(44, 640 // len(days)))
    cell_h = 13 if len(features) > 20 else 18
    left, top = 170, 34
    width = left + cell_w * len(days) + 150
    height = top + cell_h * len(features) + 30
    parts = []
    for j, day in enumerate(days):
        parts.append(
            f'<text class="tick" x="{left + j * cell_w + cell_w / 2:.1f}" y="{top - 8}" '
            f'text-anchor="middle">{day}</text>'
        )
    parts.append(f'<text class="label" x="{left}" y="12">day</text>')
    for i, feat in enumerate(features):
        y = top + i * cell_h
        parts.append(
            f'<text class="tick" x="{left - 6}" y="{y + cell_h * 0.72:.1f}" text-anchor="end">'
            f"{escape(feat)}</text>"
        )
        for j, day in enumerate(days):
            v = drift[day].get(feat, math.nan)
            x = left + j * cell_w
            if not math.isfinite(v):
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="#eee">'
                    f"<title>{escape(feat)}, day {day}: no value</title></rect>"
                )
                continue
            over = v > threshold
            stroke = ' stroke="#300" stroke-width="1.2"' if over else ' stroke="#fff" stroke-width="0.5"'
            parts.append(
                f'<rect class="cell{" over" if over else ""}" x="{x}" y="{y}" width="{cell_w}" '
                f'height="{cell_h}" fill="{_heat_colour(v, threshold)}"{stroke}>'
                f"<title>{escape(feat)}, day {day}: PSI {v:.3f}</title></rect>"
            )
    # colour scale
    sx, sy, sh = left + cell_w * len(days) + 40, top, min(200, cell_h * len(features))
    top_value = 2 * threshold
    for k in range(40):
        v0 = top_value * (1 - (k + 1) / 40)
        parts.append(
            f'<rect x="{sx}" y="{sy + k * sh / 40:.1f}" width="14" height="{sh / 40 + 0.5:.1f}" '
            f'fill="{_heat_colour(v0, threshold)}"/>'
        )
    for v in (0.0, threshold / 2, threshold, top_value):
        yy = sy + (1 - v / top_value) * sh
        parts.append(
            f'<line class="axis" x1="{sx + 14}" x2="{sx + 19}" y1="{yy:.1f}" y2="{yy:.1f}"/>'
            f'<text class="tick" x="{sx + 22}" y="{yy + 3.5:.1f}">'
            f"{fmt_number(v)}{'+' if v == top_value else ''}"
            f"{' alert' if v == threshold else ''}</text>"
        )
    parts.append(f'<text class="label" x="{sx}" y="{sy - 10}">PSI</text>')
    return svg_doc("plot-drift", width, height, title, "".join(parts))


def plot_drift_lines(
    drift: Mapping[int, Mapping[str, float]], threshold: float, alerts: Sequence[Alert], top_n: int = 6
) -> str:
    title = f"PSI over time: the {top_n} most drifted features, with the alerts"
    if not drift:
        return empty_plot("plot-drift-lines", title, "no drift windows in this run")
    days = sorted(drift)
    features = _features_by_worst(drift)[:top_n]
    values = [v for d in days for f in features if math.isfinite(v := drift[d].get(f, math.nan))]
    y_max = max([*values, threshold]) * 1.12
    fr = Frame(760, 300, 56, 190, 20, 42, days[0] - 0.3, days[-1] + 0.3, 0.0, y_max)
    parts = [fr.axes(nice_ticks(days[0], days[-1], 8), nice_ticks(0, y_max), "day", "PSI")]
    parts.append(fr.hline(threshold, BAD, f"alert PSI > {fmt_number(threshold)}"))
    for k, feat in enumerate(features):
        colour = SERIES[k % len(SERIES)]
        pts = [(d, drift[d].get(feat, math.nan)) for d in days]
        path = " ".join(f"{fr.x(d):.1f},{fr.y(v):.1f}" for d, v in pts if math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for d, v in pts:
            if math.isfinite(v):
                parts.append(
                    f'<circle cx="{fr.x(d):.1f}" cy="{fr.y(v):.1f}" r="2.6" fill="{colour}">'
                    f"<title>{escape(feat)}, day {d}: PSI {v:.3f}</title></circle>"
                )
    for a in alerts:
        if days[0] - 0.3 <= a.day <= days[-1] + 0.3:
            x = fr.x(a.day)
            base = fr.height - fr.bottom
            parts.append(
                f'<path class="alert-marker" d="M{x:.1f},{base - 2} l-5,-9 h10 z" fill="{BAD}">'
                f"<title>alert {escape(a.rule)} on day {fmt_number(a.day)}"
                f"{' (' + escape(a.feature) + ')' if a.feature else ''}: {a.value:.3f} &gt; "
                f"{fmt_number(a.threshold)}</title></path>"
            )
    legend = [(SERIES[k % len(SERIES)], f) for k, f in enumerate(features)]
    if alerts:
        legend.append((BAD, "alert fired (▼)"))
    parts.append(legend_block(legend, fr.width - fr.right + 16, fr.top + 12))
    return svg_doc("plot-drift-lines", fr.width, fr.height, title, "".join(parts))


def plot_scores(scores: ScoreSamples, bins: int = 20) -> str:
    title = "Score distributions: stable vs canary"
    series = [(scores.stable, STABLE, scores.stable_label), (scores.canary, CANARY, scores.canary_label)]
    series = [(xs, c, lab) for xs, c, lab in series if any(math.isfinite(x) for x in xs)]
    if not series:
        return empty_plot("plot-scores", title, "no scores in this run")
    shares: list[list[float]] = []
    for xs, _, _ in series:
        counts = [0] * bins
        finite = [x for x in xs if math.isfinite(x)]
        for x in finite:
            counts[min(bins - 1, max(0, int(x * bins)))] += 1
        shares.append([100.0 * c / len(finite) for c in counts])
    y_max = max(max(s) for s in shares) * 1.12
    fr = Frame(760, 300, 56, 190, 20, 42, 0.0, 1.0, 0.0, y_max)
    parts = [fr.axes(nice_ticks(0, 1, 10), nice_ticks(0, y_max), "probability of default", "% of scores")]
    bw = (fr.x(1) - fr.x(0)) / bins
    for (_, colour, _), share in zip(series, shares, strict=True):
        for b, s in enumerate(share):
            if s <= 0:
                continue
            x, y = fr.x(b / bins), fr.y(s)
            parts.append(
                f'<rect class="bar" x="{x + 0.5:.1f}" y="{y:.1f}" width="{bw - 1:.1f}" '
                f'height="{fr.y(0) - y:.1f}" '
                f'fill="{colour}" fill-opacity="0.45" stroke="{colour}" stroke-width="1">'
                f"<title>{b / bins:.2f}-{(b + 1) / bins:.2f}: {s:.1f}%</title></rect>"
            )
    if scores.threshold is not None:
        x = fr.x(scores.threshold)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{fr.top}" y2="{fr.y(0):.1f}" stroke="{BAD}" '
            f'stroke-dasharray="5 4"/><text class="note" x="{x + 4:.1f}" y="{fr.top + 10}" '
            f'fill="{BAD}">decline at {scores.threshold:g}</text>'
        )
    legend = []
    for xs, colour, label in series:
        finite = [x for x in xs if math.isfinite(x)]
        legend.append((colour, f"{label}: n={len(finite)}"))
        legend.append(("none", f"   mean {sum(finite) / len(finite):.3f}"))
    parts.append(legend_block(legend, fr.width - fr.right + 16, fr.top + 12))
    return svg_doc("plot-scores", fr.width, fr.height, title, "".join(parts))


def plot_rollout(rollout: Rollout, index: int) -> str:
    title = (
        f"Rollout {rollout.id}: {rollout.model} v{rollout.baseline_version} -> v{rollout.candidate_version} "
        f"({rollout.outcome})"
    )
    plot_id = f"plot-rollout-{index}"
    decisions = sorted(rollout.decisions, key=lambda d: d.time_s)
    if not decisions:
        return empty_plot(plot_id, title, "no decisions recorded")
    t_end = max(decisions[-1].time_s, 1e-9)
    minutes = t_end >= 180
    scale = 60.0 if minutes else 1.0
    x1 = t_end / scale * 1.04
    fr = Frame(760, 270, 56, 190, 26, 42, 0.0, x1, 0.0, 100.0, y_sqrt=True)
    parts = [
        fr.axes(
            nice_ticks(0, x1, 8),
            [0, 1, 5, 25, 50, 100],
            "minutes since the rollout started" if minutes else "seconds since the rollout started",
            "canary traffic % (sqrt scale)",
        )
    ]
    path = []
    prev_w = 0.0
    for d in decisions:
        x = fr.x(d.time_s / scale)
        path.append(f"{x:.1f},{fr.y(prev_w):.1f} {x:.1f},{fr.y(d.weight):.1f}")
        prev_w = d.weight
    path.append(f"{fr.x(x1):.1f},{fr.y(prev_w):.1f}")
    parts.append(f'<polyline fill="none" stroke="{CANARY}" stroke-width="2.2" points="{" ".join(path)}"/>')
    for d in decisions:
        colour = VERDICT_COLOURS.get(d.verdict.lower(), MUTED)
        parts.append(
            f'<circle class="decision" cx="{fr.x(d.time_s / scale):.1f}" cy="{fr.y(d.weight):.1f}" r="5.5" '
            f'fill="{colour}" stroke="#fff" stroke-width="1.5">'
            f"<title>t={fmt_number(d.time_s)} s, step {d.step}: {escape(d.verdict)} at "
            f"{fmt_number(d.weight)}%{' - ' + escape(d.reason) if d.reason else ''}</title></circle>"
        )
    seen = []
    for d in decisions:
        v = d.verdict.lower()
        if v not in seen:
            seen.append(v)
    parts.append(
        legend_block(
            [(CANARY, "canary weight"), *[(VERDICT_COLOURS.get(v, MUTED), v) for v in seen]],
            fr.width - fr.right + 16,
            fr.top + 12,
        )
    )
    return svg_doc(plot_id, fr.width, fr.height, title, "".join(parts), "plot rollout")


def plot_latency(phases: Sequence[LatencyPhase]) -> str:
    title = "Latency per phase: p50 and p99"
    rows = [(p.phase, pc, len(p.samples_ms)) for p in phases if (pc := p.percentiles()) is not None]
    if not rows:
        return empty_plot("plot-latency", title, "no latency measured in this run")
    y_max = max([P99_ALERT_MS, *(pc[1] for _, pc, _ in rows)]) * 1.12
    width = max(760, 240 + 110 * len(rows))
    fr = Frame(width, 300, 56, 190, 20, 56, 0.0, float(len(rows)), 0.0, y_max)
    parts = [fr.axes([], nice_ticks(0, y_max), "", "milliseconds")]
    group = fr.x(1) - fr.x(0)
    bw = min(34.0, group / 3)
    for i, (phase, (p50, p99), n) in enumerate(rows):
        cx = fr.x(i + 0.5)
        for k, (value, colour, name) in enumerate(((p50, STABLE, "p50"), (p99, CANARY, "p99"))):
            x = cx - bw - 2 + k * (bw + 4)
            y = fr.y(value)
            parts.append(
                f'<rect class="bar" x="{x:.1f}" y="{y:.1f}" width="{bw:.1f}" '
                f'height="{fr.y(0) - y:.1f}" rx="2" '
                f'fill="{colour}"><title>{escape(phase)} {name}: {value:.1f} ms'
                f"{f' ({n} samples)' if n else ''}</title></rect>"
                f'<text class="tick" x="{x + bw / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">'
                f"{fmt_number(value)}</text>"
            )
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{fr.height - fr.bottom + 16}" text-anchor="middle">'
            f"{escape(phase)}</text>"
        )
        if n:
            parts.append(
                f'<text class="note" x="{cx:.1f}" y="{fr.height - fr.bottom + 30}" text-anchor="middle">'
                f"n={n}</text>"
            )
    parts.append(fr.hline(P99_GATE_MS, WARN, f"p99 gate {P99_GATE_MS:g} ms"))
    parts.append(fr.hline(P99_ALERT_MS, BAD, f"p99 alert {P99_ALERT_MS:g} ms"))
    parts.append(legend_block([(STABLE, "p50"), (CANARY, "p99")], fr.width - fr.right + 16, fr.top + 12))
    return svg_doc("plot-latency", fr.width, fr.height, title, "".join(parts))
