"""Gateway benchmark: client → gateway → model server (Ray Serve gRPC ingress), against a plain
single-process ``grpc.aio`` server scoring the same model in process, in one run on this machine.

Every call is one ``ScoringService.Score`` of one application (entity id and features from the
synthetic CREDIT_SCHEMA generator; a 100-tree depth-5 XGBoost model). The stack is real
processes on loopback with ephemeral ports: a registry, one Ray (``ray start --head``, Ray's
defaults) with the model server deployed by ``python -m finpredict.model_server`` from the
packaged ``serve_config.yaml`` as it ships (replicas, batching, Serve settings; the result file
records it),
a monitor receiving the prediction log, and two gateways (``python -m finpredict.gateway``, as
the gateway's integration tests start it): the default one (coalescing window 2 ms) and one with
``FINPREDICT_GATEWAY_BATCH_WINDOW_MS=0``. The baseline is ``plain_scoring_server.py``.

Scenarios, each repeated and interleaved (A, B, A, B, ...) so that the drift of a shared machine
falls on both sides; figures are medians over the repeats:

1. ``sequential``   - one request in flight (closed loop, 1 worker): p50/p99, gateway vs plain,
                      with two arms that say where the gateway's latency goes: the same rows sent
                      straight to Serve (``serve_direct``) and the gateway without its coalescing
                      window (``gateway_0ms``);
2. ``in_flight_16`` - closed loop with 16 workers: throughput and p99, gateway vs plain;
3. ``sweep``        - open loop at fixed rates (latency from each request's scheduled send time);
4. ``shadow``       - open loop at one rate, shadow mirroring (SetShadow to version 2, 100 %)
                      off / on / off / on ...: p50 on vs off, and the mirrored calls counted;
5. ``batch_window`` - 16 in flight, gateway window 2 ms vs 0 ms: throughput, p99, rows per call.

Each segment also records the CPU each process group spent per request (client, gateways, Serve
replica, the rest of Ray, monitor, plain server; from /proc) and how many cores the machine's
other processes kept busy meanwhile (``cores_busy.others``: how disturbed the figure is).
Writes ``benchmarks/results/gateway.json`` with the run's date, load average and settings
(``--summarise-only`` recomputes the summary and keeps them). ``--profile-only`` instead samples
the gateway, the Serve proxy and the replicas with py-spy while one request at a time goes
through the gateway, and writes ``benchmarks/results/gateway_profile.json`` (profile_path.py).

    python -m benchmarks.gateway.bench_gateway [--duration 4] [--repeats 3] [--rates 25,50,100,150]
    python -m benchmarks.gateway.bench_gateway --profile-only [--profile-s 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from benchmarks.benchkit import (
    Call,
    bench_model,
    call_until_ready,
    closed_loop,
    cpu_seconds,
    load_average,
    machine_busy_seconds,
    machine_info,
    median,
    open_loop,
    plain_server_port,
    ray_env,
    saturated,
    serve_config,
    start_model_server,
    start_plain_server,
    start_registry,
    stop_process,
    utc_now,
    warm_up,
)
from benchmarks.gateway import profile_path
from finpredict.api.common.v1 import types_pb2
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.api.rollout.v1 import rollout_pb2_grpc as rpb_grpc
from finpredict.api.scoring.v1 import scoring_pb2 as spb
from finpredict.api.scoring.v1 import scoring_pb2_grpc as spb_grpc
from finpredict.api.serving.v1 import model_server_pb2 as pb
from finpredict.api.serving.v1 import model_server_pb2_grpc as pb_grpc
from finpredict.features import CREDIT_SCHEMA
from finpredict.testkit.gateway import (
    CLIENT,
    OPERATOR,
    REGISTRY_TOKENS,
    REPLICA_TOKEN,
    features_of,
    monitor_process,
    start_gateway,
)
from finpredict.testkit.models import synthetic_records
from finpredict.testkit.process import ServiceProcess
from finpredict.testkit.scrape import metric_value
from finpredict.testkit.serving import Registry, ray_cluster

ROOT = Path(__file__).resolve().parents[2]
MODEL = "bench"  # the plain server answers as bench:1 too
APP = "model-server"  # the gateway's default Serve application
PLAIN_SCORING_SERVER = "benchmarks.gateway.plain_scoring_server"
TARGETS = {
    "sequential_p50_ratio_max": 2.0,
    "sequential_p99_ratio_max": 2.5,
    "in_flight_16_throughput_ratio_min": 1.0,
    "in_flight_16_gateway_p99_ms_max": 50.0,
    "sequential_cpu_ratio_max": 1.6,
    "shadow_p50_ratio_max": 1.10,
}


# ----- the load -----------------------------------------------------------------------------------


def score_requests(n: int, seed: int) -> list[spb.ScoreRequest]:
    """``n`` single-application Score requests: generated entity ids and CREDIT_SCHEMA features."""
    records = synthetic_records(CREDIT_SCHEMA, n, seed=seed)
    return [
        spb.ScoreRequest(
            model=MODEL,
            application=spb.Application(entity_id=f"cust-{seed}-{i:06d}", features=features_of(rec)),
        )
        for i, rec in enumerate(records)
    ]


def scorer(channel: grpc.aio.Channel, requests: Sequence[spb.ScoreRequest], bearer: Any = ()) -> Call:
    stub = spb_grpc.ScoringServiceStub(channel)
    cycle = itertools.cycle(requests)

    async def call() -> None:
        await stub.Score(next(cycle), metadata=bearer, timeout=10)

    return call


def predictor(channel: grpc.aio.Channel, requests: Sequence[spb.ScoreRequest], version: int) -> Call:
    """The same applications sent straight to the Serve gRPC ingress as one-row ``Predict`` calls,
    the way the gateway sends them (to see what the gateway itself adds)."""
    stub = pb_grpc.ModelServerServiceStub(channel)
    ref = types_pb2.ModelRef(name=MODEL, version=version)
    cycle = itertools.cycle(
        [
            pb.PredictRequest(model=ref, rows=[pb.FeatureRow(features=r.application.features)])
            for r in requests
        ]
    )
    metadata = (("application", APP), ("multiplexed_model_id", f"{MODEL}:{version}"))

    async def call() -> None:
        await stub.Predict(next(cycle), metadata=metadata, timeout=10)

    return call


# ----- where the CPU goes -------------------------------------------------------------------------


def ray_processes(marker: str) -> dict[int, bool]:
    """Pids of the processes of our own Ray (their environment carries the cluster's marker),
    each with whether it is a Serve replica."""
    return {pid: b"ServeReplica:" in cmd for pid, cmd in ray_commands(marker).items()}


def ray_commands(marker: str) -> dict[int, bytes]:
    """The command lines of the processes of our own Ray, by pid."""
    needle = f"FP_TEST_RAY={marker}".encode()
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if needle in (entry / "environ").read_bytes():
                out[int(entry.name)] = (entry / "cmdline").read_bytes()
        except OSError:
            continue
    return out


async def profile_sequential(s: Stack, arm: Arm, seconds: float, out_dir: Path) -> dict[str, Any]:
    """One in flight through the gateway for ``seconds`` while py-spy samples the gateway, the
    Serve proxy and each Serve replica (profile_path.py); the row's latency is inflated by the
    sampling and is not a figure."""
    pids = {"gateway": s.gateways["window_2ms"].proc.pid}
    for pid, cmd in ray_commands(s.meter.ray_marker).items():
        if b"ServeReplica:" in cmd:
            pids[f"serve_replica_{pid}"] = pid
        elif cmd.startswith(b"ray::ProxyActor"):
            pids["serve_proxy"] = pid
    procs = profile_path.record(pids, seconds, out_dir)
    row = await closed_loop(arm.call, 1, seconds)
    return {"requests": row["requests"], "processes": profile_path.collect(procs, out_dir, seconds + 30)}


@dataclass
class CpuMeter:
    """CPU seconds used by each part of the benchmark (client, gateways, Serve replica, the rest of
    Ray, monitor, plain server), to say per request where the time goes, and by everything else
    on this shared machine meanwhile (how disturbed a segment was)."""

    pids: dict[str, list[int]]
    ray_marker: str

    def snapshot(self) -> dict[str, float]:
        out = {name: sum(cpu_seconds(p) for p in pids) for name, pids in self.pids.items()}
        ray = ray_processes(self.ray_marker)
        out["serve_replica"] = sum(cpu_seconds(p) for p, replica in ray.items() if replica)
        out["ray_other"] = sum(cpu_seconds(p) for p, replica in ray.items() if not replica)
        return out | {"@machine": machine_busy_seconds(), "@wall": time.monotonic()}

    @staticmethod
    def usage(before: Mapping[str, float], after: Mapping[str, float], requests: int) -> dict[str, Any]:
        """CPU ms per request of each group, and the cores busy with this run and with the rest."""
        used = {k: after[k] - before.get(k, 0.0) for k in after if not k.startswith("@")}
        ours = sum(used.values())
        wall = max(after["@wall"] - before["@wall"], 1e-9)
        others = max(after["@machine"] - before["@machine"] - ours, 0.0)
        n = max(requests, 1)
        per_request = {k: round(v * 1000 / n, 2) for k, v in used.items() if v > 0.0005}
        return {
            "cpu_ms_per_request": per_request | {"total": round(ours * 1000 / n, 2)},
            "cores_busy": {"this_run": round(ours / wall, 2), "others": round(others / wall, 2)},
        }


@dataclass
class Arm:
    """One side of an interleaved comparison: what to call, and what to switch before a segment."""

    name: str
    call: Call
    before: Callable[[], Awaitable[None]] | None = None


Measure = Callable[[Arm], Awaitable[dict[str, Any]]]
PHASES = ("sequential", "in_flight_16", "sweep", "shadow", "batch_window")
T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.1f}s] {text}", flush=True)


def at_rate(rate: float, duration: float) -> Measure:
    """Open loop at ``rate`` for ``duration`` seconds."""
    return lambda arm: open_loop(arm.call, rate, duration)


def in_flight(n: int, duration: float) -> Measure:
    """Closed loop, ``n`` in flight, for ``duration`` seconds."""
    return lambda arm: closed_loop(arm.call, n, duration)


def timed(name: str, stop: Callable[..., object], *args: object) -> None:
    t = time.monotonic()
    stop(*args)
    say(f"stopped {name} in {time.monotonic() - t:.1f}s")


async def segment(meter: CpuMeter | None, arm: Arm, measure: Measure) -> dict[str, Any]:
    """One measured segment of ``arm``, with the load average and CPU per request it saw."""
    if arm.before is not None:
        await arm.before()
    before = meter.snapshot() if meter else {}
    row = await measure(arm)
    if meter is not None:
        row |= meter.usage(before, meter.snapshot(), row["requests"] - row["errors"])
    row["load_1m"] = load_average()[0]
    return row


async def interleaved(
    title: str, arms: Sequence[Arm], repeats: int, measure: Measure, meter: CpuMeter | None = None
) -> dict[str, list[dict[str, Any]]]:
    """``repeats`` rounds of one segment per arm, in order (A, B, A, B, ...)."""
    out: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
    for rep in range(repeats):
        for arm in arms:
            row = await segment(meter, arm, measure)
            out[arm.name].append(row)
            say(f"  {title} #{rep + 1} {arm.name:<12} {row}")
    return out


async def rate_sweep(
    arms: Sequence[Arm], rates: Sequence[float], duration: float, meter: CpuMeter | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Open loop at each rate, the arms interleaved per rate; an arm stops once it saturates."""
    out: dict[str, list[dict[str, Any]]] = {arm.name: [] for arm in arms}
    live = {arm.name for arm in arms}
    for rate in rates:
        for arm in arms:
            if arm.name not in live:
                continue
            row = await segment(meter, arm, at_rate(rate, duration))
            out[arm.name].append(row)
            say(f"  sweep {arm.name:<12} {rate:>6.0f} rps -> {row}")
            if saturated(row):
                live.discard(arm.name)  # higher rates only queue
    return out


class LoadSampler:
    """Samples the 1-minute load average every few seconds while the benchmark runs."""

    def __init__(self, every_s: float = 5.0) -> None:
        self.every_s = every_s
        self.samples: list[float] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            self.samples.append(load_average()[0])
            await asyncio.sleep(self.every_s)

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        s = sorted(self.samples)
        return {"samples": len(s), "min": s[0], "median": median(s), "max": s[-1]} if s else {}


# ----- the stack ----------------------------------------------------------------------------------


@dataclass
class Stack:
    registry: Any
    versions: dict[str, int]
    gateways: dict[str, ServiceProcess]  # "window_2ms" (default), "window_0ms"
    plain_port: int
    serve_port: int
    meter: CpuMeter
    serve_config: dict[str, Any]  # what the model server deployed: the packaged config as it ships


@contextlib.contextmanager
def stack(tmp: Path, args: argparse.Namespace) -> Iterator[Stack]:
    """Registry, plain server, Ray + model server, monitor and the two gateways; every process is
    stopped by its own pid when the block ends, in reverse order of start."""
    with contextlib.ExitStack() as stop:
        say("training the benchmark models (CREDIT_SCHEMA)...")
        stable = bench_model(args.trees, seed=1, model_dir=tmp / "model")
        shadow = bench_model(args.trees, seed=2)

        registry_proc = start_registry(tmp / "registry", REGISTRY_TOKENS)
        stop.callback(registry_proc.stop)
        registry = Registry(registry_proc)
        stop.callback(registry.close)
        registry.create_model(MODEL)
        versions = {"stable": registry.register(MODEL, stable), "shadow": registry.register(MODEL, shadow)}
        registry.set_alias(MODEL, "production", versions["stable"])

        port_file = tmp / "plain.port"
        plain = start_plain_server(tmp / "model", port_file, module=PLAIN_SCORING_SERVER)
        stop.callback(stop_process, plain)
        plain_port = plain_server_port(plain, port_file)

        say("starting Ray and the model server (the shipped Serve config, Ray's defaults)...")
        stop.callback(say, "Ray stopped")
        cluster = stop.enter_context(
            ray_cluster({"FINPREDICT_MODEL_SERVER_REGISTRY_TOKEN": REPLICA_TOKEN}, num_cpus=2)
        )
        config_file = tmp / "serve_config.yaml"
        config = serve_config(config_file, registry.target, {APP: True})
        # Ray goes down right after it: no need to delete the app first
        server, serve_port = start_model_server(
            tmp / "ms", cluster.address, config_file, APP, FINPREDICT_MODEL_SERVER_DELETE_APP_ON_EXIT="false"
        )
        stop.callback(timed, "model server", server.stop, 60)

        monitor = monitor_process(tmp / "monitor", 0)
        stop.callback(timed, "monitor", monitor.stop, 30)
        gateways: dict[str, ServiceProcess] = {}
        for name, window in (("window_2ms", "2"), ("window_0ms", "0")):
            gw: ServiceProcess = start_gateway(
                tmp / name,
                registry.target,
                serve_port,
                monitor.target,
                FINPREDICT_GATEWAY_BATCH_WINDOW_MS=window,
                FINPREDICT_GATEWAY_CONTROLLER_TICK_S="0.5",  # the default (the tests use 0.1)
            )
            stop.callback(timed, name, gw.stop, 30)
            gateways[name] = gw
        meter = CpuMeter(
            {
                "client": [os.getpid()],
                "gateway": [gw.proc.pid for gw in gateways.values()],
                "monitor": [monitor.proc.pid],
                "model_server_supervisor": [server.proc.pid],
                "registry": [registry_proc.proc.pid],
                "plain": [plain.pid],
            },
            cluster.marker,
        )
        yield Stack(registry, versions, gateways, plain_port, serve_port, meter, config)


async def set_shadow(rollouts: Any, version: int) -> None:
    req = rpb.SetShadowRequest(model=MODEL, version=version, percent=100.0 if version else 0.0)
    await rollouts.SetShadow(req, metadata=OPERATOR, timeout=10)


async def counter(gw: ServiceProcess, name: str, **labels: str) -> float:
    return float(await asyncio.to_thread(metric_value, gw.metrics_port, name, **labels))


# ----- the run ------------------------------------------------------------------------------------


async def measure_all(s: Stack, args: argparse.Namespace) -> dict[str, Any]:
    requests = score_requests(512, seed=7)
    rates = [float(r) for r in args.rates.split(",")]
    gw_main, gw_nowin = s.gateways["window_2ms"], s.gateways["window_0ms"]
    results: dict[str, Any] = {}
    async with (
        grpc.aio.insecure_channel(f"127.0.0.1:{s.plain_port}") as plain_ch,
        grpc.aio.insecure_channel(gw_main.target) as gw_ch,
        grpc.aio.insecure_channel(gw_nowin.target) as gw0_ch,
        grpc.aio.insecure_channel(f"127.0.0.1:{s.serve_port}") as serve_ch,
    ):
        plain = Arm("plain", scorer(plain_ch, requests))
        serve = Arm("serve_direct", predictor(serve_ch, requests, s.versions["stable"]))
        gateway = Arm("gateway", scorer(gw_ch, requests, CLIENT))
        gateway_0 = Arm("gateway_0ms", scorer(gw0_ch, requests, CLIENT))
        rollouts = rpb_grpc.RolloutServiceStub(gw_ch)

        say("warming up (the first call loads the model on the replica)...")
        for arm in (plain, serve, gateway, gateway_0):
            await call_until_ready(arm.call)
        # both sides score the same model: same score for the same application
        probe = requests[0]
        plain_score = (await spb_grpc.ScoringServiceStub(plain_ch).Score(probe, timeout=10)).result
        gw_score = (await spb_grpc.ScoringServiceStub(gw_ch).Score(probe, metadata=CLIENT, timeout=10)).result
        if abs(plain_score.score - gw_score.score) > 1e-6 or gw_score.model.version != s.versions["stable"]:
            raise RuntimeError(f"plain and gateway disagree: {plain_score} vs {gw_score}")
        # load the shadow version on the replica too, and check that mirroring works
        await set_shadow(rollouts, s.versions["shadow"])
        await warm_up(gateway.call, 20)
        deadline = time.monotonic() + 120
        while await counter(gw_main, "finpredict_gateway_shadow_total", model=MODEL, outcome="ok") < 1:
            if time.monotonic() > deadline:
                raise TimeoutError("no shadow call succeeded within 120 s")
            await warm_up(gateway.call, 5)
            await asyncio.sleep(0.5)
        await set_shadow(rollouts, 0)
        for arm in (plain, serve, gateway, gateway_0):
            await warm_up(arm.call, 50)

        if args.profile_only:
            say(f"profiling {args.profile_s:g} s of sequential gateway requests (py-spy)...")
            results["profile"] = await profile_sequential(s, gateway, args.profile_s, args.profile_dir)
            return results
        m = s.meter
        say("idle CPU (3 s without traffic)...")
        idle0 = m.snapshot()
        await asyncio.sleep(3.0)
        idle1 = m.snapshot()
        idle = m.usage(idle0, idle1, 1)
        results["idle"] = {
            "cpu_ms_per_s": {k: round(v / 3.0, 1) for k, v in idle["cpu_ms_per_request"].items()},
            "cores_busy": idle["cores_busy"],
        }
        say(f"  {results['idle']}")

        say("1. sequential (one in flight):")
        results["sequential"] = await interleaved(
            "sequential", [plain, serve, gateway, gateway_0], args.repeats, in_flight(1, args.duration), m
        )
        say("2. 16 in flight:")
        results["in_flight_16"] = await interleaved(
            "in-flight-16", [plain, gateway], args.repeats, in_flight(16, args.duration), m
        )
        say("3. fixed-rate sweep (open loop):")
        results["sweep"] = await rate_sweep([plain, gateway], rates, args.duration, m)

        say(f"4. shadow mirroring at {args.shadow_rate:g} req/s:")
        shadow_total = "finpredict_gateway_shadow_total"

        async def shadow_segment(arm: Arm) -> dict[str, Any]:
            outcomes = ("ok", "error", "skipped")
            before = {o: await counter(gw_main, shadow_total, model=MODEL, outcome=o) for o in outcomes}
            row = await at_rate(args.shadow_rate, args.duration)(arm)
            await asyncio.sleep(0.3)  # mirrored calls finish after the responses
            row["mirrored"] = {
                o: await counter(gw_main, shadow_total, model=MODEL, outcome=o) - before[o] for o in outcomes
            }
            return row

        async def shadow_off() -> None:
            await set_shadow(rollouts, 0)

        async def shadow_on() -> None:
            await set_shadow(rollouts, s.versions["shadow"])

        results["shadow"] = await interleaved(
            "shadow",
            [Arm("off", gateway.call, shadow_off), Arm("on", gateway.call, shadow_on)],
            args.repeats,
            shadow_segment,
            m,
        )
        await shadow_off()

        say("5. coalescing window, 16 in flight:")
        procs = {"window_2ms": gw_main, "window_0ms": gw_nowin}
        batch_rows = "finpredict_gateway_backend_batch_rows"

        async def window_segment(arm: Arm) -> dict[str, Any]:
            gw = procs[arm.name]
            rows0 = await counter(gw, f"{batch_rows}_sum")
            calls0 = await counter(gw, f"{batch_rows}_count")
            row = await in_flight(16, args.duration)(arm)
            rows = await counter(gw, f"{batch_rows}_sum") - rows0
            calls = await counter(gw, f"{batch_rows}_count") - calls0
            row["rows_per_backend_call"] = round(rows / calls, 2) if calls else None
            return row

        results["batch_window"] = await interleaved(
            "batch-window",
            [Arm("window_2ms", gateway.call), Arm("window_0ms", gateway_0.call)],
            args.repeats,
            window_segment,
            m,
        )
        await asyncio.sleep(1.0)  # one flush interval of the prediction log
        # did the prediction log keep up? (records sent to the monitor vs dropped, per gateway)
        results["prediction_log"] = {
            name: {
                "sent": await counter(gw, "finpredict_gateway_prediction_log_sent_total"),
                "dropped": await counter(gw, "finpredict_gateway_prediction_log_dropped_total"),
                "buffered": await counter(gw, "finpredict_gateway_prediction_log_buffer_records"),
            }
            for name, gw in procs.items()
        }
        say(f"prediction log: {results['prediction_log']}")
    return results


async def run(args: argparse.Namespace) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="fp-bench-gw-"))
    load_before = load_average()
    sampler = LoadSampler()
    t0 = time.monotonic()
    date = utc_now()
    with stack(tmp, args) as s:
        started_s = time.monotonic() - t0
        serve = s.serve_config
        sampler.start()
        try:
            results = await measure_all(s, args)
        finally:
            load_during = await sampler.stop()
    shutil.rmtree(tmp, ignore_errors=True)  # kept when the run fails, for its logs
    results["run"] = {
        "date": date,
        "settings": settings(args, serve),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        "load_1m_during": load_during,
        "stack_start_s": round(started_s, 1),
        "total_s": round(time.monotonic() - t0, 1),
    }
    return results


