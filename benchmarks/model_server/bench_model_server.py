"""Model-server benchmark: latency (p50/p99) and throughput at fixed request rates.

Four ways to score the same XGBoost model (CREDIT_SCHEMA, shared feature code, nthread=1), in
one run on this machine, with the same open-loop load generator (latency counted from each
request's scheduled send time, so a saturated server cannot hide its queue):

1. ``in_process``   - the model call alone (features + XGBoost), no RPC;
2. ``plain_grpc``   - a plain single-process ``grpc.aio`` server running the same scoring code;
3. ``serve_nobatch`` - Ray Serve gRPC ingress, one replica, no batching;
4. ``serve_batch``   - Ray Serve gRPC ingress, one replica, ``@serve.batch``.

Both Serve apps are deployed by ``python -m finpredict.model_server`` from a Serve config and
load the model from a real registry. Writes ``benchmarks/results/model_server.json``.

    python -m benchmarks.model_server.bench_model_server [--rates 50,100,200] [--duration 6] [--rows 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import grpc

from benchmarks.benchkit import (
    SERVE_THROUGHPUT_ENV,
    bench_model,
    call_until_ready,
    machine_info,
    plain_server_port,
    serve_config,
    start_model_server,
    start_plain_server,
    start_registry,
    stop_process,
    sweep,
)
from finpredict.api.common.v1 import types_pb2
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.features import CREDIT_SCHEMA
from finpredict.model_server.scoring import row_records
from finpredict.modelio import load_model_dir
from finpredict.testkit.models import synthetic_records
from finpredict.testkit.serving import (
    READER_TOKEN,
    TOKENS,
    Registry,
    ray_cluster,
    to_rows,
)

ROOT = Path(__file__).resolve().parents[2]
P99_GATE_MS = 50.0


def sustained(row: dict[str, Any]) -> bool:
    return bool(
        row["errors"] == 0
        and row["achieved_rps"] >= 0.95 * row["target_rps"]
        and row["p99_ms"] <= P99_GATE_MS
    )


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fp-bench-ms-"))
    print("training the benchmark model (CREDIT_SCHEMA)...", flush=True)
    trained = bench_model(args.trees, model_dir=tmp / "model")
    model = load_model_dir(tmp / "model")
    records = synthetic_records(CREDIT_SCHEMA, 256, seed=2)
    batches = [records[i : i + args.rows] for i in range(0, len(records) - args.rows + 1, args.rows)]
    request_rows = [to_rows(b) for b in batches]
    results: dict[str, Any] = {}

    # 1. the model call alone (features from the request rows + XGBoost), in this process
    counter = {"i": 0}

    async def in_process() -> None:
        i = counter["i"] = (counter["i"] + 1) % len(request_rows)
        x = model.matrix(row_records(request_rows[i], model.schema), check=False)
        model.predict(x)

    print("in-process model call:", flush=True)
    results["in_process"] = await sweep("in_process", in_process, rates, args.duration)

    registry_proc = start_registry(tmp / "registry", TOKENS)
    registry = Registry(registry_proc)
    registry.create_model("bench")
    version = registry.register("bench", trained)
    plain = None
    ray_env = {"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": READER_TOKEN, **dict(args.ray_env)}
    try:
        port_file = tmp / "plain.port"
        plain = start_plain_server(tmp / "model", port_file)
        plain_port = plain_server_port(plain, port_file)

        with ray_cluster(ray_env, num_cpus=2) as cluster:
            config = serve_config(
                tmp / "serve_config.yaml",
                registry.target,
                {"ms-batch": True, "ms-nobatch": False},
                args.max_batch,
                args.batch_wait,
            )
            server, serve_port = start_model_server(tmp / "ms", cluster.address, config, "ms-batch")
            try:
                targets = {
                    "plain_grpc": (f"127.0.0.1:{plain_port}", None, 1),
                    "serve_nobatch": (f"127.0.0.1:{serve_port}", "ms-nobatch", version),
                    "serve_batch": (f"127.0.0.1:{serve_port}", "ms-batch", version),
                }
                for name, (target, app, ver) in targets.items():
                    async with grpc.aio.insecure_channel(target) as channel:
                        stub = pb_grpc.ModelServerServiceStub(channel)
                        md: tuple[tuple[str, str], ...] = ()
                        if app:
                            md = (("application", app), ("multiplexed_model_id", f"bench:{ver}"))
                        ref = types_pb2.ModelRef(name="bench", version=ver)
                        reqs = [pb.PredictRequest(model=ref, rows=r) for r in request_rows]
                        idx = {"i": 0}

                        async def call(
                            stub: Any = stub, md: Any = md, reqs: Any = reqs, idx: Any = idx
                        ) -> None:
                            idx["i"] = (idx["i"] + 1) % len(reqs)
                            await stub.Predict(reqs[idx["i"]], metadata=md, timeout=10)

                        # first call loads the model (Serve) - wait for it with a deadline
                        await call_until_ready(call)
                        print(f"{name}:", flush=True)
                        results[name] = await sweep(name, call, rates, args.duration)
            finally:
                server.stop(timeout=60)
    finally:
        if plain is not None:
            stop_process(plain)
        registry.close()
        registry_proc.stop()
    return results


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    best = {
        name: max((r["target_rps"] for r in rows if sustained(r)), default=0.0)
        for name, rows in results.items()
    }
    plain = best.get("plain_grpc", 0.0)
    ratios = {
        f"{n}_vs_plain": (round(best[n] / plain, 3) if plain else None)
        for n in ("serve_nobatch", "serve_batch")
        if n in best
    }
    serve_best = max(best.get("serve_batch", 0.0), best.get("serve_nobatch", 0.0))
    # the most each one answered per second, whatever the latency (saturation throughput)
    peak = {name: max((r["achieved_rps"] for r in rows), default=0.0) for name, rows in results.items()}
    peak_plain = peak.get("plain_grpc", 0.0)
    return {
        "benchmark": "model_server",
        "machine": machine_info(),
        "settings": {
            "rows_per_request": args.rows,
            "trees": args.trees,
            "duration_s": args.duration,
            "max_batch_size": args.max_batch,
            "batch_wait_timeout_s": args.batch_wait,
            "ray_env": dict(args.ray_env),
            "latency": "open loop, from each request's scheduled send time",
            "sustained": f"no errors, achieved >= 95% of target, p99 <= {P99_GATE_MS} ms",
        },
        "results": results,
        "max_sustained_rps": best,
        "ratios": ratios,
        "peak_achieved_rps": peak,
        "peak_ratios": {
            f"{n}_vs_plain": (round(peak[n] / peak_plain, 3) if peak_plain else None)
            for n in ("serve_nobatch", "serve_batch")
            if n in peak
        },
        "targets": {
            "serve_p99_le_50ms_at_max_rate": serve_best > 0,
            "serve_rate_ge_50pct_of_plain": bool(serve_best >= 0.5 * plain),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rates", default="10,25,50,100,150,200,300")
    parser.add_argument("--duration", type=float, default=6.0)
    parser.add_argument("--rows", type=int, default=1)
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--max-batch", type=int, default=16)
    parser.add_argument("--batch-wait", type=float, default=0.002)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/model_server.json")
    parser.add_argument(
        "--summarise-only", action="store_true", help="recompute the summary of the results in --out"
    )
    args, _ = parser.parse_known_args()
    args.ray_env = tuple(SERVE_THROUGHPUT_ENV.items())
    results = json.loads(args.out.read_text())["results"] if args.summarise_only else asyncio.run(run(args))
    summary = summarise(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print("\nscenario        max sustained rps (p99 <= 50 ms)")
    for name, rate in summary["max_sustained_rps"].items():
        print(f"  {name:<14} {rate:>8.0f}")
    print(f"peak achieved rps: {summary['peak_achieved_rps']}  peak ratios: {summary['peak_ratios']}")
    print(f"ratios: {summary['ratios']}\ntargets: {summary['targets']}\nwritten {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
