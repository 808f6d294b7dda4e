"""Shared pieces of the benchmarks: load generators, percentiles, machine facts, the plain baseline.

Latency in :func:`open_loop` is counted from each request's *scheduled* send time, so a saturated
server cannot hide its queue (no coordinated omission); :func:`closed_loop` keeps a fixed number
of requests in flight and counts latency from each actual send.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import yaml  # type: ignore[import-untyped]

from finpredict.features import CREDIT_SCHEMA
from finpredict.model_server.config import DEFAULT_SERVE_CONFIG
from finpredict.modelio import save_model
from finpredict.testkit.models import TrainedModel, train_small_model
from finpredict.testkit.process import ServiceExitedError, ServiceProcess, start_service, wait_for

Call = Callable[[], Awaitable[Any]]
REPO = Path(__file__).resolve().parents[1]
PLAIN_SERVER = "benchmarks.model_server.plain_server"
# Ray Serve's faster request path (services/model-server/README.md): set on the benchmarks' Ray.
SERVE_THROUGHPUT_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_ENABLE_HA_PROXY": "1"}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def median(values: Iterable[float]) -> float:
    finite = [v for v in values if v == v]  # drop NaN
    return round(statistics.median(finite), 2) if finite else float("nan")


def error_kind(exc: BaseException) -> str:
    return exc.code().name if isinstance(exc, grpc.aio.AioRpcError) else type(exc).__name__


def _latency(latencies: list[float]) -> dict[str, float]:
    return {"p50_ms": round(percentile(latencies, 50), 2), "p99_ms": round(percentile(latencies, 99), 2)}


def _errors(errors: list[str]) -> dict[str, Any]:
    return {"errors": len(errors), **({"error_kinds": dict(Counter(errors))} if errors else {})}


async def open_loop(call: Call, rate: float, duration: float) -> dict[str, Any]:
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
            errors.append(error_kind(exc))

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
        **_latency(latencies),
        "requests": n,
        **_errors(errors),
    }


async def closed_loop(call: Call, concurrency: int, duration: float) -> dict[str, Any]:
    """``concurrency`` workers each send the next request as soon as the last one is answered."""
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    errors: list[str] = []
    start = loop.time()
    stop = start + duration

    async def worker() -> None:
        while loop.time() < stop:
            t0 = loop.time()
            try:
                await call()
                latencies.append((loop.time() - t0) * 1000)
            except Exception as exc:
                errors.append(error_kind(exc))

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = loop.time() - start
    return {
        "in_flight": concurrency,
        "throughput_rps": round(len(latencies) / elapsed, 1),
        **_latency(latencies),
        "requests": len(latencies) + len(errors),
        **_errors(errors),
    }


async def warm_up(call: Call, n: int = 30) -> None:
    for _ in range(n):
        await call()


async def sweep(name: str, call: Call, rates: list[float], duration: float) -> list[Any]:
    """Open-loop rows at rising ``rates`` (after a warm-up), stopping once ``call`` saturates."""
    await warm_up(call)
    rows = []
    for rate in rates:
        row = await open_loop(call, rate, duration)
        rows.append(row)
        print(f"  {name:<14} {rate:>6.0f} rps -> {row}", flush=True)
        if saturated(row):
            break  # higher rates only queue
    return rows


def saturated(row: Mapping[str, Any]) -> bool:
    return bool(row["achieved_rps"] < 0.8 * row["target_rps"] or row["p99_ms"] > 1000)


async def call_until_ready(call: Call, limit_s: float = 180.0) -> None:
    """Retries ``call`` until it succeeds (the first call may load a model), with a deadline."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            await call()
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def start_plain_server(
    model_dir: Path, port_file: Path, module: str = PLAIN_SERVER
) -> subprocess.Popen[bytes]:
    """Starts the plain ``grpc.aio`` baseline (``python -m module model_dir port_file`` from the
    repository root); see plain_server.py."""
    return subprocess.Popen([sys.executable, "-m", module, str(model_dir), str(port_file)], cwd=REPO)


