"""The demo's HTML report: one self-contained page (inline SVG plots, inline CSS, no script,
nothing fetched) that shows what the main job did and measured.

The demo fills a :class:`DemoReport` as it goes, saves it as JSON (``to_json``) and renders it
with :func:`write_report`. The page has:

* the measured times against the case study's numbers (commit to production, time to detect,
  time to roll back, p50/p99 latency);
* the versions with their quality gates;
* per rollout, the canary weight over time with each decision's verdict (``#plot-rollout``)
  and the decision log;
* feature drift: a day x feature PSI heatmap (``#plot-drift``) and the worst features' PSI
  lines with the alerts (``#plot-drift-lines``);
* score distributions of stable vs canary (``#plot-scores``);
* latency p50/p99 per phase against the 50 ms gate and the 100 ms alert (``#plot-latency``);
* the alerts, and where the W&B offline runs and the Prometheus UI are.

``python scripts/demo_report.py report.json -o report.html`` renders a saved report.
"""

from __future__ import annotations

import argparse
import html
import itertools
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PSI_ALERT = 0.25
P99_GATE_MS = 50.0
P99_ALERT_MS = 100.0
DEPLOY_TARGET_S = 2 * 24 * 3600.0  # the case study: "under 2 days"
ROLLBACK_TARGET_S = 10 * 60.0  # "automated (minutes)"

# ---------------------------------------------------------------------------------------------
# The data
# ---------------------------------------------------------------------------------------------


@dataclass
class Gate:
    """One quality gate of a version: ``value`` compared with ``threshold`` by ``comparator``."""

    name: str
    value: float
    threshold: float
    comparator: str  # ">=" or "<="
    passed: bool


@dataclass
class VersionRow:
    version: int
    created_at: str
    gates: list[Gate] = field(default_factory=list)
    aliases: list[str] = field(default_factory=list)
    note: str = ""

    @property
    def passed(self) -> bool:
        return all(g.passed for g in self.gates)


@dataclass
class RolloutDecision:
    """One decision of the rollout controller; ``time_s`` counts from the rollout's start."""

    time_s: float
    step: int
    weight: float  # canary traffic share after the decision, in percent (0-100)
    verdict: str  # start, promote, hold, rollback, abort, complete ...
    reason: str = ""


@dataclass
class Rollout:
    id: str
    model: str
    baseline_version: int
    candidate_version: int
    outcome: str  # completed, rolled_back, aborted, running
    decisions: list[RolloutDecision] = field(default_factory=list)


@dataclass
class ScoreSamples:
    """Scores (probability of default) answered by the stable and the canary variant."""

    stable: list[float] = field(default_factory=list)
    canary: list[float] = field(default_factory=list)
    stable_label: str = "stable"
    canary_label: str = "canary"
    threshold: float | None = None  # the decision threshold, drawn when set


@dataclass
class LatencyPhase:
    """Latency of one phase of the demo: raw ``samples_ms``, or ``p50_ms``/``p99_ms`` if summarised."""

    phase: str
    samples_ms: list[float] = field(default_factory=list)
    p50_ms: float | None = None
    p99_ms: float | None = None

    def percentiles(self) -> tuple[float, float] | None:
        if self.p50_ms is not None and self.p99_ms is not None:
            return self.p50_ms, self.p99_ms
        finite = sorted(x for x in self.samples_ms if math.isfinite(x))
        if not finite:
            return None
        return _quantile(finite, 0.5), _quantile(finite, 0.99)


@dataclass
class Alert:
    rule: str
    day: float  # day index of the replay (fractions for hourly rules)
    value: float
    threshold: float
    feature: str = ""


@dataclass
class Measured:
    """The headline numbers; ``None`` where the run did not measure one."""

    commit_to_production_s: float | None = None
    time_to_detect_h: float | None = None
    time_to_rollback_s: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass
class Links:
    """Where to look further."""

    wandb_dir: str = ""  # W&B offline runs (``wandb sync`` uploads them)
    prometheus_url: str = ""
    other: dict[str, str] = field(default_factory=dict)


