"""Chapters 7 and 8: a recession replayed through the monitor on a simulated clock until the drift
alerts fire, and the retraining trigger that trains a new version."""

from __future__ import annotations

import math
import re
import time
import urllib.parse
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import polars as pl
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.api.registry.v1 import registry_pb2
from finpredict.api.serving.v1 import model_server_pb2
from finpredict.demo import replay
from finpredict.demo.chapters.rollouts import hand_off_to_canary
from finpredict.demo.chapters.training import STAGE_LINE, STAGES, gate_table, training_progress
from finpredict.demo.platform import DAY, MODEL, get_json

if TYPE_CHECKING:
    from finpredict.demo.story import Story

RETRAIN_END = re.compile(r"\[demo\] dvc repro exited (-?\d+)")  # the workspace command's last line


def recession(story: Story) -> None:
    cfg = story.cfg
    v2 = story.result.versions["v2"]
    hand_off_to_canary(story)  # the version the alert's retraining registers enters a canary by itself
    # The replay runs on a simulated clock; its days begin after today's live traffic so the
    # monitor's windows of the two never mix.
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    start = today + 2 * DAY - cfg.replay_first_day * DAY
    sc = replay.Scenario(
        days=cfg.replay_days,
        first_day=cfg.replay_first_day,
        per_hour=cfg.replay_per_hour,
        drift="recession",
        shift_day=cfg.replay_shift_day,
        threshold=story.p.version(v2).threshold,
        seed=21,
        start=start,
    )
    story.result.replay_start, story.result.shift_time = start, sc.shift_time
    days = cfg.replay_days - cfg.replay_first_day
    story.say(
        f"a recession starts on day {cfg.replay_shift_day}: "
        f"days {cfg.replay_first_day}-{cfg.replay_days - 1} "
        f"({days} simulated days, {cfg.replay_per_hour} applications an hour) are scored by production "
        f"v{v2} on the model server and replayed through the monitor on a simulated clock"
    )
    stream = replay.generate(sc)
    records = replay.to_records(stream, MODEL, v2)
    rows = [model_server_pb2.FeatureRow(features=r.features) for r in records]
    changes: dict[tuple[str, int, int], monitor_pb2.Alert] = {}
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<22}"),
        BarColumn(bar_width=28),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f}"),
        TextColumn("[cyan]{task.fields[note]}"),
        TimeElapsedColumn(),
        console=story.con,
    ) as progress:
        scoring = progress.add_task("score on the model server", total=len(rows), note="")
        scores: list[float] = []
        for i in range(0, len(rows), 1000):
            scores.extend(story.p.predict(v2, rows[i : i + 1000]))
            progress.update(scoring, completed=len(scores))
        stream = stream.with_columns(pl.Series("score", scores))
        replaying = progress.add_task("replay through monitor", total=days, note="")
        with grpc.insecure_channel(story.p.targets["monitor"]) as channel:
            for d in range(cfg.replay_first_day, cfg.replay_days):
                lo, hi = start + d * DAY, start + (d + 1) * DAY
                day = stream.filter((pl.col("time") >= lo) & (pl.col("time") < hi))
                # on a simulated clock: straight to the monitor's API (EvaluateRules needs its admin role)
                got = replay.replay(channel, day, MODEL, v2, metadata=story.p.admin)
                for a in got.changes:
                    replayed = a.started_at.ToDatetime(tzinfo=UTC) >= start + cfg.replay_first_day * DAY
                    if a.model.version == v2 and a.state == monitor_pb2.ALERT_STATE_FIRING and replayed:
                        changes.setdefault((a.id, a.started_at.seconds, a.state), a)
                fired = sorted({a.rule for a in changes.values()})
                progress.update(
                    replaying,
                    advance=1,
                    note=f"day {d}: " + (", ".join(fired) + " firing" if fired else "quiet"),
                )
    alerts = sorted(changes.values(), key=lambda a: (a.started_at.seconds, a.rule))
    story.result.alerts = alerts
    table = Table(
        "rule",
        "fired (simulated)",
        "after the shift",
        "feature",
        "value",
        title="alerts",
        title_justify="left",
    )
    for a in alerts:
        t = a.started_at.ToDatetime(tzinfo=UTC)
        hours = (t - sc.shift_time).total_seconds() / 3600
        table.add_row(
            a.rule,
            f"day {(t - start) / DAY:.2f}".rstrip("0").rstrip("."),
            f"{hours:+.0f} h",
            ", ".join(a.features) or "-",
            f"{a.value:.3f}",
        )
    story.con.print(table)
    after = [a for a in alerts if a.started_at.ToDatetime(tzinfo=UTC) >= sc.shift_time]
    if after:
        first = min(after, key=lambda a: a.started_at.seconds)
        story.result.time_to_detect_h = (
            first.started_at.ToDatetime(tzinfo=UTC) - sc.shift_time
        ).total_seconds() / 3600
    psi = [a for a in after if a.rule == "feature_psi_3d"]
    if psi:
        first_psi = min(psi, key=lambda a: a.started_at.seconds)
        story.result.psi_time_to_detect_h = (
            first_psi.started_at.ToDatetime(tzinfo=UTC) - sc.shift_time
        ).total_seconds() / 3600
        story.say(
            f"feature PSI > 0.25 on 3 consecutive days fired "
            f"{story.result.psi_time_to_detect_h:.0f} h after the "
            f"recession began (the case study: 3 weeks, by customer complaints), for "
            f"{len({f for a in psi for f in a.features})} features"
        )
    story.result.drift = drift_by_day(story, v2, start, cfg.replay_first_day, cfg.replay_days)
    story.result.alertmanager_alerts = alertmanager_count(story)
    if story.result.alertmanager_alerts >= 0:
        story.say(
            f"Alertmanager ({story.p.targets['alertmanager']}) holds "
            f"{story.result.alertmanager_alerts} finpredict model alerts posted by the monitor"
        )
    story.add(
        f"recession replay through the monitor ({days} simulated days)",
        f"{len(alerts)} alerts ({', '.join(sorted({a.rule for a in alerts})) or 'none'})",
        f"time to detect {story.result.time_to_detect_h:.0f} h"
        if story.result.time_to_detect_h is not None
        else "",
    )