def plain_server_port(proc: subprocess.Popen[bytes], port_file: Path, timeout: float = 60.0) -> int:
    def port() -> int | None:
        if proc.poll() is not None:
            raise ServiceExitedError(f"plain server exited with {proc.returncode}")
        text = port_file.read_text() if port_file.exists() else ""
        return int(text) if text.strip() else None

    return wait_for(port, timeout, "plain server")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` (by this process's own pid only)."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def serve_config(
    path: Path,
    registry_target: str,
    apps: Mapping[str, bool],
    max_batch: int,
    wait_s: float,
    replicas: int = 1,
) -> Path:
    """The packaged Serve config with one application per ``apps`` item (name: batching on/off),
    each a fixed number of replicas (no autoscaling) sized for a small machine."""
    base: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    template = base["applications"][0]
    out = []
    for app_name, batching in apps.items():
        app = json.loads(json.dumps(template))
        app["name"] = app_name
        app["route_prefix"] = f"/{app_name}"
        app["args"].update(registry_target=registry_target, batching=batching, watch_aliases=[])
        dep = app["deployments"][0]
        dep.pop("autoscaling_config", None)
        dep["num_replicas"] = replicas
        dep["ray_actor_options"] = {"num_cpus": 0.5}
        dep["user_config"] = {"max_batch_size": max_batch, "batch_wait_timeout_s": wait_s}
        out.append(app)
    base["applications"] = out
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return path


def start_model_server(
    work: Path, ray_address: str, config: Path, app_name: str, timeout: float = 300.0, **extra: str
) -> tuple[ServiceProcess, int]:
    """``python -m finpredict.model_server`` deploying ``config`` on the Ray at ``ray_address``
    (``extra``: more environment); returns the process and the Serve gRPC ingress port it reports
    in its ready file."""
    server = start_service(
        "model-server",
        work,
        env={
            "FINPREDICT_MODEL_SERVER_RAY_ADDRESS": ray_address,
            "FINPREDICT_MODEL_SERVER_SERVE_CONFIG": str(config),
            "FINPREDICT_MODEL_SERVER_APP_NAME": app_name,
            "FINPREDICT_MODEL_SERVER_SERVE_GRPC_PORT": "0",
            "FINPREDICT_MODEL_SERVER_SERVE_HTTP_PORT": "0",
            "FINPREDICT_MODEL_SERVER_LOG_FORMAT": "text",
            "RAY_AUTH_MODE": "disabled",
            **extra,
        },
        timeout=timeout,
    )
    try:
        ready = work / "model-server.ready.json"
        port = int(wait_for(lambda: json.loads(ready.read_text()).get("serve_grpc_port"), 60, "serve port"))
    except BaseException:
        server.stop(timeout=60)
        raise
    return server, port


def bench_model(trees: int, seed: int = 1, model_dir: Path | None = None) -> TrainedModel:
    """The benchmarks' model: XGBoost on CREDIT_SCHEMA, ``trees`` trees of depth 5 (saved to
    ``model_dir`` in the model-server format when given, for the plain baseline)."""
    trained = train_small_model(CREDIT_SCHEMA, n=3000, seed=seed, rounds=trees, depth=5)
    if model_dir is not None:
        save_model(trained.booster, model_dir, CREDIT_SCHEMA, {"best_iteration": trees - 1})
    return trained


def start_registry(work: Path, tokens: str, **extra: str) -> ServiceProcess:
    """``python -m finpredict.registry`` on an ephemeral loopback port, data under ``work``."""
    return start_service(
        "registry",
        work,
        env={
            "FINPREDICT_REGISTRY_DATA_DIR": str(work / "data"),
            "FINPREDICT_REGISTRY_TOKENS": tokens,
            "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
            **extra,
        },
    )
