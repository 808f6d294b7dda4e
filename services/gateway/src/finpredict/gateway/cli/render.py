"""How a rollout is shown: the status view, the one-line summary, states in colour."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from finpredict.api.rollout.v1 import rollout_pb2 as pb
from finpredict.common.rollout_statistics import decision_statistics
from finpredict.gateway.cli.values import fmt_duration, fmt_time

DECISIONS_SHOWN = 15  # newest decisions in the status view

ENDED = (pb.ROLLOUT_STATE_PROMOTED, pb.ROLLOUT_STATE_ROLLED_BACK, pb.ROLLOUT_STATE_ABORTED)
_STATE_STYLE = {
    pb.ROLLOUT_STATE_PROGRESSING: "cyan",
    pb.ROLLOUT_STATE_PAUSED: "yellow",
    pb.ROLLOUT_STATE_PROMOTED: "green",
    pb.ROLLOUT_STATE_ROLLED_BACK: "red",
    pb.ROLLOUT_STATE_ABORTED: "red",
}


def state_name(state: int) -> str:
    return pb.RolloutState.Name(state).removeprefix("ROLLOUT_STATE_")  # type: ignore[arg-type]


def styled_state(state: int) -> str:
    return f"[{_STATE_STYLE.get(state, 'white')}]{state_name(state)}[/]"  # type: ignore[call-overload]


def steps_line(r: pb.Rollout) -> str:
    parts = []
    for i, w in enumerate(r.steps):
        label = f"{w:g}%"
        parts.append(f"[bold reverse] ▶ {label} [/]" if i == r.step_index else label)
    return " → ".join(parts)


def thresholds_line(t: pb.AnalysisThresholds) -> str:
    return (
        f"error rate increase ≤ {t.max_error_rate_increase:g}, p99 per application ≤ "
        f"{t.max_p99_latency_ms:g} ms and ≤ {t.max_p99_latency_ratio:g}x stable's (tested), "
        f"score PSI ≤ {t.max_score_psi:g}, "
        f"score KL ≤ {t.max_score_kl:g}, AUC drop ≤ {t.max_auc_drop:g} (always-valid test)"
    )


def render_rollout(r: pb.Rollout) -> RenderableType:
    """The status view of one rollout: summary, per-variant metrics, decisions (each with the figures
    and statistics that drove it), the last analysis's statistics in full."""
    summary = Table(show_header=False, box=None, pad_edge=False, title_justify="left")
    summary.title = f"rollout {r.id}: {r.model} v{r.stable_version} → v{r.candidate_version}"
    summary.add_column(style="bold")
    summary.add_column()
    step = f"step {r.step_index + 1} of {len(r.steps)}" if r.steps else "no steps"
    ended = r.state in ENDED
    summary.add_row("model", escape(r.model))
    summary.add_row("stable", f"v{r.stable_version}")
    summary.add_row("candidate", f"v{r.candidate_version}")
    summary.add_row("state", styled_state(r.state))
    summary.add_row("weight", f"{r.weight:g}% to the canary ({step})")
    summary.add_row("steps", steps_line(r))
    summary.add_row(
        "analysis",
        f"every {fmt_duration(r.analysis_interval.ToTimedelta().total_seconds())}, "
        f"at least {r.min_requests_per_step} requests per variant per step",
    )
    summary.add_row("thresholds", thresholds_line(r.thresholds))
    started = f"{fmt_time(r.started_at)} by {escape(r.started_by or '-')}"
    summary.add_row("started", started)
    if ended:
        summary.add_row("ended", fmt_time(r.ended_at))
    else:
        summary.add_row("controller", escape(r.leader) if r.leader else "no gateway holds the lease now")
    parts: list[RenderableType] = [summary]

    if r.metrics:
        metrics = Table(
            "variant", "version", "requests", "error rate", "single calls", "p50 ms", "p99 ms",
            "batch p99 ms", "mean score",
            title=f"current analysis window (all gateways: {r.window_replicas} sent traffic)",
            title_justify="left",
        )  # fmt: skip
        for m in r.metrics:
            metrics.add_row(
                m.variant,
                f"v{m.version}",
                str(m.requests),
                f"{m.error_rate:.2%}",
                str(m.calls),
                f"{m.p50_latency_ms:.1f}",
                f"{m.p99_latency_ms:.1f}",
                f"{m.batch_p99_latency_ms:.1f}",
                f"{m.mean_score:.4f}",
            )
        parts.append(metrics)
    elif not ended:
        parts.append(Text("no metrics yet (no analysis window open)", style="dim"))

    if r.decisions:
        shown = r.decisions[-DECISIONS_SHOWN:]
        title = "decisions" + (
            f" (newest {len(shown)} of {len(r.decisions)})" if len(shown) < len(r.decisions) else ""
        )
        decisions = Table(
            "time", "step", "verdict", "reason", "what drove it", title=title, title_justify="left"
        )
        for d in shown:
            decisions.add_row(
                fmt_time(d.time),
                str(d.step_index + 1),
                d.verdict,
                escape(d.reason),
                escape(decision_statistics(d)),
            )
        parts.append(decisions)
        analysed = [d for d in r.decisions if d.statistics]
        if analysed:
            d = analysed[-1]
            parts.append(statistics_view(json.loads(d.statistics), f"{d.verdict} at step {d.step_index + 1}"))
        last = r.decisions[-1]
        parts.append(Text.assemble(("last decision: ", "bold"), f"{last.verdict}: {last.reason}"))
    return Group(*parts)


