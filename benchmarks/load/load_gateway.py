"""Load and soak of the gateway on a real local stack, driven by ghz at a fixed rate.

The stack is the one the gateway's end-to-end tests start (``finpredict.testkit.gateway.running_stack``),
as real processes on loopback with ephemeral ports: a registry (model v1 in `production`, a
good candidate v2), Ray (``ray start --head``) with the model server (two replicas), a monitor
receiving the prediction log, and the gateway. ghz (``.tools/bin/ghz``, installed by
``benchmarks/load/install_ghz.sh``) sends ``ScoringService.Score`` calls with the client's
bearer token at a fixed rate (``--rps``; 200 application records round-robin, a fresh entity
id per call, so the rollout's split applies), while the driver changes things under load:

- at 10 s: ``StartRollout`` of v2 with steps 10, 50, 100 % and a 10 s analysis interval (the
  canary weight changes at each passed step, then `production` moves to v2);
- at 35 s: a new version v3 is registered and mirrored (``SetShadow`` 100 %): the replicas load a
  model they have never seen while serving.

``load`` (``task load``) runs it once (default 60 s at 50 req/s) and writes
``benchmarks/results/load.json``: p50/p99/max latency, errors by status, achieved rate, the
latency around each event, the rollout's decisions and the gateway's counters. ghz's rate
limiter keeps the rate while fewer than ``--concurrency`` calls are in flight (50 workers: one
second of calls), so at this rate it is an open loop unless latency passes a second.

``soak`` (``task soak``) runs the same load for ``--minutes`` (default 10) and samples the
resident memory and open file descriptors of every service process (gateway, registry, monitor,
model-server driver, each Serve replica, the Serve proxy and controller) every ``--sample-s``
seconds; ``benchmarks/results/soak.json`` has the samples and each process's growth (first to
last sample and a least-squares slope per minute).

    python -m benchmarks.load.load_gateway load [--rate 50] [--duration 60]
    python -m benchmarks.load.load_gateway soak [--minutes 10] [--rate 50] [--sample-s 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml  # type: ignore[import-untyped]

from benchmarks.benchkit import Disturbance, load_average, ray_env, utc_now
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG
from finpredict.testkit.gateway import (
    CLIENT_TOKEN,
    OPERATOR,
    RECORDS,
    GatewayClient,
    Stack,
    features_of,
    running_stack,
    train,
)
from finpredict.testkit.process import ServiceProcess, wait_for
from finpredict.testkit.scrape import samples, total
from finpredict.testkit.serving import ServeOptions

ROOT = Path(__file__).resolve().parents[2]
GHZ = ROOT / ".tools" / "bin" / "ghz"
RESULTS = ROOT / "benchmarks" / "results"
MODEL = "credit-load"
SCORE = "finpredict.scoring.v1.ScoringService.Score"
ROLLOUT_AT_S = 10.0
SHADOW_AT_S = 35.0
ROLLOUT_STEPS = [10.0, 50.0, 100.0]
ROLLOUT_INTERVAL_S = 10.0
P99_MAX_MS = 100.0  # the load test's target (with zero errors)
# the gateway's default controller tick (the test harness's is shorter)
GATEWAY_ENV = {"FINPREDICT_GATEWAY_CONTROLLER_TICK_S": "0.5"}


def shipped_serve() -> ServeOptions:
    """The packaged Serve deployment as it ships (autoscaling, actor resources, health checks)."""
    config: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    dep = config["applications"][0]["deployments"][0]
    keep = ("ray_actor_options", "health_check_period_s", "health_check_timeout_s")
    return ServeOptions(autoscaling=dep["autoscaling_config"], deployment={k: dep[k] for k in keep})


def stack(work: Path) -> contextlib.AbstractContextManager[Stack]:
    """The gateway's end-to-end stack (the one its tests start), torn down by pid: v1 in
    `production`, a good candidate v2; the model server deployed as it ships, on Ray's defaults."""
    return running_stack(
        work,
        MODEL,
        {"v1": train(seed=1, rounds=20), "v2": train(seed=1, rounds=22)},
        gateway_env=GATEWAY_ENV,
        serve=shipped_serve(),
    )


