"""Chapter 3: v1 serves applications through the gateway with the client SDK while their outcomes
are reported later (through the gateway, which forwards them to the monitor); then single
applications, timed one at a time."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import grpc
import numpy as np
from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2
from finpredict.demo.platform import MODEL
from finpredict.demo.traffic import Pool, Traffic, make_pool

if TYPE_CHECKING:
    from finpredict.demo.story import Story


def start_traffic(story: Story, pool: Pool, phase: str, entity_prefix: str) -> Traffic:
    cfg = story.cfg
    traffic = Traffic(
        story.p.targets["gateway"],
        story.p.client_token,
        MODEL,
        pool,
        outcomes_token=story.p.outcomes_token,
        batch=cfg.traffic_batch,
        senders=cfg.senders,
        label_delay_s=cfg.label_delay_s,
        probe_interval_s=cfg.probe_interval_s,
        phase=phase,
        entity_prefix=entity_prefix,
    )
    story.traffic = traffic.__enter__()
    story.traffics.append(traffic)
    return traffic


def serve_v1(story: Story) -> None:
    cfg = story.cfg
    v1 = story.result.versions["v1"]
    with story.con.status("generating applications (the pipeline's data-generating process) ..."):
        story.pools["none"] = make_pool(cfg.pool_rows, seed=101)
        story.pools["recession"] = make_pool(cfg.pool_rows, seed=102, scenario="recession")
    story.warm_up(v1, story.pools["none"])
    story.say(
        f"a lending app scores applications through the gateway ({story.p.targets['gateway']}) with "
        f"the client SDK, about {cfg.serve_rate:,.0f} applications/s in batches of {cfg.traffic_batch} "
        "plus single calls timed by the client; "
        f"each outcome is reported {cfg.label_delay_s:g} s later (the SDK's record_outcomes by request "
        "id, through the gateway to the monitor: in lending, months later)"
    )
    traffic = start_traffic(story, story.pools["none"], "v1 serving", "biz")
    traffic.rate = cfg.serve_rate
    t0 = time.perf_counter()
    deadline = time.monotonic() + cfg.rollout_timeout_s
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description:<12}"),
        BarColumn(bar_width=24),
        TextColumn("[cyan]{task.fields[note]}"),
        TimeElapsedColumn(),
        console=story.con,
    ) as progress:
        task = progress.add_task("traffic", total=cfg.v1_min_rows, note="")
        while (c := traffic.snapshot()).rows < cfg.v1_min_rows and time.monotonic() < deadline:
            progress.update(
                task,
                completed=min(c.rows, cfg.v1_min_rows),
                note=f"{c.rows:,} scored by v{v1} ({c.rows / (time.perf_counter() - t0):,.0f}/s), "
                f"{c.labels_matched:,} outcomes matched",
            )
            time.sleep(0.3)  # refreshing the display, with a deadline
        progress.update(task, completed=cfg.v1_min_rows)
        bulk = traffic.snapshot().rows, time.perf_counter() - t0
        # Then single applications one at a time, nothing else in flight: the latency a
        # lending app sees for one decision.
        traffic.sending.clear()
        traffic.phase, traffic.probe_interval = "single calls", 0.0
        single = progress.add_task("single calls", total=cfg.latency_calls, note="")
        while (n := len(traffic.latencies("single calls"))) < cfg.latency_calls:
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {n} single calls answered in {cfg.rollout_timeout_s:.0f} s")
            progress.update(single, completed=n, note="one at a time, timed by the client")
            time.sleep(0.3)  # refreshing the display, with a deadline
        progress.update(single, completed=cfg.latency_calls)
        traffic.pause()
        traffic.probe_interval = cfg.probe_interval_s
        traffic.phase = "v1 serving"
        traffic.flush_labels()
    c = traffic.snapshot()
    if c.rows < cfg.v1_min_rows:
        raise TimeoutError(f"only {c.rows} applications scored in {cfg.rollout_timeout_s:.0f} s: {c.errors}")
    lat = traffic.latencies("single calls")
    p50, p99 = np.percentile(lat, 50), np.percentile(lat, 99)
    stats = live_window(story, v1)
    quality = (
        f": accuracy {stats.accuracy:.3f}, AUC {stats.auc:.3f} on {stats.labeled:,} labels" if stats else ""
    )
    story.say(
        f"v{v1} scored {bulk[0]:,} applications at {bulk[0] / bulk[1]:,.0f}/s, then {len(lat)} one at a "
        f"time: p50 {p50:.1f} ms, p99 {p99:.1f} ms (errors: {dict(c.errors) or 'none'}); the monitor "
        f"matched {c.labels_matched:,} outcomes{quality}"
    )
    story.add(
        "serve v1 through the gateway (SDK), delayed labels",
        f"{c.rows:,} applications, {c.labels_matched:,} outcomes matched",
        f"one at a time: p50 {p50:.1f} ms, p99 {p99:.1f} ms",
    )


def live_window(story: Story, version: int) -> monitor_pb2.WindowStats | None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    req = monitor_pb2.GetDriftReportRequest(
        model=types_pb2.ModelRef(name=MODEL, version=version), window=monitor_pb2.WINDOW_SIZE_DAILY
    )
    req.start.FromDatetime(today)
    try:
        windows = story.p.monitor.GetDriftReport(req, metadata=story.p.admin, timeout=30).windows
    except grpc.RpcError:
        return None
    labeled = [w for w in windows if w.labeled > 0]
    return labeled[-1] if labeled else None