def _num(value: Any, spec: str = ".4f") -> str:
    return "n/a" if value is None else format(value, spec)


def statistics_view(doc: Mapping[str, Any], which: str) -> RenderableType:
    """The statistics an analysis decision recorded (``finpredict.gateway.stats.StatsVerdict.to_dict``):
    each sequential test's effect (canary minus stable; for the latency tests the canary's share of
    single-application calls over the limit), confidence sequence, statistic against its bound,
    sample sizes and alpha spent; the sample-ratio check; the label-free estimates; a latency hold."""
    table = Table(
        "test",
        "effect",
        "always-valid CI",
        "statistic / bound",
        "n stable / canary",
        "alpha spent",
        "rejects",
        title=f"statistics of the last analysis ({which}; rollout alpha {_num(doc.get('alpha'), 'g')})",
        title_justify="left",
    )
    for t in doc.get("tests", []):
        table.add_row(
            t["metric"],
            _num(t["estimate"], "+.4f"),
            f"[{_num(t['lower'], '+.4f')}, {_num(t['upper'], '+.4f')}]",
            f"{_num(t['statistic'], '.2f')} / {_num(t['bound'], '.2f')}",
            f"{t['n_stable']} / {t['n_canary']}",
            _num(t["alpha_spent"], ".4g"),
            "[red]yes[/]" if t["reject"] else "no",
        )
    lines: list[RenderableType] = [table]
    srm = doc.get("srm") or {}
    if srm:
        observed = ", ".join(
            f"{a} {n} (expected {_num(srm['expected'].get(a), '.0f')})" for a, n in srm["observed"].items()
        )
        verdict = "[red]MISMATCH[/]" if srm["mismatch"] else "ok"
        lines.append(
            Text.from_markup(
                f"sample ratio: {verdict}: {escape(observed)}; chi2 {_num(srm['chi2'], '.2f')}, "
                f"p {_num(srm['p_value'], '.3g')}"
            )
        )
    expected = doc.get("expected") or {}
    if expected:
        figures = ", ".join(
            f"{v} AUC {_num(e['auc'], '.3f')} / default rate {_num(e['default_rate'], '.3f')} (n {e['n']})"
            for v, e in expected.items()
        )
        lines.append(Text(f"label-free estimate: {figures}"))
    for reason in doc.get("reasons", []):
        lines.append(Text.assemble(("statistics: ", "bold red"), reason))
    for reason in doc.get("holds") or []:
        lines.append(Text.assemble(("holds: ", "bold yellow"), reason))
    return Group(*lines)


def rollout_line(r: pb.Rollout) -> str:
    return (
        f"rollout [bold]{r.id}[/bold]: {escape(r.model)} v{r.stable_version} → v{r.candidate_version}, "
        f"{styled_state(r.state)}, canary weight {r.weight:g}%"
    )