def warm_up(s: Stack) -> None:
    """Scores until both replicas answer (the first calls load the model)."""
    client = GatewayClient(s.gateway.target)
    try:

        def ok() -> bool:
            client.score_batch(MODEL, [f"warm-{i}" for i in range(50)], timeout=30)
            return True

        wait_for(ok, 180, "the first scores", interval=0.5)
        for i in range(20):
            client.score_batch(MODEL, [f"warm-{i}-{j}" for j in range(20)], timeout=30)
    finally:
        client.close()


def ghz_data(path: Path, n: int = 200) -> None:
    """``n`` Score requests for ghz (used round-robin), each with a fresh entity id per call."""
    rows = []
    for rec in RECORDS[:n]:
        features: dict[str, Any] = {}
        for name, value in features_of(rec).items():
            kind = value.WhichOneof("kind")
            features[name] = {} if kind is None else {kind: getattr(value, kind)}
        rows.append({"model": MODEL, "application": {"entity_id": "{{newUUID}}", "features": features}})
    path.write_text(json.dumps(rows))


def run_ghz(target: str, rate: int, duration_s: float, work: Path) -> subprocess.Popen[bytes]:
    if not GHZ.exists():
        sys.exit(f"{GHZ} is missing: run `bash benchmarks/load/install_ghz.sh` (task load does)")
    ghz_data(work / "data.json")
    (work / "metadata.json").write_text(json.dumps({"authorization": f"Bearer {CLIENT_TOKEN}"}))
    cmd = [
        str(GHZ), "--insecure",
        "--proto", str(ROOT / "proto/finpredict/scoring/v1/scoring.proto"),
        "--import-paths", str(ROOT / "proto"),
        "--call", SCORE,
        "--data-file", str(work / "data.json"),
        "--metadata-file", str(work / "metadata.json"),
        "--rps", str(rate), "--concurrency", "50", "--connections", "2",
        "--duration", f"{duration_s}s", "--duration-stop", "wait", "--timeout", "10s",
        "--format", "json", "--output", str(work / "ghz.json"),
        target,
    ]  # fmt: skip
    log = (work / "ghz.log").open("wb")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)


# ----- what happens during the load ----------------------------------------------------------------


