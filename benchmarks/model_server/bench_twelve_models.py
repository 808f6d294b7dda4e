"""Twelve models benchmark: twelve registered models, each with its own `production` version,
scored at once through one gateway and one model-server deployment (Serve's model multiplexing,
the packaged ``max_models_per_replica``), against the same load on one model.

The stack is the gateway's test stack (``finpredict.testkit.gateway.running_stack``): real
processes on loopback, a registry, one Ray (``ray start --head``, 2 CPUs) with the model server
(two replicas, fixed), a monitor and a gateway. Each model is a 100-tree depth-3 XGBoost model on
the test schema (its own seed).

1. ``memory``  - the replicas' memory (RSS and USS, summed over the replica processes, from
                 ``/proc/<pid>/smaps_rollup``) with no version loaded, then after each model's
                 first call (which loads its `production` version on one replica): the growth
                 per loaded version (the whole growth over the twelve, and the median and range
                 of the single steps after the first, which also warms the request path);
2. ``load``    - closed loop, ``--concurrency`` workers each sending ScoreBatch calls of
                 ``--batch`` applications as fast as they are answered, for ``--duration`` s:
                 ``twelve`` goes round the twelve models, ``one`` sends every call to one model.
                 Repeated ``--repeats`` times, interleaved (twelve, one, twelve, one, ...);
                 per-model p50/p99 (ms, from each call's send) over all repeats, and each repeat's
                 throughput and pooled p50/p99.

Writes ``benchmarks/results/twelve_models.json``.

    python -m benchmarks.model_server.bench_twelve_models [--duration 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import grpc
import yaml  # type: ignore[import-untyped]

from benchmarks.benchkit import error_kind, load_average, machine_info, utc_now
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG
from finpredict.testkit.gateway import CLIENT, Stack, applications, running_stack, train
from finpredict.testkit.scaling import add_production_model, latency_ms, process_memory
from finpredict.testkit.serving import RayCluster, ServeOptions

ROOT = Path(__file__).resolve().parents[2]
MODELS = 12
TREES = 100


def replica_memory(ray: RayCluster) -> dict[str, Any]:
    """RSS and USS (MiB) summed over the replica processes, and per replica."""
    per = {pid: process_memory(pid) for pid in ray.replica_pids()}
    return {
        "replicas": len(per),
        "rss_mib": round(sum(m.rss_mib for m in per.values()), 1),
        "uss_mib": round(sum(m.uss_mib for m in per.values()), 1),
        "per_replica_uss_mib": sorted(m.uss_mib for m in per.values()),
    }


def measure_memory(stack: Stack, models: list[str]) -> dict[str, Any]:
    """Loads each model's `production` version by its first call, the memory read after each."""
    client = stack.client
    before = replica_memory(stack.ray)
    steps = []
    for model in models:
        client.score_batch(model, [uuid.uuid4().hex], timeout=120)
        time.sleep(1.0)  # let the load's transient buffers go before reading
        steps.append(replica_memory(stack.ray))
    uss = [before["uss_mib"]] + [s["uss_mib"] for s in steps]
    rss = [before["rss_mib"]] + [s["rss_mib"] for s in steps]
    uss_steps = [b - a for a, b in itertools.pairwise(uss)]
    rss_steps = [b - a for a, b in itertools.pairwise(rss)]
    return {
        "before_any_version": before,
        "after_each_first_call": [s["uss_mib"] for s in steps],
        "after_all": steps[-1],
        "first_version_uss_mib": round(uss_steps[0], 1),
        "per_version_uss_mib_mean": round((uss[-1] - uss[0]) / len(models), 3),
        "per_version_uss_mib": round(statistics.median(uss_steps[1:]), 2),
        "per_version_rss_mib": round(statistics.median(rss_steps[1:]), 2),
        "per_version_uss_mib_range": [round(min(uss_steps[1:]), 2), round(max(uss_steps[1:]), 2)],
    }


