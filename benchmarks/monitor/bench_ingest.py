"""Benchmark: how many prediction records a monitor acknowledges per second, by concurrent streams.

Load: the gateway's way of logging, from outside: each stream sends ``IngestPredictions`` calls of
one 500-record batch (the gateway's ``log_batch_records``) back to back, each waiting for its
answer; the records are the demo's credit stream (45 features, realistic values), each batch with
its own request ids (so every record is new and durably stored: nothing counts as a duplicate).
The client sends pre-encoded bytes (a template batch whose request ids are rewritten per batch),
so its own CPU stays small beside the monitor's on a small machine.

Scenarios (a fresh monitor and data folder for each run; the runs of the stream counts
interleaved, ``--repeats`` times, default 3): 1 stream (the baseline: nothing to share a commit
with) and 4 concurrent streams, ``--records`` each (default 1,000,000).

Measured per run: acknowledged records per second (from the first send to the last answer), the
RPC latency p50 / p99, the rate of the first and the last 100,000 records (a decline over the run
shows there), the monitor's CPU time per record, the other processes' CPU (cores busy on
average besides the monitor and this client: the disturbance), and end-to-end freshness: a probe
record (model version 2) sent every 0.5 s among the load, and the time until ``GetDriftReport``
shows it in its hourly window (polled every 25 ms). Medians over the repeats are the figures.

Writes ``benchmarks/results/monitor_ingest.json``.
Run: ``uv run --locked python -m benchmarks.monitor.bench_ingest [--records N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc

from benchmarks.benchkit import (
    REPO,
    cpu_seconds,
    load_average,
    machine_busy_seconds,
    machine_info,
    median,
    percentile,
)
from finpredict.api.common.v1 import types_pb2
from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.common.auth import bearer_metadata
from finpredict.demo import replay as rp
from finpredict.testkit.monitor import ADMIN_TOKEN, MODEL, WRITER_TOKEN, monitor_env
from finpredict.testkit.process import ServiceProcess, start_service

OUT = REPO / "benchmarks" / "results" / "monitor_ingest.json"
BATCH = 500
METHOD = "/finpredict.monitor.v1.MonitorService/IngestPredictions"
REPORT = "/finpredict.monitor.v1.MonitorService/GetDriftReport"
TAG = b"B0000000"  # rewritten per batch: every request id is new
PROBE_EVERY_S = 0.5
POLL_S = 0.025
TARGETS = {"records_per_s_4_streams_min": 30_000, "p99_ms_max": 500.0, "last_vs_first_100k_min": 0.9}


def template(now: datetime) -> bytes:
    """One encoded 500-record batch of the demo stream, times spread over the last 10 minutes."""
    frame = rp.generate(rp.Scenario(days=1, per_hour=BATCH // 24 + 1, seed=5)).head(BATCH)
    records = rp.to_records(frame, MODEL, 1)
    for i, r in enumerate(records):
        r.request_id = f"{TAG.decode()}-{i:05d}"
        r.entity_id = f"ent-{i:05d}"
        r.time.FromDatetime(now - timedelta(minutes=10) + timedelta(seconds=i))
    return pb.IngestPredictionsRequest(records=records).SerializeToString()


def probe(i: int, now: datetime) -> bytes:
    record = pb.PredictionRecord(
        request_id=f"probe-{i:08d}",
        model=types_pb2.ModelRef(name=MODEL, version=2),
        score=0.5,
        threshold=0.2,
        variant="stable",
    )
    record.time.FromDatetime(now)
    return pb.IngestPredictionsRequest(records=[record]).SerializeToString()


async def _run(target: str, streams: int, records: int, blob: bytes, pid: int) -> dict[str, Any]:
    write_md = bearer_metadata(WRITER_TOKEN)
    read_md = bearer_metadata(ADMIN_TOKEN)
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]
    channels = [grpc.aio.insecure_channel(target, options=options) for _ in range(streams + 1)]
    ingest = [
        ch.stream_unary(
            METHOD,
            request_serializer=lambda b: b,
            response_deserializer=pb.IngestPredictionsResponse.FromString,
        )
        for ch in channels
    ]
    report = channels[-1].unary_unary(
        REPORT,
        request_serializer=pb.GetDriftReportRequest.SerializeToString,
        response_deserializer=pb.GetDriftReportResponse.FromString,
    )
    batches = records // BATCH
    next_batch = 0
    latencies: list[float] = []
    acks: list[tuple[float, int]] = []  # (time acknowledged, records)
    errors: list[str] = []
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    async def stream(k: int) -> None:
        nonlocal next_batch
        while next_batch < batches:
            n = next_batch
            next_batch += 1
            data = blob.replace(TAG, b"B%07d" % n)
            t0 = loop.time()
            try:
                resp = await ingest[k](iter([data]), metadata=write_md, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors.append(exc.code().name)
                continue
            t1 = loop.time()
            latencies.append((t1 - t0) * 1000)
            acks.append((t1, resp.accepted))
            if resp.accepted != BATCH:
                errors.append(f"accepted {resp.accepted} of {BATCH}: {resp.first_rejection}")

    freshness: list[float] = []

    async def probes() -> None:
        sent = 0
        while not done.is_set():
            t0 = loop.time()
            await ingest[0](iter([probe(sent, datetime.now(UTC))]), metadata=write_md, timeout=30)
            sent += 1
            while not done.is_set():
                req = pb.GetDriftReportRequest(
                    model=types_pb2.ModelRef(name=MODEL, version=2), window=pb.WINDOW_SIZE_HOURLY
                )
                resp = await report(req, metadata=read_md, timeout=30)
                if sum(w.count for w in resp.windows) >= sent:
                    freshness.append((loop.time() - t0) * 1000)
                    break
                await asyncio.sleep(POLL_S)
            await asyncio.sleep(max(0.0, PROBE_EVERY_S - (loop.time() - t0)))

    cpu0, busy0, client0 = cpu_seconds(pid), machine_busy_seconds(), time.process_time()
    start = loop.time()
    prober = asyncio.create_task(probes())
    await asyncio.gather(*(stream(k) for k in range(streams)))
    elapsed = loop.time() - start
    done.set()
    await prober
    cpu, busy, client = cpu_seconds(pid) - cpu0, machine_busy_seconds() - busy0, time.process_time() - client0
    for ch in channels:
        await ch.close()
    acks.sort()
    acked = sum(n for _, n in acks)

    def rate(part: list[tuple[float, int]], since: float) -> float:
        n = sum(k for _, k in part)
        return round(n / (part[-1][0] - since), 0) if part and part[-1][0] > since else float("nan")

    k = 100_000 // BATCH
    first, last = acks[:k], acks[-k:]
    first_rate = rate(first, start)
    last_rate = rate(last, acks[-k - 1][0]) if len(acks) > k else float("nan")
    return {
        "streams": streams,
        "records": acked,
        "seconds": round(elapsed, 2),
        "records_per_s": round(acked / elapsed, 0),
        "p50_ms": round(percentile(latencies, 50), 1),
        "p99_ms": round(percentile(latencies, 99), 1),
        "max_ms": round(max(latencies), 1) if latencies else float("nan"),
        "first_100k_per_s": first_rate,
        "last_100k_per_s": last_rate,
        "last_vs_first_100k": round(last_rate / first_rate, 3) if first_rate else float("nan"),
        "monitor_cpu_us_per_record": round(cpu / acked * 1e6, 1) if acked else float("nan"),
        "others_cpu_cores": round(max(0.0, busy - cpu - client) / elapsed, 2),
        "freshness_ms": {
            "probes": len(freshness),
            "p50": round(percentile(freshness, 50), 1),
            "p99": round(percentile(freshness, 99), 1),
        },
        "errors": len(errors),
        **({"error_kinds": sorted(set(errors))[:5]} if errors else {}),
    }


def _one(root: Path, streams: int, records: int, run: int) -> dict[str, Any]:
    work = root / f"run-{run}-{streams}"
    work.mkdir()
    (work / "profiles").symlink_to(root / "profiles", target_is_directory=True)
    env = monitor_env(work, FINPREDICT_MONITOR_LOG_FORMAT="json")
    proc: ServiceProcess = start_service("monitor", work, env=env, timeout=120)
    try:
        blob = template(datetime.now(UTC))
        return asyncio.run(_run(proc.target, streams, records, blob, proc.proc.pid))
    finally:
        proc.stop(timeout=60)
        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--records", type=int, default=1_000_000, help="records per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--streams", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    load_before = load_average()
    root = Path(tempfile.mkdtemp(prefix="bench-monitor-ingest-"))
    runs: dict[int, list[dict[str, Any]]] = {s: [] for s in args.streams}
    try:
        (root / "profiles" / MODEL).mkdir(parents=True)
        profile = bytes(rp.reference_profile().to_bytes())
        for version in (1, 2):
            (root / "profiles" / MODEL / f"{version}.bin").write_bytes(profile)
        for i in range(args.repeats):
            for streams in args.streams:  # interleaved: each repeat runs every stream count
                row = _one(root, streams, args.records, i)
                runs[streams].append(row)
                print(f"  run {i + 1}, {streams} stream(s): {row}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    figures: dict[str, Any] = {}
    for streams, rows in runs.items():
        figures[f"{streams}_streams"] = {
            key: median(r[key] for r in rows)
            for key in (
                "records_per_s",
                "p50_ms",
                "p99_ms",
                "first_100k_per_s",
                "last_100k_per_s",
                "last_vs_first_100k",
                "monitor_cpu_us_per_record",
                "others_cpu_cores",
            )
        } | {
            "freshness_p50_ms": median(r["freshness_ms"]["p50"] for r in rows),
            "freshness_p99_ms": median(r["freshness_ms"]["p99"] for r in rows),
            "errors": sum(r["errors"] for r in rows),
            "runs": rows,
        }
    four = figures.get("4_streams")
    met = (
        {
            "records_per_s": four["records_per_s"] >= TARGETS["records_per_s_4_streams_min"],
            "p99_ms": four["p99_ms"] < TARGETS["p99_ms_max"],
            "no_decline": four["last_vs_first_100k"] >= TARGETS["last_vs_first_100k_min"],
        }
        if four
        else {}
    )
    result = {
        "benchmark": "monitor_ingest",
        "date_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {
            **machine_info(),
            "load_average_before": load_before,
            "load_average_after": load_average(),
        },
        "settings": {
            "records_per_run": args.records,
            "batch_records": BATCH,
            "streams": args.streams,
            "repeats": args.repeats,
            "features_per_record": 45,
            "client": "pre-encoded batches (request ids rewritten per batch), one channel per stream",
            "monitor": "python -m finpredict.monitor, defaults (fsync per commit), auth on, no registry, "
            "profiles from a folder, rules evaluated after each commit",
            "probe": f"one record (version 2) every {PROBE_EVERY_S} s; GetDriftReport every {POLL_S} s",
        },
        "targets": TARGETS,
        "figures": figures,
        "met": met,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "figures"}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
