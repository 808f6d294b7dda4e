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

    python benchmarks/model_server/bench_model_server.py [--rates 50,100,200] [--duration 6] [--rows 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "services/model-server/tests"))

from serving_testkit import (  # noqa: E402
    READER_TOKEN,
    TOKENS,
    Registry,
    ray_cluster,
    to_rows,
)

from finpredict.api.common.v1 import types_pb2  # noqa: E402
from finpredict.api.serving.v1 import model_server_pb2 as pb  # noqa: E402
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc  # noqa: E402
from finpredict.common.testing import start_service, wait_for  # noqa: E402
from finpredict.features import CREDIT_SCHEMA  # noqa: E402
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG  # noqa: E402
from finpredict.model_server.scoring import row_records  # noqa: E402
from finpredict.modelio import load_model_dir, save_model  # noqa: E402
from finpredict.modelio.testing import synthetic_records, train_small_model  # noqa: E402

P99_GATE_MS = 50.0


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


async def open_loop(call: Callable[[], Awaitable[Any]], rate: float, duration: float) -> dict[str, Any]:
    """Sends ``rate`` requests per second for ``duration`` seconds, never waiting for answers."""
    loop = asyncio.get_running_loop()
    n = max(1, int(rate * duration))
    start = loop.time() + 0.05
    latencies: list[float] = []
    errors: list[str] = []

    async def one(t_sched: float) -> None:
        try:
            await call()
            latencies.append((loop.time() - t_sched) * 1000)
        except Exception as exc:
            errors.append(type(exc).__name__)

    tasks = []
    for i in range(n):
        t = start + i / rate
        delay = t - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(t)))
    await asyncio.gather(*tasks)
    elapsed = loop.time() - start
    return {
        "target_rps": rate,
        "achieved_rps": round(len(latencies) / elapsed, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p99_ms": round(percentile(latencies, 99), 2),
        "requests": n,
        "errors": len(errors),
    }


def sustained(row: dict[str, Any]) -> bool:
    return bool(
        row["errors"] == 0
        and row["achieved_rps"] >= 0.95 * row["target_rps"]
        and row["p99_ms"] <= P99_GATE_MS
    )


async def sweep(
    name: str, call: Callable[[], Awaitable[Any]], rates: list[float], duration: float
) -> list[Any]:
    for _ in range(30):  # warm-up
        await call()
    rows = []
    for rate in rates:
        row = await open_loop(call, rate, duration)
        rows.append(row)
        print(f"  {name:<14} {rate:>6.0f} rps -> {row}", flush=True)
        if row["achieved_rps"] < 0.8 * rate or row["p99_ms"] > 1000:
            break  # saturated: higher rates only queue
    return rows


def start_plain_server(model_dir: Path, port_file: Path) -> subprocess.Popen[bytes]:
    script = Path(__file__).with_name("plain_server.py")
    return subprocess.Popen([sys.executable, str(script), str(model_dir), str(port_file)])


def bench_config(path: Path, registry_target: str, max_batch: int, wait_s: float) -> Path:
    base: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    template = base["applications"][0]
    apps = []
    for app_name, batching in (("ms-batch", True), ("ms-nobatch", False)):
        app = json.loads(json.dumps(template))
        app["name"] = app_name
        app["route_prefix"] = f"/{app_name}"
        app["args"].update(registry_target=registry_target, batching=batching, watch_aliases=[])
        dep = app["deployments"][0]
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = 1
        dep["ray_actor_options"] = {"num_cpus": 0.5}
        dep["user_config"] = {"max_batch_size": max_batch, "batch_wait_timeout_s": wait_s}
        apps.append(app)
    base["applications"] = apps
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


async def run(args: argparse.Namespace) -> dict[str, Any]:
    rates = [float(r) for r in args.rates.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="fp-bench-ms-"))
    print("training the benchmark model (CREDIT_SCHEMA)...", flush=True)
    trained = train_small_model(CREDIT_SCHEMA, n=3000, seed=1, rounds=args.trees, depth=5)
    save_model(trained.booster, tmp / "model", CREDIT_SCHEMA, {"best_iteration": args.trees - 1})
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

    registry_proc = start_service(
        "registry",
        tmp / "registry",
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(tmp / "registry/data"),
            "FINPREDICT_REGISTRY_TOKENS": TOKENS,
            "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
        },
    )
    registry = Registry(registry_proc)
    registry.create_model("bench")
    version = registry.register("bench", trained)
    plain = None
    ray_env = {"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": READER_TOKEN, **dict(args.ray_env)}
    try:
        port_file = tmp / "plain.port"
        plain = start_plain_server(tmp / "model", port_file)
        plain_port = int(wait_for(lambda: port_file.exists() and port_file.read_text(), 60, "plain server"))

        with ray_cluster(ray_env, num_cpus=2) as cluster:
            config = bench_config(tmp / "serve_config.yaml", registry.target, args.max_batch, args.batch_wait)
            server = start_service(
                "model-server",
                tmp / "ms",
                env={
                    "FINPREDICT_MODEL_SERVER_RAY_ADDRESS": cluster.address,
                    "FINPREDICT_MODEL_SERVER_SERVE_CONFIG": str(config),
                    "FINPREDICT_MODEL_SERVER_APP_NAME": "ms-batch",
                    "FINPREDICT_MODEL_SERVER_SERVE_GRPC_PORT": "0",
                    "FINPREDICT_MODEL_SERVER_SERVE_HTTP_PORT": "0",
                    "FINPREDICT_MODEL_SERVER_LOG_FORMAT": "text",
                    "RAY_AUTH_MODE": "disabled",
                },
                timeout=300,
            )
            try:
                ready = tmp / "ms" / "model-server.ready.json"
                serve_port = int(
                    wait_for(lambda: json.loads(ready.read_text()).get("serve_grpc_port"), 60, "serve port")
                )
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
                        deadline = time.monotonic() + 180
                        while True:
                            try:
                                await call()
                                break
                            except grpc.aio.AioRpcError:
                                if time.monotonic() > deadline:
                                    raise
                                await asyncio.sleep(0.5)
                        print(f"{name}:", flush=True)
                        results[name] = await sweep(name, call, rates, args.duration)
            finally:
                server.stop(timeout=60)
    finally:
        if plain is not None:
            plain.terminate()
            plain.wait(timeout=20)
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
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
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
    args.ray_env = (("RAY_SERVE_THROUGHPUT_OPTIMIZED", "1"), ("RAY_SERVE_ENABLE_HA_PROXY", "1"))
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