async def closed_loop_by_model(
    target: str, models: list[str], concurrency: int, duration: float, batch: int
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """``concurrency`` workers round the ``models``; the latencies (s) of each model and a summary."""
    latencies: dict[str, list[float]] = {m: [] for m in models}
    errors: list[str] = []
    async with grpc.aio.insecure_channel(target) as channel:
        stub = spb_grpc.ScoringServiceStub(channel)
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + duration

        async def worker(i: int) -> None:
            offset = i * 997
            for model in itertools.islice(itertools.cycle(models), i, None):
                if loop.time() >= stop:
                    return
                ids = [uuid.uuid4().hex for _ in range(batch)]
                req = spb.ScoreBatchRequest(model=model, applications=applications(ids, offset))
                offset += batch
                t0 = loop.time()
                try:
                    await stub.ScoreBatch(req, metadata=CLIENT, timeout=30)
                    latencies[model].append(loop.time() - t0)
                except grpc.aio.AioRpcError as exc:
                    errors.append(error_kind(exc))

        await asyncio.gather(*(worker(i) for i in range(concurrency)))
        elapsed = loop.time() - start
    pooled = [v for vs in latencies.values() for v in vs]
    return latencies, {
        "calls_per_s": round(len(pooled) / elapsed, 1),
        **latency_ms(pooled),
        "errors": len(errors),
        "load_average": load_average(),
    }


async def run(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    first = "credit-00"
    trained = train(seed=1, rounds=TREES)
    artifact_kib = [len(trained.raw) / 1024]
    with running_stack(tmp, first, {"v1": trained}, serve=ServeOptions(replicas=args.replicas)) as stack:
        models = [first]
        for i in range(1, MODELS):
            models.append(f"credit-{i:02d}")
            trained = train(seed=10 + i, rounds=TREES)
            artifact_kib.append(len(trained.raw) / 1024)
            add_production_model(stack.registry, models[-1], trained)
        print("memory ...", flush=True)
        memory = measure_memory(stack, models)
        print(f"  {memory}", flush=True)
        arms = {"twelve": models, "one": [first]}
        # warm-up: every model answered on every replica that will serve it
        await closed_loop_by_model(stack.gateway.target, models, args.concurrency, 3.0, args.batch)
        per_model: dict[str, dict[str, list[float]]] = {a: {} for a in arms}
        repeats: dict[str, list[dict[str, Any]]] = {a: [] for a in arms}
        for r in range(args.repeats):
            for arm, arm_models in arms.items():
                lat, summary = await closed_loop_by_model(
                    stack.gateway.target, arm_models, args.concurrency, args.duration, args.batch
                )
                for m, vs in lat.items():
                    per_model[arm].setdefault(m, []).extend(vs)
                repeats[arm].append(summary)
                print(f"  repeat {r + 1} {arm:<6} {summary}", flush=True)
        memory["after_load"] = replica_memory(stack.ray)
    twelve = {m: latency_ms(vs) for m, vs in per_model["twelve"].items()}
    p50s = [f["p50_ms"] for f in twelve.values()]
    memory["artifact_kib_median"] = round(statistics.median(artifact_kib), 1)
    return {
        "memory": memory,
        "per_model": twelve,
        "one_model": latency_ms(per_model["one"][first]),
        "repeats": repeats,
        "spread": {
            "per_model_p50_ms_min": min(p50s),
            "per_model_p50_ms_max": max(p50s),
            "twelve_vs_one_p50": round(
                statistics.median(x["p50_ms"] for x in repeats["twelve"])
                / statistics.median(x["p50_ms"] for x in repeats["one"]),
                3,
            ),
        },
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--batch", type=int, default=10)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/twelve_models.json")
    args, _ = parser.parse_known_args()
    config: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="bench-twelve-") as tmp:
        results = asyncio.run(run(args, Path(tmp)))
    out = {
        "benchmark": "twelve_models",
        "date": utc_now(),
        "machine": machine_info(),
        "load_average_before": load_before,
        "settings": {
            "models": MODELS,
            "trees": TREES,
            "depth": 3,
            "replicas": args.replicas,
            "max_models_per_replica": config["applications"][0]["args"]["max_models_per_replica"],
            "concurrency": args.concurrency,
            "applications_per_call": args.batch,
            "duration_s": args.duration,
            "repeats": args.repeats,
            "latency": "closed loop, from each call's send; per model over all repeats",
            "memory": "sum over replica processes, /proc/<pid>/smaps_rollup; USS = private clean + dirty",
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
