"""Ray nodes on this host: ``ray start --head --block`` and ``ray start --address --block`` (the
cluster profile's two-node Ray, :class:`~finpredict.stack.launcher.Stack`, and the test kit's
clusters).

Each node has a temp dir of its own (its session, sockets and logs: keep the path short, unix
sockets allow about 100 characters); it is up once its ``ray start`` output says so. ``--block``
keeps ``ray start`` in the foreground: a SIGTERM to it tears down the processes it started.
Nodes beside a head on the same host give their Serve proxies ports of their own
(:func:`worker_env`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from finpredict.common.net import free_port

STARTED = "Ray runtime started"
# What every node's environment gets (no usage stats, no token auth on loopback).
BASE_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled"}


def ray_executable() -> Path:
    """The ``ray`` command beside this Python (the model server's dependency brings it)."""
    ray = Path(sys.executable).parent / "ray"
    if not ray.exists():
        raise FileNotFoundError(
            f"{ray} not found: Ray comes with finpredict-model-server (`uv sync --all-packages`)"
        )
    return ray


def start_argv(temp_dir: Path, args: list[str]) -> list[str]:
    """``ray start --block`` with ``args`` (the node's role) and ``temp_dir``."""
    return [
        str(ray_executable()), "start", "--block", *args, f"--temp-dir={temp_dir}",
        "--disable-usage-stats", f"--min-worker-port={free_port()}", "--max-worker-port=0",
    ]  # fmt: skip


def head_args(port: int, num_cpus: int) -> list[str]:
    """A head node's arguments: GCS on ``port``, no dashboard, its own Ray client port."""
    return [
        "--head", f"--port={port}", f"--num-cpus={num_cpus}", "--include-dashboard=false",
        f"--ray-client-server-port={free_port()}",
    ]  # fmt: skip


def worker_args(head: str, num_cpus: int) -> list[str]:
    """A node joining the head at ``head`` (``host:port``)."""
    return [f"--address={head}", f"--num-cpus={num_cpus}"]


def worker_env() -> dict[str, str]:
    """Serve's proxies of nodes colocated with the head need ports of their own (the head keeps the
    Serve config's)."""
    return {
        "RAY_SERVE_WORKER_PROXY_GRPC_PORT": str(free_port()),
        "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(free_port()),
    }


def started(log: Path, offset: int = 0) -> bool:
    """Whether the node's ``ray start`` output ``log`` (past ``offset`` bytes) reports the runtime
    started."""
    if not log.exists():
        return False
    with log.open("rb") as f:
        f.seek(offset)
        return STARTED.encode() in f.read()
