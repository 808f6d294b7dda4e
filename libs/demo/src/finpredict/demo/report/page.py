"""The demo report's page: one self-contained HTML file (inline SVG and CSS, no script)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from finpredict.demo.report.model import (
    DEPLOY_TARGET_S,
    P99_ALERT_MS,
    P99_GATE_MS,
    ROLLBACK_TARGET_S,
    Alert,
    DemoReport,
    Links,
    Measured,
    Rollout,
    VersionRow,
)
from finpredict.demo.report.plots import (
    plot_drift_heatmap,
    plot_drift_lines,
    plot_latency,
    plot_rollout,
    plot_scores,
)
from finpredict.demo.report.svg import MUTED, VERDICT_COLOURS, escape, fmt_number


def write_report(data: DemoReport, path: Path) -> Path:
    """Writes the report's HTML to ``path`` (folders created) and returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(data), encoding="utf-8")
    return path


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
        f'<div class="card{state}"><div class="k">{escape(label)}</div><div class="v">{escape(value)}</div>'
        f'<div class="r">{escape(reference)}</div></div>'
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
            f'<span class="chip {"ok" if g.passed else "bad"}" title="{escape(g.name)}: {g.value:.4g} '
            f'{escape(g.comparator)} {g.threshold:g}">{escape(g.name)} {g.value:.3g} {escape(g.comparator)} '
            f"{g.threshold:g} {'✓' if g.passed else '✗'}</span>"
            for g in v.gates
        )
        status = '<b class="okt">passed</b>' if v.passed else '<b class="badt">failed</b>'
        body.append(
            f"<tr><td>v{v.version}</td><td>{escape(', '.join(v.aliases)) or '-'}</td>"
            f"<td>{escape(v.created_at)}</td>"
            f"<td>{status}</td><td>{gates or '-'}</td><td>{escape(v.note)}</td></tr>"
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
            f"<tr><td>{fmt_number(d.time_s)} s</td><td>{d.step}</td><td>{fmt_number(d.weight)}%</td>"
            f'<td><span class="verdict" style="background:{VERDICT_COLOURS.get(d.verdict.lower(), MUTED)}">'
            f"{escape(d.verdict)}</span></td><td>{escape(d.reason)}</td>"
            f'<td class="stats">{escape(d.statistics)}</td></tr>'
            for d in sorted(r.decisions, key=lambda d: d.time_s)
        )
        colour = VERDICT_COLOURS.get(r.outcome.lower(), MUTED)
        parts.append(
            f"<h3>{escape(r.id)}: {escape(r.model)} v{r.baseline_version} &rarr; v{r.candidate_version} "
            f'<span class="verdict" style="background:{colour}">{escape(r.outcome)}</span></h3>'
            f'<div class="rollout">{plot_rollout(r, i)}<details><summary>decision log of {escape(r.id)} '
            f"({len(r.decisions)} decisions)</summary><table><thead><tr><th>time</th><th>step</th>"
            f"<th>weight</th><th>verdict</th><th>reason</th><th>what drove it</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
            "</details></div>"
        )
    parts.append("</div>")
    return "".join(parts)


def _alerts(alerts: Sequence[Alert]) -> str:
    if not alerts:
        return "<p class='muted'>No alerts fired.</p>"
    rows = "".join(
        f"<tr><td>{escape(a.rule)}</td><td>{fmt_number(a.day)}</td><td>{escape(a.feature) or '-'}</td>"
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
            f"<li>W&amp;B offline runs: <code>{escape(links.wandb_dir)}</code> "
            f"(browse with <code>wandb sync --view</code>, upload with <code>wandb sync</code>)</li>"
        )
    if links.prometheus_url:
        items.append(
            f'<li>Prometheus UI: <a href="{escape(links.prometheus_url)}">{escape(links.prometheus_url)}</a> '
            "(while the stack runs: <code>task demo -- --keep</code>)</li>"
        )
    for name, where in links.other.items():
        target = (
            f'<a href="{escape(where)}">{escape(where)}</a>'
            if where.startswith(("http://", "https://"))
            else f"<code>{escape(where)}</code>"
        )
        items.append(f"<li>{escape(name)}: {target}</li>")
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
.stats{font-size:12px;color:var(--muted)}
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
            "demographic parity difference <= 0.05. The pipeline checks the latency budget as the "
            "model's in-process compute (compute_p99_ms); the served p99 is judged by the canary "
            "analysis. The registry refuses to promote a version whose gates failed.",
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
        f'<section id="section-{sid}"><h2>{escape(title)}</h2>'
        + (f'<p class="sub">{escape(intro)}</p>' if intro else "")
        + content
        + "</section>"
        for sid, title, intro, content in sections
    )
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{escape(data.title)}: {escape(data.model)}</title><style>{_CSS}</style></head><body><main>"
        f"<h1>{escape(data.title)}</h1>"
        f'<p class="sub">model <b>{escape(data.model)}</b> · generated {escape(data.generated_at)}</p>'
        f"{_measured(data.measured)}{body}</main></body></html>\n"
    )
