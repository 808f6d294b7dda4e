"""A small SVG toolkit for the demo report's plots: colours, axes, ticks, legends."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

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


def escape(text: object) -> str:
    return html.escape(str(text), quote=True)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
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


def fmt_number(x: float) -> str:
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    if abs(x) >= 10:
        return f"{x:.1f}".rstrip("0").rstrip(".")
    return f"{x:.3g}"


@dataclass
class Frame:
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
                f'<text class="tick" x="{self.left - 6}" y="{y + 3.5:.1f}" text-anchor="end">'
                f"{fmt_number(t)}</text>"
            )
        for t in x_ticks:
            x = self.x(t)
            parts.append(
                f'<line class="axis" x1="{x:.1f}" x2="{x:.1f}" y1="{self.height - self.bottom}" '
                f'y2="{self.height - self.bottom + 4}"/>'
                f'<text class="tick" x="{x:.1f}" y="{self.height - self.bottom + 16}" '
                f'text-anchor="middle">{fmt_number(t)}</text>'
            )
        parts.append(
            f'<line class="axis" x1="{self.left}" x2="{self.width - self.right}" '
            f'y1="{self.height - self.bottom}" y2="{self.height - self.bottom}"/>'
            f'<line class="axis" x1="{self.left}" x2="{self.left}" y1="{self.top}" '
            f'y2="{self.height - self.bottom}"/>'
            f'<text class="label" x="{(self.left + self.width - self.right) / 2:.1f}" '
            f'y="{self.height - 6}" text-anchor="middle">{escape(x_label)}</text>'
            f'<text class="label" transform="translate(14 {(self.top + self.height - self.bottom) / 2:.1f}) '
            f'rotate(-90)" text-anchor="middle">{escape(y_label)}</text>'
        )
        return "".join(parts)

    def hline(self, value: float, colour: str, label: str) -> str:
        y = self.y(value)
        return (
            f'<line x1="{self.left}" x2="{self.width - self.right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="1.2" stroke-dasharray="5 4"/>'
            f'<text class="note" x="{self.width - self.right + 6}" y="{y + 4:.1f}" '
            f'fill="{colour}">{escape(label)}</text>'
        )


def svg_doc(plot_id: str, width: int, height: int, title: str, body: str, css_class: str = "plot") -> str:
    return (
        f'<svg id="{escape(plot_id)}" class="{css_class}" xmlns="http://www.w3.org/2000/svg" '
        f'viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{escape(title)}"><title>{escape(title)}</title>{body}</svg>'
    )


def legend_block(items: Sequence[tuple[str, str]], x: float, y: float) -> str:
    parts = []
    for i, (colour, label) in enumerate(items):
        yy = y + i * 16
        parts.append(
            f'<rect x="{x:.1f}" y="{yy - 9:.1f}" width="11" height="11" rx="2" fill="{colour}"/>'
            f'<text class="legend" x="{x + 16:.1f}" y="{yy:.1f}">{escape(label)}</text>'
        )
    return "".join(parts)


def empty_plot(plot_id: str, title: str, why: str) -> str:
    body = f'<text class="note" x="360" y="60" text-anchor="middle">{escape(why)}</text>'
    return svg_doc(plot_id, 720, 110, title, body, "plot empty")