@dataclass
class Events:
    """Changes made under load, with their times (seconds since the load started)."""

    started: float
    log: list[dict[str, Any]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    rollout_id: str = ""

    def mark(self, what: str, **extra: Any) -> None:
        self.log.append({"at_s": round(time.monotonic() - self.started, 2), "event": what, **extra})


def drive(s: Stack, events: Events, stop: threading.Event) -> None:
    client = GatewayClient(s.gateway.target)
    try:
        if stop.wait(max(0.0, events.started + ROLLOUT_AT_S - time.monotonic())):
            return
        rollout = client.start_rollout(
            MODEL,
            s.versions["v2"],
            ROLLOUT_STEPS,
            interval_s=ROLLOUT_INTERVAL_S,
            min_requests=30,
            max_p99_latency_ms=5000.0,
            max_p99_latency_ratio=10.0,
        )
        events.rollout_id = rollout.id
        events.mark("StartRollout", rollout=rollout.id, steps=ROLLOUT_STEPS, interval_s=ROLLOUT_INTERVAL_S)
        seen = 1
        shadow_done = False
        while not stop.wait(0.2):
            now = time.monotonic() - events.started
            r = client.rollout(rollout.id)
            for d in r.decisions[seen:]:
                if d.verdict != "wait":
                    events.mark(f"rollout {d.verdict}", step=d.step_index, weight=r.weight)
            seen = len(r.decisions)
            if not shadow_done and now >= SHADOW_AT_S:
                shadow_done = True
                v3 = s.registry.register(MODEL, train(seed=3, rounds=21), threshold=0.5)
                events.mark("RegisterVersion", version=v3)
                client.rollouts.SetShadow(
                    rpb.SetShadowRequest(model=MODEL, version=v3, percent=100), metadata=OPERATOR, timeout=10
                )
                events.mark("SetShadow", version=v3, percent=100)
    except grpc.RpcError as exc:
        events.errors.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
    finally:
        client.close()


# ----- process sampling (soak) ---------------------------------------------------------------------


def service_pids(s: Stack) -> dict[str, int]:
    """Every service process of the stack, by role."""
    pids = {
        "gateway": s.gateway.proc.pid,
        "registry": s.registry.proc.proc.pid,
        "monitor": s.monitor.proc.pid,
        "model-server driver": s.model_server.proc.pid,
    }
    for i, pid in enumerate(s.ray.replica_pids()):
        pids[f"serve replica {i} (pid {pid})"] = pid
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes()
            if f"FP_TEST_RAY={s.ray.marker}".encode() not in (entry / "environ").read_bytes():
                continue
        except OSError:
            continue
        for role in (b"ray::ProxyActor", b"ray::ServeController"):
            if cmd.startswith(role):
                pids[f"serve {role.decode().removeprefix('ray::')}"] = int(entry.name)
    return pids


def rss_and_fds(pid: int) -> tuple[float, int] | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None
    kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    return round(kb / 1024, 1), fds


def sample_loop(
    s: Stack, started: float, every_s: float, stop: threading.Event, out: list[dict[str, Any]]
) -> None:
    while True:
        row: dict[str, Any] = {"at_s": round(time.monotonic() - started, 1), "processes": {}}
        for role, pid in service_pids(s).items():
            got = rss_and_fds(pid)
            if got is not None:
                row["processes"][role] = {"rss_mib": got[0], "fds": got[1]}
        out.append(row)
        if stop.wait(every_s):
            return


SOAK_STEADY_FROM_S = 120.0  # the soak's criteria hold after the first 2 minutes
RSS_SLOPE_MAX = 1.0  # MiB per minute, least-squares slope
FDS_GROWTH_MAX = 2


def growth(rows: list[dict[str, Any]], from_s: float = 0.0) -> dict[str, Any]:
    """Per process: first, last and max RSS and fds, and the least-squares slope per minute, over
    the samples taken at or after ``from_s``."""
    out: dict[str, Any] = {}
    rows = [row for row in rows if row["at_s"] >= from_s]
    roles = sorted({r for row in rows for r in row["processes"]})
    for role in roles:
        pts = [(row["at_s"], row["processes"][role]) for row in rows if role in row["processes"]]
        if len(pts) < 2:
            continue
        t = np.array([p[0] for p in pts]) / 60
        entry: dict[str, Any] = {"samples": len(pts)}
        for key in ("rss_mib", "fds"):
            v = np.array([p[1][key] for p in pts], dtype=float)
            slope = float(np.polyfit(t, v, 1)[0]) if t[-1] > t[0] else 0.0
            entry[key] = {
                "first": float(v[0]),
                "last": float(v[-1]),
                "max": float(v.max()),
                "growth": round(float(v[-1] - v[0]), 1),
                "slope_per_min": round(slope, 2),
            }
        out[role] = entry
    return out


def steady(g: dict[str, Any]) -> bool:
    """One process's :func:`growth` meets the soak's criteria."""
    return bool(g["rss_mib"]["slope_per_min"] < RSS_SLOPE_MAX and g["fds"]["growth"] <= FDS_GROWTH_MAX)


# ----- the report ----------------------------------------------------------------------------------


def summarize(ghz_json: Path, started_wall: float, events: Events, duration_s: float) -> dict[str, Any]:
    report = json.loads(ghz_json.read_text())
    details = report.get("details") or []
    ok = [d for d in details if d.get("status") == "OK"]
    lat = np.array([d["latency"] for d in ok], dtype=float) / 1e6  # ns -> ms
    by_status = Counter(d.get("status", "?") for d in details)

    def window(a: float, b: float) -> dict[str, Any]:
        rows = [
            d
            for d in details
            if a <= _ts(d["timestamp"]) - started_wall < b  # seconds since the load started
        ]
        lats = np.array([d["latency"] for d in rows if d.get("status") == "OK"], dtype=float) / 1e6
        return {
            "from_s": round(a, 1),
            "to_s": round(b, 1),
            "calls": len(rows),
            "errors": dict(Counter(d["status"] for d in rows if d.get("status") != "OK")),
            "p50_ms": _pct(lats, 50),
            "p99_ms": _pct(lats, 99),
            "max_ms": round(float(lats.max()), 2) if lats.size else None,
        }

    windows = [{"event": "before any change", **window(0, ROLLOUT_AT_S)}]
    for e in events.log:
        windows.append({"event": e["event"], **window(e["at_s"], e["at_s"] + 5.0)})
    last = max((e["at_s"] for e in events.log), default=0.0) + 5.0
    windows.append({"event": "after the changes", **window(last, duration_s + 1.0)})
    failed = [
        {
            "at_s": round(_ts(d["timestamp"]) - started_wall, 2),
            "status": d.get("status"),
            "error": d.get("error", ""),
        }
        for d in details
        if d.get("status") != "OK"
    ]
    return {
        "calls": len(details),
        "achieved_rps": round(len(details) / duration_s, 2),
        "ghz_rps": round(float(report.get("rps", 0.0)), 2),
        "ok": len(ok),
        "errors_by_status": {k: v for k, v in by_status.items() if k != "OK"},
        "latency_ms": {
            "p50": _pct(lat, 50),
            "p90": _pct(lat, 90),
            "p99": _pct(lat, 99),
            "max": round(float(lat.max()), 2) if lat.size else None,
            "mean": round(float(lat.mean()), 2) if lat.size else None,
        },
        "windows": windows,
        "failed_calls": failed[:50],
    }


def _ts(text: str) -> float:
    """ghz's RFC 3339 timestamps with nanoseconds, as epoch seconds."""
    from datetime import datetime

    head, _, frac = text.partition(".")
    digits = "".join(c for c in frac if c.isdigit())
    tz = frac[len(digits) :] or "Z"
    base = datetime.fromisoformat(head + (tz.replace("Z", "+00:00")))
    return base.timestamp() + (float("0." + digits) if digits else 0.0)


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 2) if values.size else None