def drift_by_day(
    story: Story, version: int, start: datetime, first: int, last: int
) -> dict[int, dict[str, float]]:
    req = monitor_pb2.GetDriftReportRequest(
        model=types_pb2.ModelRef(name=MODEL, version=version), window=monitor_pb2.WINDOW_SIZE_DAILY
    )
    req.start.FromDatetime(start + first * DAY)
    req.end.FromDatetime(start + last * DAY)
    windows = story.p.monitor.GetDriftReport(req, metadata=story.p.admin, timeout=60).windows
    out: dict[int, dict[str, float]] = {}
    for w in windows:
        day = round((w.start.ToDatetime(tzinfo=UTC) - start) / DAY)
        out[day] = {f.feature: f.psi for f in w.features if math.isfinite(f.psi)}
    return out


def alertmanager_count(story: Story) -> int:
    url = story.p.targets.get("alertmanager")
    if not url:
        return -1
    query = urllib.parse.urlencode({"filter": 'alertname=~"FinpredictModel.*"'})
    alerts = get_json(f"{url}/api/v2/alerts?{query}")
    return len(alerts) if isinstance(alerts, list) else -1


def retrain_v3(story: Story) -> None:
    cfg = story.cfg
    v2 = story.result.versions["v2"]
    retrain_dir = cfg.stack.data / "monitor" / "retraining"
    story.say(
        "the firing drift alert started the monitor's retraining trigger: the same pipeline, on "
        "the recession months' data, in the background (FINPREDICT_TRIGGER=alert:<id>)"
    )
    deadline = time.monotonic() + cfg.retrain_timeout_s
    seen: set[str] = set()
    v3 = 0
    alert_id = ""
    with training_progress(story) as progress:
        task = progress.add_task("retrain", total=len(STAGES), stage="waiting for the trigger")
        while time.monotonic() < deadline:
            alerts = story.p.monitor.ListAlerts(
                monitor_pb2.ListAlertsRequest(model=MODEL), metadata=story.p.admin, timeout=30
            ).alerts
            done = [a for a in alerts if a.retrained_version > 0 and a.model.version == v2]
            logs = sorted(retrain_dir.glob("*.log")) if retrain_dir.exists() else []
            if logs:
                text = logs[-1].read_text(errors="replace")
                for stage in STAGE_LINE.findall(text):
                    if stage not in seen:
                        seen.add(stage)
                        progress.update(task, completed=len(seen), stage=f"{len(seen)}/{len(STAGES)} {stage}")
                ended = RETRAIN_END.search(text)
                if ended and int(ended.group(1)) != 0 and not done:
                    raise RuntimeError(f"the retraining run failed; its log ({logs[-1]}):\n{text[-3000:]}")
            if done:
                first = min(done, key=lambda a: a.started_at.seconds)
                v3, alert_id = int(first.retrained_version), first.id
                progress.update(task, completed=len(STAGES), stage=f"v{v3} registered")
                break
            time.sleep(0.5)  # polling the monitor's alert list with a deadline
    if not v3:
        raise TimeoutError(
            f"no retrained version within {cfg.retrain_timeout_s:.0f} s (logs in {retrain_dir})"
        )
    story.result.versions["v3"] = v3
    lineage = story.p.registry.GetLineage(
        registry_pb2.GetLineageRequest(model=MODEL, version=v3), metadata=story.p.admin, timeout=30
    ).lineage
    story.result.v3_trigger, story.result.retrain_alert_id = lineage.trigger, alert_id
    story.con.print(gate_table(story, v3, f"v{v3}: retrained by the monitor's trigger"))
    data_md5 = next(iter(lineage.data_md5.values()), "")
    story.say(
        f"v{v3}'s lineage: trigger '{lineage.trigger}' (the alert {alert_id}), "
        f"git {lineage.git_commit[:12]}, data md5 {data_md5[:10]}"
    )
    story.add("retraining trigger", f"v{v3} registered, lineage trigger {lineage.trigger}", "")
