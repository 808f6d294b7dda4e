"""Shared pieces of the benchmarks: load generators, percentiles, machine facts and the disturbance
of a run, the shipped Serve config, the plain baseline.

Latency in :func:`open_loop` is counted from each request's *scheduled* send time, so a saturated
server cannot hide its queue (no coordinated omission); :func:`closed_loop` keeps a fixed number
of requests in flight and counts latency from each actual send.
"""

from __future__ import annotations

import asyncio
import datetime
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
CLK_TCK = os.sysconf("SC_CLK_TCK")


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


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def ray_env() -> dict[str, str]:
    """The ``RAY_*`` variables of this process: what every Ray process the benchmark starts inherits
    (none set means Ray's defaults, as `finpredict up` and the RayService run it)."""
    return {k: v for k, v in sorted(os.environ.items()) if k.startswith("RAY_")}


# ----- how disturbed a run was ---------------------------------------------------------------------


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """User + system CPU time of one process so far (0 once it is gone); with ``reaped_children``
    also that of its children that exited and were waited for."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    own = int(fields[11]) + int(fields[12])
    return (own + (int(fields[13]) + int(fields[14]) if reaped_children else 0)) / CLK_TCK


def machine_busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy (all cores, every process), from /proc/stat."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = Path("/proc/stat").read_text().split()[1:9]
    return sum(int(v) for v in (user, nice, system, irq, softirq, steal)) / CLK_TCK


def process_tree(root: int) -> list[int]:
    """``root`` and every live process descended from it (a benchmark's servers, Ray's processes)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


class Disturbance:
    """The cores this benchmark's process tree kept busy and those every other process on the machine
    kept busy, between :meth:`start` and :meth:`stop` (what the machine's other work cost the run)."""

    def __init__(self) -> None:
        self._t0 = self._busy0 = self._ours0 = 0.0

    def _ours(self) -> float:
        # the live tree, and what its processes' exited children used (servers already stopped)
        return sum(cpu_seconds(p, reaped_children=True) for p in process_tree(os.getpid()))

    def start(self) -> None:
        self._t0, self._busy0, self._ours0 = time.monotonic(), machine_busy_seconds(), self._ours()

    def stop(self) -> dict[str, float]:
        wall = max(time.monotonic() - self._t0, 1e-9)
        ours = self._ours() - self._ours0
        others = max(machine_busy_seconds() - self._busy0 - ours, 0.0)
        return {
            "this_run_cores_busy": round(ours / wall, 2),
            "other_processes_cores_busy": round(others / wall, 2),
        }


def run_facts(load_before: list[float], disturbance: Mapping[str, float]) -> dict[str, Any]:
    """What a result file records of the run: date, machine, load average before and after, and the
    cores other processes kept busy meanwhile."""
    return {
        "date": utc_now(),
        **machine_info(),
        "load_average_before": load_before,
        "load_average_after": load_average(),
        **disturbance,
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


def serve_config(path: Path, registry_target: str, apps: Mapping[str, bool]) -> dict[str, Any]:
    """The packaged Serve config as it ships, with one copy of its application per ``apps`` item
    (name: batching on/off) pointed at ``registry_target``; writes it to ``path`` and returns it
    (the exact settings a result file records). Deployment options (replicas and autoscaling, CPUs,
    batch size and wait) are the shipped ones."""
    base: dict[str, Any] = yaml.safe_load(DEFAULT_SERVE_CONFIG.read_text())
    template = base["applications"][0]
    out = []
    for app_name, batching in apps.items():
        app = json.loads(json.dumps(template))
        app["name"] = app_name
        app["route_prefix"] = f"/{app_name}"
        app["args"].update(registry_target=registry_target, batching=batching)
        out.append(app)
    base["applications"] = out
    path.write_text(yaml.safe_dump(base, sort_keys=False))
    return base


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
