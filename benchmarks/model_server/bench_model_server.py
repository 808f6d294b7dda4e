"""Model-server benchmark: latency (p50/p99) and throughput at fixed request rates.

Four ways to score the same XGBoost model (CREDIT_SCHEMA, shared feature code, nthread=1), in
one run on this machine, with the same open-loop load generator (latency counted from each
request's scheduled send time, so a saturated server cannot hide its queue):

1. ``in_process``   - the model call alone (features + XGBoost), no RPC;
2. ``plain_grpc``   - a plain single-process ``grpc.aio`` server running the same scoring code;
3. ``serve_nobatch`` - Ray Serve gRPC ingress, the shipped deployment with batching off;
4. ``serve_batch``   - Ray Serve gRPC ingress, the shipped deployment (``@serve.batch``).

Both Serve apps are copies of the packaged ``serve_config.yaml`` as it ships (replicas, CPUs,
batch size and wait), deployed by ``python -m finpredict.model_server`` on a ``ray start --head``
with Ray's defaults, and load the model from a real registry. Each repeat sweeps the rates upwards
with the four ways interleaved at each rate (a way leaves the repeat once it saturates). A rate
counts as sustained for a way only if it and every lower rate met the SLO (no errors, achieved
>= 95% of the target, p99 <= 50 ms) in every repeat. Writes ``benchmarks/results/model_server.json``
with the run's date, load average, the cores other processes kept busy and the exact settings.

    python -m benchmarks.model_server.bench_model_server [--rates 25,50,100] [--duration 4] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import grpc

from benchmarks.benchkit import (
    Call,
    Disturbance,
    bench_model,
    call_until_ready,
    load_average,
    machine_info,
    median,
    open_loop,
    plain_server_port,
    ray_env,
    run_facts,
    saturated,
    serve_config,
    start_model_server,
    start_plain_server,
    start_registry,
    stop_process,
    utc_now,
    warm_up,
)
from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.features import CREDIT_SCHEMA
from finpredict.model_server.scoring import row_records
from finpredict.modelio import load_model_dir
from finpredict.testkit.models import synthetic_records
from finpredict.testkit.serving import READER_TOKEN, TOKENS, Registry, ray_cluster, to_rows

ROOT = Path(__file__).resolve().parents[2]
P99_GATE_MS = 50.0
WAYS = ("in_process", "plain_grpc", "serve_nobatch", "serve_batch")


def meets_slo(row: Mapping[str, Any]) -> bool:
    return bool(
        row["errors"] == 0
        and row["achieved_rps"] >= 0.95 * row["target_rps"]
        and row["p99_ms"] <= P99_GATE_MS
    )


async def sweeps(
    calls: Mapping[str, Call], rates: Sequence[float], duration: float, repeats: int
) -> dict[str, list[list[dict[str, Any]]]]:
    """``repeats`` upward sweeps; at each rate every way still unsaturated in that repeat runs once,
    in turn (A, B, C, D at 25, then at 50, ...). Per way, one list of rows per repeat."""
    for call in calls.values():
        await warm_up(call)
    out: dict[str, list[list[dict[str, Any]]]] = {name: [] for name in calls}
    for rep in range(repeats):
        live = set(calls)
        for name in calls:
            out[name].append([])
        for rate in rates:
            for name, call in calls.items():
                if name not in live:
                    continue
                row = await open_loop(call, rate, duration)
                row["load_1m"] = load_average()[0]
                out[name][rep].append(row)
                print(f"  #{rep + 1} {name:<14} {rate:>6.0f} rps -> {row}", flush=True)
                if saturated(row):
                    live.discard(name)  # higher rates only queue
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fp-bench-ms-"))
    load_before = load_average()
    date = utc_now()
    disturbance = Disturbance()
    disturbance.start()
    print("training the benchmark model (CREDIT_SCHEMA)...", flush=True)
    trained = bench_model(args.trees, model_dir=tmp / "model")
    model = load_model_dir(tmp / "model")
    records = synthetic_records(CREDIT_SCHEMA, 256, seed=2)
    batches = [records[i : i + args.rows] for i in range(0, len(records) - args.rows + 1, args.rows)]
    request_rows = [to_rows(b) for b in batches]
    counter = {"i": 0}

    async def in_process() -> None:
        """The model call alone (features from the request rows + XGBoost), in this process."""
        i = counter["i"] = (counter["i"] + 1) % len(request_rows)
        x = model.matrix(row_records(request_rows[i], model.schema), check=False)
        model.predict(x)

    registry_proc = start_registry(tmp / "registry", TOKENS)
    registry = Registry(registry_proc)
    registry.create_model("bench")
    version = registry.register("bench", trained)
    plain = None
    try:
        port_file = tmp / "plain.port"
        plain = start_plain_server(tmp / "model", port_file)
        plain_port = plain_server_port(plain, port_file)
        with ray_cluster({"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": READER_TOKEN}, num_cpus=2) as cluster:
            config_file = tmp / "serve_config.yaml"
            apps = {"ms-batch": True, "ms-nobatch": False}
            config = serve_config(config_file, registry.target, apps)
            server, serve_port = start_model_server(tmp / "ms", cluster.address, config_file, "ms-batch")
            try:
                targets = {
                    "plain_grpc": (f"127.0.0.1:{plain_port}", None, 1),
                    "serve_nobatch": (f"127.0.0.1:{serve_port}", "ms-nobatch", version),
                    "serve_batch": (f"127.0.0.1:{serve_port}", "ms-batch", version),
                }
                channels = {name: grpc.aio.insecure_channel(t[0]) for name, t in targets.items()}
                calls: dict[str, Call] = {"in_process": in_process}
                for name, (_, app, ver) in targets.items():
                    calls[name] = predictor(channels[name], app, ver, request_rows)
                    await call_until_ready(calls[name])  # the first Serve call loads the model
                results: dict[str, Any] = await sweeps(calls, rates, args.duration, args.repeats)
                for channel in channels.values():
                    await channel.close(None)
            finally:
                server.stop(timeout=60)
    finally:
        if plain is not None:
            stop_process(plain)
        registry.close()
        registry_proc.stop()
    results["run"] = {
        **run_facts(load_before, disturbance.stop()),
        "date": date,
        "settings": {
            "rows_per_request": args.rows,
            "trees": args.trees,
            "rates": rates,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "ray": "ray start --head --num-cpus=2 with Ray's defaults (as the RayService)",
            "ray_env": ray_env(),
            "serve_config": config,
            "latency": "open loop, from each request's scheduled send time",
            "sustained": f"no errors, achieved >= 95% of target, p99 <= {P99_GATE_MS} ms, at the rate "
            "and every lower rate, in every repeat",
        },
    }
    return results


def predictor(channel: grpc.aio.Channel, app: str | None, version: int, request_rows: list[Any]) -> Call:
    """One-row ``Predict`` calls round-robin over ``request_rows`` (to Serve: routed to ``app``)."""
    stub = pb_grpc.ModelServerServiceStub(channel)
    md: tuple[tuple[str, str], ...] = ()
    if app:
        md = (("application", app), ("multiplexed_model_id", f"bench:{version}"))
    ref = types_pb2.ModelRef(name="bench", version=version)
    reqs = [pb.PredictRequest(model=ref, rows=r) for r in request_rows]
    idx = {"i": 0}

    async def call() -> None:
        idx["i"] = (idx["i"] + 1) % len(reqs)
        await stub.Predict(reqs[idx["i"]], metadata=md, timeout=10)

    return call


def max_sustained(repeats: Sequence[Sequence[Mapping[str, Any]]], rates: Sequence[float]) -> float:
    """The highest rate that, with every lower rate, met the SLO in every repeat (0: none)."""
    best = 0.0
    for rate in sorted(rates):
        rows = [next((r for r in rep if r["target_rps"] == rate), None) for rep in repeats]
        if not repeats or any(r is None or not meets_slo(r) for r in rows):
            break
        best = rate
    return best


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    run = results.get("run", {})
    settings = run.get("settings", {})
    rates = [float(r) for r in settings.get("rates", [])]
    ways = {name: results[name] for name in WAYS if name in results}
    best = {name: max_sustained(reps, rates) for name, reps in ways.items()}
    plain = best.get("plain_grpc", 0.0)
    ratios = {
        f"{n}_vs_plain": (round(best[n] / plain, 3) if plain else None)
        for n in ("serve_nobatch", "serve_batch")
        if n in best
    }
    # the most each one answered per second whatever the latency (saturation throughput), median
    # over the repeats
    peak = {
        name: median(max((r["achieved_rps"] for r in rep), default=0.0) for rep in reps)
        for name, reps in ways.items()
    }
    peak_plain = peak.get("plain_grpc", 0.0)
    return {
        "benchmark": "model_server",
        "date": run.get("date"),
        "machine": {
            **machine_info(),
            **{k: run.get(k) for k in ("load_average_before", "load_average_after")},
        },
        "disturbance": {
            k: run[k]
            for k in ("this_run_cores_busy", "other_processes_cores_busy", "measurement_fault")
            if k in run
        },
        "settings": settings,  # as measured (a --summarise-only run keeps them)
        "results": results,
        "max_sustained_rps": best,
        "ratios": ratios,
        "peak_achieved_rps_median": peak,
        "peak_ratios": {
            f"{n}_vs_plain": (round(peak[n] / peak_plain, 3) if peak_plain else None)
            for n in ("serve_nobatch", "serve_batch")
            if n in peak
        },
        "targets": {
            "limits": {"p99_ms_max": P99_GATE_MS, "serve_batch_sustained_vs_plain_min": 0.5},
            "serve_batch_sustains_a_rate": best.get("serve_batch", 0.0) > 0,
            "serve_batch_sustained_ge_50pct_of_plain": bool(
                plain and best.get("serve_batch", 0.0) >= 0.5 * plain
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="25,50,100,150,200,300")
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/model_server.json")
    parser.add_argument(
        "--summarise-only", action="store_true", help="recompute the summary of the results in --out"
    )
    args, _ = parser.parse_known_args()
    if args.repeats < 3:
        parser.error("--repeats: at least 3 (a rate is sustained only if it holds in each of >= 3 repeats)")
    results = json.loads(args.out.read_text())["results"] if args.summarise_only else asyncio.run(run(args))
    summary = summarise(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\nscenario        max sustained rps (p99 <= 50 ms in every repeat, at every lower rate too)")
    for name, rate in summary["max_sustained_rps"].items():
        print(f"  {name:<14} {rate:>8.0f}")
    print(f"peak achieved rps (median): {summary['peak_achieved_rps_median']}")
    print(f"ratios: {summary['ratios']}\ntargets: {summary['targets']}\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