@dataclass
class DemoReport:
    """Everything the report shows. JSON round trip: ``DemoReport.from_json(r.to_json()) == r``."""

    model: str
    generated_at: str
    title: str = "finpredict demo report"
    versions: list[VersionRow] = field(default_factory=list)
    rollouts: list[Rollout] = field(default_factory=list)
    drift: dict[int, dict[str, float]] = field(default_factory=dict)  # day index -> feature -> PSI
    psi_threshold: float = PSI_ALERT
    scores: ScoreSamples = field(default_factory=ScoreSamples)
    latency: list[LatencyPhase] = field(default_factory=list)
    alerts: list[Alert] = field(default_factory=list)
    measured: Measured = field(default_factory=Measured)
    links: Links = field(default_factory=Links)

    def to_json(self) -> str:
        """Strict JSON (no NaN: non-finite PSI values and scores are left out)."""
        data = asdict(self)
        data["drift"] = {
            str(day): {f: v for f, v in feats.items() if math.isfinite(v)}
            for day, feats in self.drift.items()
        }
        for key in ("stable", "canary"):
            data["scores"][key] = [x for x in data["scores"][key] if math.isfinite(x)]
        return json.dumps(data, indent=1, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> DemoReport:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> DemoReport:
        return cls(
            model=str(d["model"]),
            generated_at=str(d["generated_at"]),
            title=str(d.get("title", "finpredict demo report")),
            versions=[
                VersionRow(
                    version=int(v["version"]),
                    created_at=str(v["created_at"]),
                    gates=[Gate(**g) for g in v.get("gates", [])],
                    aliases=list(v.get("aliases", [])),
                    note=str(v.get("note", "")),
                )
                for v in d.get("versions", [])
            ],
            rollouts=[
                Rollout(
                    id=str(r["id"]),
                    model=str(r["model"]),
                    baseline_version=int(r["baseline_version"]),
                    candidate_version=int(r["candidate_version"]),
                    outcome=str(r["outcome"]),
                    decisions=[RolloutDecision(**x) for x in r.get("decisions", [])],
                )
                for r in d.get("rollouts", [])
            ],
            drift={
                int(day): {str(f): float(v) for f, v in feats.items()}
                for day, feats in d.get("drift", {}).items()
            },
            psi_threshold=float(d.get("psi_threshold", PSI_ALERT)),
            scores=ScoreSamples(**d.get("scores", {})),
            latency=[LatencyPhase(**p) for p in d.get("latency", [])],
            alerts=[Alert(**a) for a in d.get("alerts", [])],
            measured=Measured(**d.get("measured", {})),
            links=Links(**d.get("links", {})),
        )


def write_report(data: DemoReport, path: Path) -> Path:
    """Writes the report's HTML to ``path`` (folders created) and returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Small SVG toolkit
# ---------------------------------------------------------------------------------------------

STABLE = "#4c78a8"
CANARY = "#f58518"
GOOD = "#2e9d4a"
WARN = "#d99a00"
BAD = "#d62728"
MUTED = "#8a8f98"
SERIES = ["#4c78a8", "#f58518", "#54a24b", "#b279a2", "#e45756", "#72b7b2", "#9d755d", "#eeca3b"]
VERDICT_COLOURS = {
    "start": MUTED,
    "promote": GOOD,
    "advance": GOOD,
    "complete": GOOD,
    "completed": GOOD,
    "hold": WARN,
    "wait": WARN,
    "rollback": BAD,
    "rolled_back": BAD,
    "abort": BAD,
    "aborted": BAD,
}


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def _quantile(sorted_values: Sequence[float], q: float) -> float:
    """Linear-interpolated quantile of sorted values (numpy's default method)."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


def _fmt(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


@dataclass
class _Frame:
    """A plot area inside an SVG: pixel mapping for linear (or square-root) axes."""

    width: int
    height: int
    left: int
    right: int
    top: int
    bottom: int
    x0: float
    x1: float
    y0: float
    y1: float
    y_sqrt: bool = False

    def x(self, v: float) -> float:
        span = self.x1 - self.x0 or 1.0
        return self.left + (v - self.x0) / span * (self.width - self.left - self.right)

    def y(self, v: float) -> float:
        f = (lambda t: math.sqrt(max(t, 0.0))) if self.y_sqrt else (lambda t: t)
        span = f(self.y1) - f(self.y0) or 1.0
        return self.height - self.bottom - (f(v) - f(self.y0)) / span * (self.height - self.top - self.bottom)

    def axes(self, x_ticks: Sequence[float], y_ticks: Sequence[float], x_label: str, y_label: str) -> str:
        parts = []
        for t in y_ticks:
            y = self.y(t)
            parts.append(
                f'<line class="grid" x1="{self.left}" x2="{self.width - self.right}" '
                f'y1="{y:.1f}" y2="{y:.1f}"/>'
                f'<text class="tick" x="{self.left - 6}" y="{y + 3.5:.1f}" text-anchor="end">{_fmt(t)}</text>'
            )
        for t in x_ticks:
            x = self.x(t)
            parts.append(
                f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{self.height - self.bottom}" '
                f'y2="{self.height - self.bottom + 4}"/>'
                f'<text class="tick" x="{x:.1f}" y="{self.height - self.bottom + 16}" '
                f'text-anchor="middle">{_fmt(t)}</text>'
            )
        parts.append(
            f'<line class="axis" x1="{self.left}" x2="{self.width - self.right}" '
            f'y1="{self.height - self.bottom}" y2="{self.height - self.bottom}"/>'
            f'<line class="axis" x1="{self.left}" x2="{self.left}" y1="{self.top}" '
            f'y2="{self.height - self.bottom}"/>'
            f'<text class="label" x="{(self.left + self.width - self.right) / 2:.1f}" '
            f'y="{self.height - 6}" text-anchor="middle">{_e(x_label)}</text>'
            f'<text class="label" transform="translate(14 {(self.top + self.height - self.bottom) / 2:.1f}) '
            f'rotate(-90)" text-anchor="middle">{_e(y_label)}</text>'
        )
        return "".join(parts)

    def hline(self, value: float, colour: str, label: str) -> str:
        y = self.y(value)
        return (
            f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="1.2" stroke-dasharray="5 4"/>'
            f'<text class="note" x="{self.width - self.right + 6}" y="{y + 4:.1f}" '
            f'fill="{colour}">{_e(label)}</text>'
        )


def _svg(plot_id: str, width: int, height: int, title: str, body: str, css_class: str = "plot") -> str:
    return (
        f'<svg id="{_e(plot_id)}" class="{css_class}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{_e(title)}"><title>{_e(title)}</title>{body}</svg>'
    )


def _legend(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    parts = []
    for i, (colour, label) in enumerate(items):
        yy = y + i * 16
        parts.append(
            f'<rect x="{x:.1f}" y="{yy - 9:.1f}" width="11" height="11" rx="2" fill="{colour}"/>'
            f'<text class="legend" x="{x + 16:.1f}" y="{yy:.1f}">{_e(label)}</text>'
        )
    return "".join(parts)


def _empty(plot_id: str, title: str, why: str) -> str:
    body = f'<text class="note" x="360" y="60" text-anchor="middle">{_e(why)}</text>'
    return _svg(plot_id, 720, 110, title, body, "plot empty")


# ---------------------------------------------------------------------------------------------
# The plots
# ---------------------------------------------------------------------------------------------


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
        return _empty("plot-drift", title, "no drift windows in this run")
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
            f"{_e(feat)}</text>"
        )
        for j, day in enumerate(days):
            v = drift[day].get(feat, math.nan)
            x = left + j * cell_w
            if not math.isfinite(v):
                parts.append(
                    f'<rect x="{x}" y="{y}" width="{cell_w}" height="{cell_h}" fill="#eee">'
                    f"<title>{_e(feat)}, day {day}: no value</title></rect>"
                )
                continue
            over = v > threshold
            stroke = ' stroke="#300" stroke-width="1.2"' if over else ' stroke="#fff" stroke-width="0.5"'
            parts.append(
                f'<rect class="cell{" over" if over else ""}" x="{x}" y="{y}" width="{cell_w}" '
                f'height="{cell_h}" fill="{_heat_colour(v, threshold)}"{stroke}>'
                f"<title>{_e(feat)}, day {day}: PSI {v:.3f}</title></rect>"
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
            f'<text class="tick" x="{sx + 22}" y="{yy + 3.5:.1f}">{_fmt(v)}{"+" if v == top_value else ""}'
            f"{' alert' if v == threshold else ''}</text>"
        )
    parts.append(f'<text class="label" x="{sx}" y="{sy - 10}">PSI</text>')
    return _svg("plot-drift", width, height, title, "".join(parts))


def plot_drift_lines(
    drift: Mapping[int, Mapping[str, float]], threshold: float, alerts: Sequence[Alert], top_n: int = 6
) -> str:
    title = f"PSI over time: the {top_n} most drifted features, with the alerts"
    if not drift:
        return _empty("plot-drift-lines", title, "no drift windows in this run")
    days = sorted(drift)
    features = _features_by_worst(drift)[:top_n]
    values = [v for d in days for f in features if math.isfinite(v := drift[d].get(f, math.nan))]
    y_max = max([*values, threshold]) * 1.12
    fr = _Frame(760, 300, 56, 190, 20, 42, days[0] - 0.3, days[-1] + 0.3, 0.0, y_max)
    parts = [fr.axes(_nice_ticks(days[0], days[-1], 8), _nice_ticks(0, y_max), "day", "PSI")]
    parts.append(fr.hline(threshold, BAD, f"alert PSI > {_fmt(threshold)}"))
    for k, feat in enumerate(features):
        colour = SERIES[k % len(SERIES)]
        pts = [(d, drift[d].get(feat, math.nan)) for d in days]
        path = " ".join(f"{fr.x(d):.1f},{fr.y(v):.1f}" for d, v in pts if math.isfinite(v))
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{path}"/>')
        for d, v in pts:
            if math.isfinite(v):
                parts.append(
                    f'<circle cx="{fr.x(d):.1f}" cy="{fr.y(v):.1f}" r="2.6" fill="{colour}">'
                    f"<title>{_e(feat)}, day {d}: PSI {v:.3f}</title></circle>"
                )
    for a in alerts:
        if days[0] - 0.3 <= a.day <= days[-1] + 0.3:
            x = fr.x(a.day)
            base = fr.height - fr.bottom
            parts.append(
                f'<path class="alert-marker" d="M{x:.1f},{base - 2} l-5,-9 h10 z" fill="{BAD}">'
                f"<title>alert {_e(a.rule)} on day {_fmt(a.day)}"
                f"{' (' + _e(a.feature) + ')' if a.feature else ''}: {a.value:.3f} &gt; "
                f"{_fmt(a.threshold)}</title></path>"
            )
    legend = [(SERIES[k % len(SERIES)], f) for k, f in enumerate(features)]
    if alerts:
        legend.append((BAD, "alert fired (▼)"))
    parts.append(_legend(legend, fr.width - fr.right + 16, fr.top + 12))
    return _svg("plot-drift-lines", fr.width, fr.height, title, "".join(parts))


def plot_scores(scores: ScoreSamples, bins: int = 20) -> str:
    title = "Score distributions: stable vs canary"
    series = [(scores.stable, STABLE, scores.stable_label), (scores.canary, CANARY, scores.canary_label)]
    series = [(xs, c, lab) for xs, c, lab in series if any(math.isfinite(x) for x in xs)]
    if not series:
        return _empty("plot-scores", title, "no scores in this run")
    shares: list[list[float]] = []
    for xs, _, _ in series:
        counts = [0] * bins
        finite = [x for x in xs if math.isfinite(x)]
        for x in finite:
            counts[min(bins - 1, max(0, int(x * bins)))] += 1
        shares.append([100.0 * c / len(finite) for c in counts])
    y_max = max(max(s) for s in shares) * 1.12
    fr = _Frame(760, 300, 56, 190, 20, 42, 0.0, 1.0, 0.0, y_max)
    parts = [fr.axes(_nice_ticks(0, 1, 10), _nice_ticks(0, y_max), "probability of default", "% of scores")]
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
    parts.append(_legend(legend, fr.width - fr.right + 16, fr.top + 12))
    return _svg("plot-scores", fr.width, fr.height, title, "".join(parts))


def plot_rollout(rollout: Rollout, index: int) -> str:
    title = (
        f"Rollout {rollout.id}: {rollout.model} v{rollout.baseline_version} -> v{rollout.candidate_version} "
        f"({rollout.outcome})"
    )
    plot_id = f"plot-rollout-{index}"
    decisions = sorted(rollout.decisions, key=lambda d: d.time_s)
    if not decisions:
        return _empty(plot_id, title, "no decisions recorded")
    t_end = max(decisions[-1].time_s, 1e-9)
    minutes = t_end >= 180
    scale = 60.0 if minutes else 1.0
    x1 = t_end / scale * 1.04
    fr = _Frame(760, 270, 56, 190, 26, 42, 0.0, x1, 0.0, 100.0, y_sqrt=True)
    parts = [
        fr.axes(
            _nice_ticks(0, x1, 8),
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
            f'fill="{colour}" stroke="#fff" stroke-width="1.5"><title>t={_fmt(d.time_s)} s, step {d.step}: '
            f"{_e(d.verdict)} at {_fmt(d.weight)}%{' - ' + _e(d.reason) if d.reason else ''}</title></circle>"
        )
    seen = []
    for d in decisions:
        v = d.verdict.lower()
        if v not in seen:
            seen.append(v)
    parts.append(
        _legend(
            [(CANARY, "canary weight"), *[(VERDICT_COLOURS.get(v, MUTED), v) for v in seen]],
            fr.width - fr.right + 16,
            fr.top + 12,
        )
    )
    return _svg(plot_id, fr.width, fr.height, title, "".join(parts), "plot rollout")


def plot_latency(phases: Sequence[LatencyPhase]) -> str:
    title = "Latency per phase: p50 and p99"
    rows = [(p.phase, pc, len(p.samples_ms)) for p in phases if (pc := p.percentiles()) is not None]
    if not rows:
        return _empty("plot-latency", title, "no latency measured in this run")
    y_max = max([P99_ALERT_MS, *(pc[1] for _, pc, _ in rows)]) * 1.12
    width = max(760, 240 + 110 * len(rows))
    fr = _Frame(width, 300, 56, 190, 20, 56, 0.0, float(len(rows)), 0.0, y_max)
    parts = [fr.axes([], _nice_ticks(0, y_max), "", "milliseconds")]
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
                f'fill="{colour}"><title>{_e(phase)} {name}: {value:.1f} ms'
                f"{f' ({n} samples)' if n else ''}</title></rect>"
                f'<text class="tick" x="{x + bw / 2:.1f}" y="{y - 4:.1f}" text-anchor="middle">'
                f"{_fmt(value)}</text>"
            )
        parts.append(
            f'<text class="tick" x="{cx:.1f}" y="{fr.height - fr.bottom + 16}" text-anchor="middle">'
            f"{_e(phase)}</text>"
        )
        if n:
            parts.append(
                f'<text class="note" x="{cx:.1f}" y="{fr.height - fr.bottom + 30}" text-anchor="middle">'
                f"n={n}</text>"
            )
    parts.append(fr.hline(P99_GATE_MS, WARN, f"p99 gate {P99_GATE_MS:g} ms"))
    parts.append(fr.hline(P99_ALERT_MS, BAD, f"p99 alert {P99_ALERT_MS:g} ms"))
    parts.append(_legend([(STABLE, "p50"), (CANARY, "p99")], fr.width - fr.right + 16, fr.top + 12))
    return _svg("plot-latency", fr.width, fr.height, title, "".join(parts))


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.1f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def _card(label: str, value: str, reference: str, ok: bool | None) -> str:
    state = "" if ok is None else (" ok" if ok else " bad")
    return (
        f'<div class="card{state}"><div class="k">{_e(label)}</div><div class="v">{_e(value)}</div>'
        f'<div class="r">{_e(reference)}</div></div>'
    )


def _measured(m: Measured) -> str:
    na = "not measured"
    cards = [
        _card(
            "commit to production",
            _duration(m.commit_to_production_s) if m.commit_to_production_s is not None else na,
            "case study: 3-6 weeks before, target under 2 days",
            None if m.commit_to_production_s is None else m.commit_to_production_s <= DEPLOY_TARGET_S,
        ),
        _card(
            "time to detect drift",
            f"{m.time_to_detect_h:.0f} h" if m.time_to_detect_h is not None else na,
            "case study: 3 weeks before, 4 h after",
            None,
        ),
        _card(
            "time to roll back",
            _duration(m.time_to_rollback_s) if m.time_to_rollback_s is not None else na,
            "case study: manual (hours) before, automated minutes after",
            None if m.time_to_rollback_s is None else m.time_to_rollback_s <= ROLLBACK_TARGET_S,
        ),
        _card(
            "scoring latency p50 / p99",
            f"{m.p50_ms:.1f} / {m.p99_ms:.1f} ms" if m.p50_ms is not None and m.p99_ms is not None else na,
            f"gate: p99 <= {P99_GATE_MS:g} ms, alert: p99 > {P99_ALERT_MS:g} ms",
            None if m.p99_ms is None else m.p99_ms <= P99_GATE_MS,
        ),
    ]
    return f'<div class="cards" id="measured">{"".join(cards)}</div>'


def _versions(rows: Sequence[VersionRow]) -> str:
    if not rows:
        return "<p class='muted'>No versions registered in this run.</p>"
    body = []
    for v in rows:
        gates = "".join(
            f'<span class="chip {"ok" if g.passed else "bad"}" title="{_e(g.name)}: {g.value:.4g} '
            f'{_e(g.comparator)} {g.threshold:g}">{_e(g.name)} {g.value:.3g} {_e(g.comparator)} '
            f"{g.threshold:g} {'✓' if g.passed else '✗'}</span>"
            for g in v.gates
        )
        status = '<b class="okt">passed</b>' if v.passed else '<b class="badt">failed</b>'
        body.append(
            f"<tr><td>v{v.version}</td><td>{_e(', '.join(v.aliases)) or '-'}</td><td>{_e(v.created_at)}</td>"
            f"<td>{status}</td><td>{gates or '-'}</td><td>{_e(v.note)}</td></tr>"
        )
    return (
        '<table id="versions"><thead><tr><th>version</th><th>aliases</th><th>created</th><th>gates</th>'
        f"<th>gate results</th><th>note</th></tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _rollouts(rollouts: Sequence[Rollout]) -> str:
    if not rollouts:
        return '<div id="plot-rollout"><p class="muted">No rollouts in this run.</p></div>'
    parts = ['<div id="plot-rollout">']
    for i, r in enumerate(rollouts):
        rows = "".join(
            f"<tr><td>{_fmt(d.time_s)} s</td><td>{d.step}</td><td>{_fmt(d.weight)}%</td>"
            f'<td><span class="verdict" style="background:{VERDICT_COLOURS.get(d.verdict.lower(), MUTED)}">'
            f"{_e(d.verdict)}</span></td><td>{_e(d.reason)}</td></tr>"
            for d in sorted(r.decisions, key=lambda d: d.time_s)
        )
        colour = VERDICT_COLOURS.get(r.outcome.lower(), MUTED)
        parts.append(
            f"<h3>{_e(r.id)}: {_e(r.model)} v{r.baseline_version} &rarr; v{r.candidate_version} "
            f'<span class="verdict" style="background:{colour}">{_e(r.outcome)}</span></h3>'
            f'<div class="rollout">{plot_rollout(r, i)}<details><summary>decision log of {_e(r.id)} '
            f"({len(r.decisions)} decisions)</summary><table><thead><tr><th>time</th><th>step</th>"
            f"<th>weight</th><th>verdict</th><th>reason</th></tr></thead><tbody>{rows}</tbody></table>"
            "</details></div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _alerts(alerts: Sequence[Alert]) -> str:
    if not alerts:
        return "<p class='muted'>No alerts fired.</p>"
    rows = "".join(
        f"<tr><td>{_e(a.rule)}</td><td>{_fmt(a.day)}</td><td>{_e(a.feature) or '-'}</td>"
        f"<td>{a.value:.3f}</td><td>{a.threshold:g}</td></tr>"
        for a in sorted(alerts, key=lambda a: a.day)
    )
    return (
        '<table id="alerts"><thead><tr><th>rule</th><th>day</th><th>feature</th><th>value</th>'
        f"<th>threshold</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def _links(links: Links) -> str:
    items = []
    if links.wandb_dir:
        items.append(
            f"<li>W&amp;B offline runs: <code>{_e(links.wandb_dir)}</code> "
            f"(browse with <code>wandb sync --view</code>, upload with <code>wandb sync</code>)</li>"
        )
    if links.prometheus_url:
        items.append(
            f'<li>Prometheus UI: <a href="{_e(links.prometheus_url)}">{_e(links.prometheus_url)}</a> '
            "(while the stack runs: <code>task demo -- --keep</code>)</li>"
        )
    for name, where in links.other.items():
        target = (
            f'<a href="{_e(where)}">{_e(where)}</a>'
            if where.startswith(("http://", "https://"))
            else f"<code>{_e(where)}</code>"
        )
        items.append(f"<li>{_e(name)}: {target}</li>")
    return f'<ul id="links">{"".join(items)}</ul>' if items else "<p class='muted'>-</p>"


_CSS = """
:root{--fg:#1d2330;--muted:#6b7280;--line:#e3e6eb;--ok:#2e9d4a;--bad:#d62728}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:var(--fg);
margin:0;background:#f6f7f9}
main{max-width:1080px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:24px;margin:0 0 4px}h3{font-size:15px;margin:18px 0 0}
h2{font-size:18px;margin:32px 0 10px;border-bottom:1px solid var(--line);
padding-bottom:4px}
.muted,.sub{color:var(--muted)}
section{background:#fff;border:1px solid var(--line);border-radius:8px;padding:4px 18px 16px;margin-top:18px}
.cards{display:grid;grid-template-columns:repeat(4,1fr);gap:12px;margin-top:14px}
.card{background:#fff;border:1px solid var(--line);border-left:5px solid #9aa3af;border-radius:8px;
padding:10px 12px}
.card.ok{border-left-color:var(--ok)}.card.bad{border-left-color:var(--bad)}
.card .k{color:var(--muted);font-size:12px;text-transform:uppercase;letter-spacing:.04em}
.card .v{font-size:22px;font-weight:600;margin:2px 0}.card .r{color:var(--muted);font-size:12px}
table{border-collapse:collapse;width:100%;margin:8px 0}
th,td{border-bottom:1px solid var(--line);padding:5px 8px;text-align:left;vertical-align:top}
th{font-size:12px;color:var(--muted);font-weight:600}
.chip{display:inline-block;border-radius:10px;padding:1px 8px;margin:1px 3px 1px 0;font-size:12px;
white-space:nowrap}
.chip.ok{background:#e5f5e9;color:#1d6b33}.chip.bad{background:#fde8e8;color:#9b1c1c}
.okt{color:var(--ok)}.badt{color:var(--bad)}
.verdict{color:#fff;border-radius:4px;padding:1px 6px;font-size:12px}
svg.plot{max-width:100%;height:auto;display:block;margin:10px 0}
svg text{font-family:inherit;fill:#374151}
svg .tick{font-size:11px}svg .label{font-size:12px;fill:#4b5563}svg .legend{font-size:12px}
svg .note{font-size:11px}
svg .grid{stroke:#eef0f3}svg .axis{stroke:#9aa3af}
details{margin:4px 0 12px}summary{cursor:pointer;color:#374151}
code{background:#f1f3f5;padding:1px 4px;border-radius:4px}
"""


def render_html(data: DemoReport) -> str:
    """The whole page as one string."""
    sections = [
        (
            "versions",
            "Versions and quality gates",
            "Gates from the case study: AUC-ROC >= 0.82, ECE <= 0.05, p99 latency <= 50 ms, "
            "demographic parity difference <= 0.05. The registry refuses to promote a version "
            "whose gates failed.",
            _versions(data.versions),
        ),
        (
            "rollouts",
            "Canary rollouts",
            "Canary weight after each decision of the rollout controller (1% -> 5% -> 25% -> 100%); "
            "markers are coloured by verdict, hover for the reason.",
            _rollouts(data.rollouts),
        ),
        (
            "drift",
            "Feature drift",
            f"Daily PSI of each feature against the serving version's reference profile; cells outlined "
            f"in dark red are above the alert threshold ({data.psi_threshold:g}; the rule fires after 3 "
            "consecutive days).",
            plot_drift_heatmap(data.drift, data.psi_threshold)
            + plot_drift_lines(data.drift, data.psi_threshold, data.alerts),
        ),
        (
            "scores",
            "Scores: stable vs canary",
            "Share of scores per probability bucket for each variant.",
            plot_scores(data.scores),
        ),
        ("latency", "Latency", "p50 and p99 per phase of the run.", plot_latency(data.latency)),
        ("alerts", "Alerts", "Alerts the monitor raised, by replay day.", _alerts(data.alerts)),
        ("where", "Where to look further", "", _links(data.links)),
    ]
    body = "".join(
        f'<section id="section-{sid}"><h2>{_e(title)}</h2>'
        + (f'<p class="sub">{_e(intro)}</p>' if intro else "")
        + content
        + "</section>"
        for sid, title, intro, content in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(data.title)}: {_e(data.model)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{_e(data.title)}</h1>"
        f'<p class="sub">model <b>{_e(data.model)}</b> · generated {_e(data.generated_at)}</p>'
        f"{_measured(data.measured)}{body}</main></body></html>\n"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Render a saved demo report (JSON) as HTML.")
    parser.add_argument("data", type=Path, help="the report data, as written by DemoReport.to_json()")
    parser.add_argument("-o", "--out", type=Path, default=Path("reports/demo.html"), help="the HTML file")
    args = parser.parse_args(argv)
    report = DemoReport.from_json(args.data.read_text(encoding="utf-8"))
    print(write_report(report, args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
