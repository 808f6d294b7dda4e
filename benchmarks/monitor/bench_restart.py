"""Benchmark: how long the monitor takes to restart, and whether data older than the retention
period makes it slower.

Data: the demo's synthetic credit stream (45 features), 200 predictions an hour for 30 days
(144,000 predictions, every one labelled by an outcome 24 h later), ingested as the gateway sends
them (batches of 20, so ten files an hour before compaction) by the monitor's own engine, then
shut down as the service does (a snapshot, then the closed hours compacted). The "older" data are
60 more days at the same rate before those 30, written by the same engine with no retention (as
the monitor before the retention period left its logs: one file per batch, never compacted).

Scenarios (each from a pristine copy of its data folder, ``--repeats`` times, default 3):

* ``empty``: an empty data folder (the process's own start-up cost: imports, gRPC, metrics);
* ``retained_30d``: the 30 days and their snapshot (a normal restart);
* ``retained_30d_plus_60d_older``: the same plus the 60 older days in the logs;
* ``retained_30d_no_snapshot``: the 30 days without the snapshot (the first start after an
  upgrade, or a lost snapshot: the retained logs are read);
* ``retained_30d_plus_60d_older_no_snapshot``: that plus the 60 older days.

Measured: wall-clock seconds from starting ``python -m finpredict.monitor`` until its gRPC
health check answers SERVING; the monitor's own ``finpredict_monitor_recovery_seconds`` (the
state rebuild alone); its resident memory once serving. The retention period is the default,
30 days. Writes ``benchmarks/results/monitor_restart.json``.
Run: ``uv run --locked python -m benchmarks.monitor.bench_restart``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

from benchmarks.benchkit import REPO, Disturbance, load_average, machine_info, median
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.monitor.engine import Engine, EngineOptions
from finpredict.monitor.profiles import ProfileCache
from finpredict.monitor.records import OutcomeIn
from finpredict.monitor.rules import load_rules
from finpredict.monitor.service import record_from_proto
from finpredict.testkit.monitor import MODEL, monitor_env
from finpredict.testkit.process import start_service
from finpredict.testkit.scrape import metric_value

OUT = REPO / "benchmarks" / "results" / "monitor_restart.json"
PER_HOUR = 200
RETAINED_DAYS = 30
OLDER_DAYS = 60
BATCH = 20
LABEL_DELAY = timedelta(hours=24)
TARGET_S = 10.0


def _write(
    data_dir: Path,
    cache: ProfileCache,
    start: Any,
    days: int,
    retention_days: int,
    seed: int,
    shut_down: bool,
) -> int:
    """Ingests ``days`` of traffic starting at ``start`` into ``data_dir`` with the engine, hour by
    hour in batches of :data:`BATCH`, outcomes ``LABEL_DELAY`` later; with ``shut_down``, ends as
    the service does (snapshot, then compaction). Returns the predictions written."""
    engine = Engine(
        data_dir,
        cache,
        load_rules(DEFAULT_RULES_FILE),
        EngineOptions(retention=timedelta(days=retention_days)),
    )
    written = 0
    waiting: list[tuple[Any, str]] = []
    for day in range(days):
        sc = rp.Scenario(days=day + 1, first_day=day, per_hour=PER_HOUR, seed=seed, start=start)
        stream = rp.generate(sc)
        for (hour,), part in stream.group_by(pl.col("time").dt.truncate("1h"), maintain_order=True):
            records = [record_from_proto(r) for r in rp.to_records(part, MODEL, 1)]
            for i in range(0, len(records), BATCH):
                engine.ingest(records[i : i + BATCH])
            written += len(records)
            end = hour + timedelta(hours=1)  # type: ignore[operator]
            waiting += [(t + LABEL_DELAY, r) for t, r in zip(part["time"], part["request_id"], strict=True)]
            due = [(t, r) for t, r in waiting if t < end]
            waiting = [(t, r) for t, r in waiting if t >= end]
            if due:
                engine.record_outcomes([OutcomeIn(r, "", r.endswith("7"), t, None) for t, r in due])
            engine.evaluate(end)
    if shut_down:
        engine.snapshot()
    return written


def _measure(data_dir: Path, work: Path) -> dict[str, float]:
    env = monitor_env(work, FINPREDICT_MONITOR_DATA_DIR=str(data_dir), FINPREDICT_MONITOR_LOG_FORMAT="json")
    t0 = time.perf_counter()
    proc = start_service("monitor", work, env=env, timeout=600)
    serving = time.perf_counter() - t0
    try:
        recovery = metric_value(proc, "finpredict_monitor_recovery_seconds")
        rss = _rss_mib(proc.proc.pid)
    finally:
        proc.stop(timeout=60)
    return {"to_serving_s": round(serving, 3), "recovery_s": round(recovery, 3), "rss_mib": rss}


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def _files(data_dir: Path) -> int:
    return sum(1 for _ in data_dir.rglob("*.parquet"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--older-days", type=int, default=OLDER_DAYS, help="(a smaller run: a smoke test)")
    args = parser.parse_args()
    began = time.perf_counter()
    load_before = load_average()
    disturbance = Disturbance()
    disturbance.start()
    root = Path(tempfile.mkdtemp(prefix="bench-monitor-restart-"))
    try:
        profiles = root / "profiles"
        (profiles / MODEL).mkdir(parents=True)
        (profiles / MODEL / "1.bin").write_bytes(bytes(rp.reference_profile().to_bytes()))
        cache = ProfileCache(profiles)
        t = time.perf_counter()
        # the older days first, as they happened: their files sort before the snapshot's stamps
        older = root / "older"
        older_start = rp.START - timedelta(days=args.older_days)
        n_older = _write(older / "data", cache, older_start, args.older_days, 3650, seed=2, shut_down=False)
        retained = root / "retained"
        n_retained = _write(
            retained / "data", cache, rp.START, RETAINED_DAYS, RETAINED_DAYS, 1, shut_down=True
        )
        generation_s = time.perf_counter() - t
        print(f"data written in {generation_s:.0f} s: {n_retained} retained, {n_older} older", flush=True)
        sources: dict[str, Path] = {"empty": root / "empty" / "data"}
        (root / "empty" / "data").mkdir(parents=True)
        sources["retained_30d"] = retained / "data"
        plus = root / "plus" / "data"
        shutil.copytree(retained / "data", plus)
        for kind in ("predictions", "outcomes"):
            shutil.copytree(older / "data" / kind, plus / kind, dirs_exist_ok=True)
        sources["retained_30d_plus_60d_older"] = plus
        for name, src in list(sources.items())[1:]:
            bare = root / f"{name}-bare" / "data"
            shutil.copytree(src, bare)
            shutil.rmtree(bare / "snapshot")
            sources[f"{name}_no_snapshot"] = bare
        figures: dict[str, Any] = {}
        for name, src in sources.items():
            runs = []
            for i in range(args.repeats):
                copy = root / "runs" / f"{name}-{i}"
                shutil.copytree(src, copy / "data")
                (copy / "profiles").symlink_to(profiles, target_is_directory=True)
                runs.append(_measure(copy / "data", copy))
                shutil.rmtree(copy, ignore_errors=True)
                print(f"  {name:<42} run {i + 1}: {runs[-1]}", flush=True)
            figures[name] = {
                "files_in_data_folder": _files(src),
                "median_to_serving_s": median(r["to_serving_s"] for r in runs),
                "median_recovery_s": median(r["recovery_s"] for r in runs),
                "median_rss_mib": median(r["rss_mib"] for r in runs),
                "runs": runs,
            }
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = figures["retained_30d"]["median_to_serving_s"]
    plus_s = figures["retained_30d_plus_60d_older"]["median_to_serving_s"]
    result = {
        "benchmark": "monitor_restart",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
            **disturbance.stop(),  # the cores other processes kept busy meanwhile
        },
        "load": {
            "predictions_per_hour": PER_HOUR,
            "retained_days": RETAINED_DAYS,
            "retained_predictions": n_retained,
            "older_days": args.older_days,
            "older_predictions": n_older,
            "outcomes": "every prediction, 24 h after it",
            "features": 45,
            "ingest_batch_records": BATCH,
        },
        "settings": {
            "FINPREDICT_MONITOR_RETENTION_DAYS": RETAINED_DAYS,
            "FINPREDICT_MONITOR_EVALUATE_INTERVAL_S": 0,
            "registry": "none (the profile cached)",
        },
        "method": {
            "to_serving_s": "wall clock from spawning python -m finpredict.monitor to gRPC health SERVING "
            "(includes interpreter start-up and imports: see the empty scenario)",
            "recovery_s": "finpredict_monitor_recovery_seconds: the state rebuild alone "
            "(snapshot + logs after it)",
            "repeats": args.repeats,
            "each_run": "from a fresh copy of the scenario's data folder",
            "data_generation_s": round(generation_s, 1),
        },
        "figures": figures,
        "targets": {"restart_with_30_days_max_s": TARGET_S},
        "met": {
            "restart_with_30_days_under_target": base < TARGET_S,
            "older_data_does_not_slow_the_restart": plus_s <= base * 1.25 + 0.5,
        },
        "total_benchmark_seconds": round(time.perf_counter() - began, 1),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("figures", "met")}, indent=1, default=str)[:4000])
    return 0 if all(result["met"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