def gateway_counters(s: Stack) -> dict[str, Any]:
    g = samples(s.gateway.metrics_port)
    m = samples(s.monitor.metrics_port)
    scored: dict[str, float] = {}
    for name, labels, value in g:
        if name == "finpredict_gateway_scored_total":
            key = f"v{labels['version']} {labels['variant']} {labels['outcome']}"
            scored[key] = scored.get(key, 0) + value
    return {
        "scored_total": scored,
        "backend_retries_total": total(g, "finpredict_gateway_backend_retries_total"),
        "circuit_open": total(g, "finpredict_gateway_circuit_open"),
        "canary_fallbacks_total": total(g, "finpredict_gateway_canary_fallbacks_total"),
        "shadow_total": {
            o: total(g, "finpredict_gateway_shadow_total", outcome=o) for o in ("ok", "error", "skipped")
        },
        "prediction_log_sent_total": total(g, "finpredict_gateway_prediction_log_sent_total"),
        "prediction_log_dropped_total": total(g, "finpredict_gateway_prediction_log_dropped_total"),
        "monitor_records_ingested_total": total(m, "finpredict_monitor_records_ingested_total"),
    }


def log_warnings(proc: ServiceProcess) -> dict[str, int]:
    """WARNING and ERROR lines of a service's text log, counted by logger and message."""
    found: Counter[str] = Counter()
    for line in proc.logs().splitlines():
        for level in (" WARNING ", " ERROR "):
            if level in line:
                found[level.strip() + " " + line.split(level, 1)[1][:120]] += 1
    return dict(found.most_common(20))


