"""Chapter 10: the summary (versions, gates, rollouts, alerts, measured times), what Prometheus and
Alertmanager saw, and the HTML report."""

from __future__ import annotations

import urllib.parse
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from rich.table import Table

from finpredict.api.common.v1 import types_pb2
from finpredict.api.rollout.v1 import rollout_pb2
from finpredict.common.rollout_statistics import decision_statistics
from finpredict.demo import report as dr
from finpredict.demo.platform import DAY, MODEL, get_json

if TYPE_CHECKING:
    from finpredict.demo.story import Story


def summarise(story: Story) -> None:
    r, cfg = story.result, story.cfg
    lat = latencies(story)
    every = lat.get("single calls", [])  # one at a time; the other phases are under load
    if every:
        r.p50_ms, r.p99_ms = float(np.percentile(every, 50)), float(np.percentile(every, 99))
    table = Table("step", "outcome", "measured", title="finpredict demo: what happened", title_justify="left")
    for row in r.summary:
        table.add_row(*row)
    story.con.print(table)
    figures = Table("figure", "measured here", "case study (before -> after)", title="the numbers",
                    title_justify="left")  # fmt: skip

    def fmt(value: float | None, text: str) -> str:
        return "-" if value is None else text

    detect = fmt(r.time_to_detect_h, f"{r.time_to_detect_h or 0:.0f} h")
    if r.psi_time_to_detect_h is not None:
        detect += f" (feature PSI 3 days: {r.psi_time_to_detect_h:.0f} h)"
    figures.add_row(
        "commit to production (v2: training start -> production)",
        fmt(r.commit_to_production_s, f"{r.commit_to_production_s or 0:.0f} s"),
        "3-6 weeks -> 1-2 days",
    )
    figures.add_row(
        "time to detect (simulated hours, drift start -> first alert)", detect, "3 weeks -> 4 hours"
    )
    figures.add_row(
        "time to roll back (broken canary start -> rollback)",
        fmt(r.time_to_rollback_s, f"{r.time_to_rollback_s or 0:.1f} s"),
        "manual (hours) -> automated (minutes)",
    )
    figures.add_row(
        "scoring latency through the gateway: one application at a time, timed by the client",
        fmt(r.p50_ms, f"p50 {r.p50_ms or 0:.1f} ms, p99 {r.p99_ms or 0:.1f} ms ({len(every):,} calls)"),
        "gate p99 <= 50 ms, alert p99 > 100 ms",
    )
    story.con.print(figures)
    observability(story)
    r.report_path = write_report(story, lat)
    story.say(f"HTML report: {r.report_path}")
    for name, url in console_links(story).items():
        story.say(f"console, {name}: {url}")
    story.say(f"W&B offline runs: {cfg.work_dir / 'wandb'} (`wandb sync --view`, `wandb sync` uploads them)")
    if "prometheus" in r.targets:
        story.say(
            f"Prometheus UI: {r.targets['prometheus']} (Alertmanager: {r.targets.get('alertmanager', '-')})"
        )


def console_links(story: Story) -> dict[str, str]:
    """The web console's pages of what the demo did (none when the console is not running): the
    models, each version, each rollout, the production version's drift, alerts, decisions."""
    r = story.result
    base = r.targets.get("console", "")
    if not base:
        return {}
    model = urllib.parse.quote(MODEL)
    links = {"models": f"{base}/"}
    for role, v in r.versions.items():
        links[f"version {role} (v{v})"] = f"{base}/models/{model}/versions/{v}"
    for role, ro in r.rollouts.items():
        links[f"rollout {role}"] = f"{base}/rollouts/{urllib.parse.quote(ro.id)}"
    for role in ("v1", "v3"):
        if role in r.versions:
            links[f"drift and quality of {role}"] = f"{base}/models/{model}/versions/{r.versions[role]}/drift"
    links["alerts"] = f"{base}/alerts"
    links["decision lookup"] = f"{base}/decisions"
    return links