# ----- the summary --------------------------------------------------------------------------------


def med(rows: Sequence[Mapping[str, Any]], key: str) -> float:
    return median(float(r[key]) for r in rows if r.get(key) is not None)


def medians(arms: Mapping[str, Sequence[Mapping[str, Any]]], keys: Mapping[str, str]) -> dict[str, Any]:
    """``{arm}_{label}``: the median of each row field ``keys[label]`` over each arm's repeats,
    plus each arm's median CPU ms per request by process group."""
    out: dict[str, Any] = {
        f"{arm}_{label}": med(rows, key) for arm, rows in arms.items() for label, key in keys.items()
    }
    out["cpu_ms_per_request"] = {arm: cpu(rows) for arm, rows in arms.items()}
    out["other_processes_cores_busy"] = median(
        r["cores_busy"]["others"] for rows in arms.values() for r in rows if "cores_busy" in r
    )
    return out


def cpu(rows: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Median CPU ms per request of each process group over the segments ``rows``."""
    per = [r["cpu_ms_per_request"] for r in rows if "cpu_ms_per_request" in r]
    return {k: median(p.get(k, 0.0) for p in per) for k in sorted({k for p in per for k in p})}


def ratio(a: float, b: float) -> float | None:
    return round(a / b, 3) if b and a == a and b == b else None


def settings(args: argparse.Namespace, serve: Mapping[str, Any]) -> dict[str, Any]:
    """The exact settings of a measured run (kept with its results)."""
    return {
        "duration_s": args.duration,
        "repeats": args.repeats,
        "rates": args.rates,
        "shadow_rate_rps": args.shadow_rate,
        "trees": args.trees,
        "rows_per_request": 1,
        "ray": "ray start --head --num-cpus=2 (as the cluster profile and the RayService start it)",
        "ray_env": ray_env(),
        "serve_config": serve,
        "gateway": "python -m finpredict.gateway with default settings but BATCH_WINDOW_MS "
        "(2 = default; 0 for the coalescing comparison); prediction log to a real monitor",
        "baseline": "plain single-process grpc.aio ScoringService.Score scoring in process "
        "(benchmarks/gateway/plain_scoring_server.py), under the same background (interleaved segments)",
        "latency": "closed loop: from each send; open loop: from each request's scheduled send time",
        "figures": f"medians over {args.repeats} interleaved repeats",
    }


def path_cpu_ms(arm: str, per_group: Mapping[str, float]) -> float:
    """CPU ms per request of the processes an arm's requests cross: the plain server's own process
    for ``plain``; every process of the stack but the plain server for the others (gateways, Serve
    replicas and the rest of Ray, the model-server supervisor, monitor and registry, their idle
    background included). The benchmark's client is left out of both."""
    if arm == "plain":
        return per_group.get("plain", 0.0)
    return sum(v for k, v in per_group.items() if k not in ("client", "plain", "total"))


def summarise(results: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    seq, c16 = results["sequential"], results["in_flight_16"]
    shadow, batch = results["shadow"], results["batch_window"]
    lat = {"p50_ms": "p50_ms", "p99_ms": "p99_ms"}
    sequential = medians(seq, lat)
    sequential["p50_ratio"] = ratio(sequential["gateway_p50_ms"], sequential["plain_p50_ms"])
    sequential["p99_ratio"] = ratio(sequential["gateway_p99_ms"], sequential["plain_p99_ms"])
    # CPU per request over every process of the path (the client's excluded: the same on both sides)
    seq_cpu = sequential["cpu_ms_per_request"]
    path_cpu = {arm: round(path_cpu_ms(arm, seq_cpu.get(arm, {})), 2) for arm in ("plain", "gateway")}
    sequential["path_cpu_ms_per_request"] = path_cpu
    sequential["cpu_ratio"] = ratio(path_cpu["gateway"], path_cpu["plain"])
    in_flight = medians(c16, {"rps": "throughput_rps", **lat})
    in_flight["throughput_ratio"] = ratio(in_flight["gateway_rps"], in_flight["plain_rps"])
    shadows = medians(shadow, lat)
    shadows["rate_rps"] = results.get("run", {}).get("settings", {}).get("shadow_rate_rps", args.shadow_rate)
    shadows["p50_ratio"] = ratio(shadows["on_p50_ms"], shadows["off_p50_ms"])
    shadows["p99_ratio"] = ratio(shadows["on_p99_ms"], shadows["off_p99_ms"])
    shadows["mirrored_ok_per_on_segment"] = [r["mirrored"]["ok"] for r in shadow["on"]]
    shadows["mirrored_per_off_segment"] = [sum(r["mirrored"].values()) for r in shadow["off"]]
    shadows["mirrored_skipped_or_failed"] = sum(
        r["mirrored"]["skipped"] + r["mirrored"]["error"] for r in shadow["on"]
    )
    window = medians(batch, {"rps": "throughput_rps", **lat, "rows_per_call": "rows_per_backend_call"})
    window["throughput_ratio_2ms_vs_0ms"] = ratio(window["window_2ms_rps"], window["window_0ms_rps"])
    sweep_errors = sum(r["errors"] for rows in results["sweep"].values() for r in rows)

    def within(value: float | None, limit: float, below: bool = True) -> bool | None:
        if value is None or value != value:
            return None
        return value <= limit if below else value >= limit

    run = results.get("run", {})
    segments = [r for key in PHASES for rows in results[key].values() for r in rows if "cores_busy" in r]
    others = sorted(r["cores_busy"]["others"] for r in segments)
    cores = machine_info()["cpus"] or 1
    disturbance = {
        "other_processes_cores_busy": (
            {"median": median(others), "p90": others[int(0.9 * (len(others) - 1))], "max": others[-1]}
            if others
            else None
        ),
        "this_run_cores_busy_median": median(r["cores_busy"]["this_run"] for r in segments),
        # other jobs kept more than a quarter of the machine busy in half the segments or more
        "disturbed": median(others) > 0.25 * cores if others else None,
    }
    return {
        "benchmark": "gateway",
        "date": run.get("date"),
        "machine": {
            **machine_info(),
            **{k: run.get(k) for k in ("load_average_before", "load_average_after")},
        },
        "load_1m_during": run.get("load_1m_during"),
        "disturbance": disturbance,
        # as measured (a --summarise-only run keeps the measured run's)
        "settings": {
            **run.get("settings", {}),
            "stack_start_s": run.get("stack_start_s"),
            "total_s": run.get("total_s"),
        },
        "summary": {
            "idle": results.get("idle"),
            "sequential": sequential,
            "in_flight_16": in_flight,
            "shadow": shadows,
            "batch_window": window,
            "sweep_errors": sweep_errors,
            "prediction_log": results.get("prediction_log"),
        },
        "targets": {
            "limits": TARGETS,
            "sequential_p50_within_2x": within(sequential["p50_ratio"], TARGETS["sequential_p50_ratio_max"]),
            "sequential_p99_within_2_5x": within(
                sequential["p99_ratio"], TARGETS["sequential_p99_ratio_max"]
            ),
            "sequential_cpu_within_1_6x": within(
                sequential["cpu_ratio"], TARGETS["sequential_cpu_ratio_max"]
            ),
            "in_flight_16_throughput_ge_plain": within(
                in_flight["throughput_ratio"], TARGETS["in_flight_16_throughput_ratio_min"], below=False
            ),
            "in_flight_16_gateway_p99_le_50ms": within(
                in_flight["gateway_p99_ms"], TARGETS["in_flight_16_gateway_p99_ms_max"]
            ),
            "shadow_p50_within_10pct": within(shadows["p50_ratio"], TARGETS["shadow_p50_ratio_max"]),
        },
        "results": results,
    }


def print_summary(summary: dict[str, Any]) -> None:
    s = summary["summary"]
    seq, c16, sh, w = s["sequential"], s["in_flight_16"], s["shadow"], s["batch_window"]
    print("\n                       plain    gateway   ratio")
    print(f"sequential p50 ms   {seq['plain_p50_ms']:>8} {seq['gateway_p50_ms']:>10}   {seq['p50_ratio']}")
    print(f"sequential p99 ms   {seq['plain_p99_ms']:>8} {seq['gateway_p99_ms']:>10}   {seq['p99_ratio']}")
    print(
        f"  (p50/p99 ms: Serve direct {seq.get('serve_direct_p50_ms')}/{seq.get('serve_direct_p99_ms')},"
        f" gateway with 0 ms window {seq.get('gateway_0ms_p50_ms')}/{seq.get('gateway_0ms_p99_ms')})"
    )
    print(f"16 in flight rps    {c16['plain_rps']:>8} {c16['gateway_rps']:>10}   {c16['throughput_ratio']}")
    print(f"16 in flight p99 ms {c16['plain_p99_ms']:>8} {c16['gateway_p99_ms']:>10}")
    print(f"shadow p50 ms off/on at {sh['rate_rps']:g} rps: {sh['off_p50_ms']} / {sh['on_p50_ms']}"
          f" (ratio {sh['p50_ratio']})")  # fmt: skip
    print(
        f"window 2 ms vs 0 ms, 16 in flight: {w['window_2ms_rps']} vs {w['window_0ms_rps']} rps, "
        f"p99 {w['window_2ms_p99_ms']} vs {w['window_0ms_p99_ms']} ms, rows/call "
        f"{w['window_2ms_rows_per_call']} vs {w['window_0ms_rows_per_call']}"
    )
    print(f"load (1 min) during: {summary['load_1m_during']}  disturbance: {summary['disturbance']}")
    print(f"targets: { {k: v for k, v in summary['targets'].items() if k != 'limits'} }")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--duration", type=float, default=4.0, help="seconds per segment")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats per comparison")
    parser.add_argument("--rates", default="25,50,100,150", help="open-loop sweep rates (req/s)")
    parser.add_argument("--shadow-rate", type=float, default=50.0, help="open-loop rate of the shadow test")
    parser.add_argument("--trees", type=int, default=100)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/gateway.json")
    parser.add_argument(
        "--summarise-only", action="store_true", help="recompute the summary of the results in --out"
    )
    parser.add_argument(
        "--profile-only",
        action="store_true",
        help="only profile the sequential path with py-spy (writes --profile-out, not --out)",
    )
    parser.add_argument("--profile-s", type=float, default=20.0, help="seconds profiled")
    parser.add_argument(
        "--profile-dir", type=Path, default=Path(tempfile.gettempdir()) / "fp-gateway-profile"
    )
    parser.add_argument("--profile-out", type=Path, default=ROOT / "benchmarks/results/gateway_profile.json")
    args, _ = parser.parse_known_args()
    if args.profile_only:
        results = asyncio.run(run(args))
        profile = {
            "benchmark": "gateway sequential path profile (py-spy)",
            "date": results["run"]["date"],
            "machine": {
                **machine_info(),
                **{k: results["run"].get(k) for k in ("load_average_before", "load_average_after")},
            },
            "load_1m_during": results["run"].get("load_1m_during"),
            "settings": {
                **results["run"]["settings"],
                "profiled_s": args.profile_s,
                "raw_stacks": str(args.profile_dir),
            },
            **results["profile"],
        }
        args.profile_out.write_text(json.dumps(profile, indent=2) + "\n")
        print(json.dumps({k: v for k, v in results["profile"].items()}, indent=1)[:6000])
        print(f"written {args.profile_out}")
        return 0
    results = json.loads(args.out.read_text())["results"] if args.summarise_only else asyncio.run(run(args))
    summary = summarise(results, args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2) + "\n")
    print_summary(summary)
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