def run(mode: str, rate: int, duration_s: float, sample_s: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"fp-{mode}-"))
    load_before = load_average()
    date = utc_now()
    disturbance = Disturbance()
    try:
        with stack(work) as s:
            warm_up(s)
            stop = threading.Event()
            disturbance.start()
            started = time.monotonic()
            started_wall = time.time()
            ghz = run_ghz(s.gateway.target, rate, duration_s, work)
            events = Events(started)
            driver = threading.Thread(target=drive, args=(s, events, stop), daemon=True)
            driver.start()
            rows: list[dict[str, Any]] = []
            sampler = None
            if mode == "soak":
                sampler = threading.Thread(
                    target=sample_loop, args=(s, started, sample_s, stop, rows), daemon=True
                )
                sampler.start()
            code = ghz.wait(timeout=duration_s + 120)
            during = disturbance.stop()
            stop.set()
            driver.join(timeout=30)
            if sampler is not None:
                sampler.join(timeout=30)
            if code != 0:
                sys.exit(f"ghz exited with {code}:\n{(work / 'ghz.log').read_text(errors='replace')[-3000:]}")
            wait_for(  # the prediction log sent what it had before the counters are read
                lambda: (
                    total(samples(s.gateway.metrics_port), "finpredict_gateway_prediction_log_buffer_records")
                    == 0
                ),
                60,
                "the prediction log to drain",
            )
            client = GatewayClient(s.gateway.target)
            try:
                final = client.rollout(events.rollout_id) if events.rollout_id else None
            finally:
                client.close()
            figures = summarize(work / "ghz.json", started_wall, events, duration_s)
            result: dict[str, Any] = {
                "what": f"ghz Score calls at {rate:g}/s for {duration_s:g} s through the gateway",
                "date": date,
                "generator": "ghz v0.120.0 (--rps, 50 workers, 2 connections)",
                "machine": {
                    "cpus": os.cpu_count(),
                    "python": platform.python_version(),
                    "load_average_before": load_before,
                    "load_average_after": load_average(),
                    **during,  # the cores other processes kept busy during the load
                },
                "settings": {
                    "ray": "ray start --head --num-cpus=2",
                    "ray_env": ray_env(),
                    "serve_config": yaml.safe_load((work / "model-server" / "serve_config.yaml").read_text()),
                    "gateway_env": {**s.gateway_env},
                },
                "target_rps": rate,
                "duration_s": duration_s,
                "targets": {
                    "p99_ms_max": P99_MAX_MS,
                    "p99_met": (figures["latency_ms"]["p99"] or float("inf")) < P99_MAX_MS,
                    "zero_errors": not figures["errors_by_status"],
                },
                **figures,
                "events": events.log,
                "driver_errors": events.errors,
                "rollout": None
                if final is None
                else {
                    "state": rpb.RolloutState.Name(final.state),
                    "weight": final.weight,
                    "decisions": [
                        {"step": d.step_index, "verdict": d.verdict, "reason": d.reason}
                        for d in final.decisions
                        if d.verdict != "wait"
                    ],
                },
                "gateway": gateway_counters(s),
                "gateway_log_warnings": log_warnings(s.gateway),
            }
            if mode == "soak":
                result["sample_every_s"] = sample_s
                result["growth"] = growth(rows)
                # after the changes under load (the new version's model is loaded by then): a
                # leak shows as a steady slope here, a one-time step does not
                result["growth_after_events_from_s"] = SHADOW_AT_S + 15
                result["growth_after_events"] = growth(rows, SHADOW_AT_S + 15)
                # the criteria, after the first 2 minutes: RSS slope < 1 MiB/min per process,
                # open fds flat (no more than 2 up from the 2-minute sample: a pooled connection or two)
                after = growth(rows, SOAK_STEADY_FROM_S)
                result["growth_after_from_s"] = SOAK_STEADY_FROM_S
                result["growth_after"] = after
                result["targets"] = {
                    "rss_slope_mib_per_min_max": RSS_SLOPE_MAX,
                    "fds_growth_max": FDS_GROWTH_MAX,
                }
                result["met"] = {role: steady(g) for role, g in after.items()}
                result["samples"] = rows
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="mode", required=True)
    load = sub.add_parser("load", help="fixed-rate load with a rollout and a new version (load.json)")
    load.add_argument("--rate", type=int, default=50, help="calls per second")
    load.add_argument("--duration", type=float, default=60.0, help="seconds (>= 60 for the report)")
    soak = sub.add_parser("soak", help="the same load for minutes, sampling RSS and fds (soak.json)")
    soak.add_argument("--rate", type=int, default=50, help="calls per second")
    soak.add_argument("--minutes", type=float, default=10.0)
    soak.add_argument("--sample-s", type=float, default=10.0)
    args = parser.parse_args(argv)
    duration = args.duration if args.mode == "load" else args.minutes * 60
    result = run(args.mode, args.rate, duration, getattr(args, "sample_s", 10.0))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{args.mode}.json"
    out.write_text(json.dumps(result, indent=2) + "\n")
    brief = {k: result[k] for k in ("achieved_rps", "calls", "errors_by_status", "latency_ms")}
    print(json.dumps(brief, indent=2))
    if args.mode == "soak":
        print(
            f"after {SOAK_STEADY_FROM_S:.0f} s (met: RSS slope < {RSS_SLOPE_MAX} MiB/min,"
            f" fds +{FDS_GROWTH_MAX} at most):"
        )
        for role, g in result["growth_after"].items():
            rss, fds = g["rss_mib"], g["fds"]
            print(
                f"{role:40s} rss {rss['first']:8.1f} -> {rss['last']:8.1f} MiB"
                f" ({rss['slope_per_min']:+.2f}/min)  fds {fds['first']:4.0f} -> {fds['last']:4.0f}"
                f"  {'met' if result['met'][role] else 'MISSED'}"
            )
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