def observability(story: Story) -> None:
    """What Prometheus scraped and which alerts reached Alertmanager (both sources)."""
    prom, am = story.result.targets.get("prometheus"), story.result.targets.get("alertmanager")
    if prom:
        up = get_json(f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": "up"}))
        results = up.get("data", {}).get("result", []) if isinstance(up, dict) else []
        jobs = sorted(r["metric"].get("job", "?") for r in results if r.get("value", [0, "0"])[1] == "1")
        story.say(f"Prometheus ({prom}) scrapes {len(jobs)} services: {', '.join(jobs) or '-'}")
    if am:
        alerts = get_json(f"{am}/api/v2/alerts")
        names = Counter(a["labels"].get("alertname", "?") for a in alerts) if isinstance(alerts, list) else {}
        listed = ", ".join(f"{n} x{k}" if k > 1 else n for n, k in sorted(names.items())) or "none"
        story.say(f"Alertmanager ({am}) has these alerts active: {listed}")


def latencies(story: Story) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {}
    for t in story.traffics:
        for phase, xs in t.latency_ms.items():
            out.setdefault(phase, []).extend(xs)
    return out


def write_report(story: Story, lat: dict[str, list[float]]) -> Path:
    r, cfg = story.result, story.cfg
    versions = []
    notes = {"v1": "first model", "v2": "next month's data", "broken": "DSCR fed in percent",
             "v3": f"retrained by the monitor ({r.v3_trigger})"}  # fmt: skip
    for role, v in r.versions.items():
        mv = story.p.version(v)
        versions.append(
            dr.VersionRow(
                version=v,
                created_at=mv.created_at.ToDatetime(tzinfo=UTC).isoformat(timespec="seconds"),
                gates=[
                    dr.Gate(
                        g.name,
                        g.value,
                        g.threshold,
                        ">=" if g.comparator == types_pb2.COMPARATOR_GREATER_OR_EQUAL else "<=",
                        g.passed,
                    )
                    for g in mv.gate_results
                ],
                aliases=list(mv.aliases),
                note=f"{role}: {notes.get(role, '')}",
            )
        )
    rollouts = [_report_rollout(ro) for ro in r.rollouts.values()]
    alerts = []
    if r.replay_start is not None:
        for a in r.alerts:
            day = (a.started_at.ToDatetime(tzinfo=UTC) - r.replay_start) / DAY
            alerts.append(dr.Alert(a.rule, day, a.value, a.threshold, ", ".join(a.features)))
    v2 = r.versions.get("v2", 0)
    scores = dr.ScoreSamples(
        stable=scores_of(story, "v2 rollout", "stable"),
        canary=scores_of(story, "v2 rollout", "canary"),
        stable_label=f"stable v{r.versions.get('v1', 0)}",
        canary_label=f"canary v{v2}",
        threshold=story.p.version(v2).threshold if v2 else None,
    )
    data = dr.DemoReport(
        model=MODEL,
        generated_at=datetime.now(UTC).isoformat(timespec="seconds"),
        versions=versions,
        rollouts=rollouts,
        drift=r.drift,
        scores=scores,
        latency=[dr.LatencyPhase(phase, samples_ms=xs) for phase, xs in lat.items() if xs],
        alerts=alerts,
        measured=dr.Measured(
            commit_to_production_s=r.commit_to_production_s,
            time_to_detect_h=r.time_to_detect_h,
            time_to_rollback_s=r.time_to_rollback_s,
            p50_ms=r.p50_ms,
            p99_ms=r.p99_ms,
        ),
        links=dr.Links(
            wandb_dir=str(cfg.work_dir / "wandb"),
            prometheus_url=r.targets.get("prometheus", ""),
            other={
                **{k: v for k, v in r.targets.items() if k in ("alertmanager", "gateway", "registry")},
                **{f"console: {name}": url for name, url in console_links(story).items()},
            },
        ),
    )
    cfg.report_path.parent.mkdir(parents=True, exist_ok=True)
    cfg.report_path.with_suffix(".json").write_text(data.to_json())
    return dr.write_report(data, cfg.report_path)


def scores_of(story: Story, phase: str, variant: str) -> list[float]:
    return [x for t in story.traffics for x in t.scores_of(phase, variant)]


def _report_rollout(r: rollout_pb2.Rollout) -> dr.Rollout:
    started = r.started_at.ToDatetime(tzinfo=UTC)
    outcome = {
        rollout_pb2.ROLLOUT_STATE_PROMOTED: "completed",
        rollout_pb2.ROLLOUT_STATE_ROLLED_BACK: "rolled_back",
        rollout_pb2.ROLLOUT_STATE_ABORTED: "aborted",
    }.get(r.state, "running")
    decisions = []
    for d in r.decisions:
        i = min(d.step_index, len(r.steps) - 1)
        weight = {
            "advance": r.steps[min(i + 1, len(r.steps) - 1)],
            "rollback": 0.0,
            "abort": 0.0,
            "promote": 100.0,
            "promoted": 100.0,
        }.get(d.verdict, r.steps[i])
        t = (d.time.ToDatetime(tzinfo=UTC) - started).total_seconds()
        decisions.append(
            dr.RolloutDecision(max(t, 0.0), d.step_index, weight, d.verdict, d.reason, decision_statistics(d))
        )
    return dr.Rollout(r.id, r.model, int(r.stable_version), int(r.candidate_version), outcome, decisions)
