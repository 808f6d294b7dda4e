"""Start and stop the finpredict services on this machine (``task up`` / ``task down``).

Each service runs as its own process (``python -m finpredict.<service>``) with its settings
from the environment; logs, ready files and pid files go to ``.run/``. ``down`` stops only the
processes that ``up`` recorded, by pid, after checking the pid still belongs to that service.

    python scripts/stack.py up [--only registry,gateway]
    python scripts/stack.py status
    python scripts/stack.py down
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = Path(os.environ.get("FINPREDICT_RUN_DIR", ROOT / ".run"))
# Start order: dependencies first.
SERVICES = ["registry", "model-server", "monitor", "gateway"]


def _paths(service: str) -> tuple[Path, Path, Path]:
    return RUN_DIR / f"{service}.pid", RUN_DIR / f"{service}.ready.json", RUN_DIR / f"{service}.log"


def _module(service: str) -> str:
    return f"finpredict.{service.replace('-', '_')}"


def _is_ours(pid: int, service: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return _module(service).encode() in cmdline


def _running_pid(service: str) -> int | None:
    pid_file, _, _ = _paths(service)
    if not pid_file.exists():
        return None
    pid = int(pid_file.read_text().strip() or 0)
    return pid if pid and _is_ours(pid, service) else None


def _healthy(target: str) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            status = (
                health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1).status
            )
            return bool(status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def start(service: str, env: dict[str, str] | None = None, timeout: float = 60.0) -> dict[str, object]:
    """Starts one service (unless already running) and waits until it is healthy."""
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    pid_file, ready_file, log_file = _paths(service)
    if (pid := _running_pid(service)) is not None and ready_file.exists():
        info: dict[str, object] = json.loads(ready_file.read_text())
        print(f"  {service:<13} already running (pid {pid}, port {info['port']})")
        return info
    ready_file.unlink(missing_ok=True)
    prefix = f"FINPREDICT_{service.replace('-', '_').upper()}_"
    full_env = {**os.environ, f"{prefix}READY_FILE": str(ready_file), **(env or {})}
    with log_file.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", _module(service)],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    pid_file.write_text(str(proc.pid))
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = "\n".join(log_file.read_text(errors="replace").splitlines()[-15:])
            raise RuntimeError(f"{service} exited with {proc.returncode}; last log lines:\n{tail}")
        if ready_file.exists():
            info = json.loads(ready_file.read_text())
            if _healthy(f"127.0.0.1:{info['port']}"):
                shown = log_file.relative_to(ROOT) if log_file.is_relative_to(ROOT) else log_file
                print(
                    f"  {service:<13} serving on 127.0.0.1:{info['port']} "
                    f"(metrics :{info['metrics_port']}, pid {proc.pid}, log {shown})"
                )
                return info
        time.sleep(0.1)
    raise TimeoutError(f"{service} did not become healthy within {timeout:.0f}s (log: {log_file})")


def stop(service: str, timeout: float = 30.0) -> bool:
    """SIGTERM (graceful drain), then SIGKILL after ``timeout``. Returns whether it was running."""
    pid_file, ready_file, _ = _paths(service)
    pid = _running_pid(service)
    if pid is None:
        pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _is_ours(pid, service):
        time.sleep(0.1)
    if _is_ours(pid, service):
        os.kill(pid, signal.SIGKILL)
    pid_file.unlink(missing_ok=True)
    ready_file.unlink(missing_ok=True)
    return True


def targets() -> dict[str, str]:
    """Addresses of the running services, from their ready files."""
    out = {}
    for service in SERVICES:
        ready_file = _paths(service)[1]
        if _running_pid(service) is not None and ready_file.exists():
            out[service] = f"127.0.0.1:{json.loads(ready_file.read_text())['port']}"
    return out


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("command", choices=["up", "down", "status"])
    parser.add_argument("--only", default="", help="comma-separated services (default: all)")
    args = parser.parse_args()
    chosen = [s for s in SERVICES if not args.only or s in args.only.split(",")]
    if args.command == "up":
        print("starting finpredict services:")
        for service in chosen:
            start(service)
        print("stop them with `task down`")
    elif args.command == "down":
        for service in reversed(chosen):
            print(f"  {service:<13} {'stopped' if stop(service) else 'not running'}")
    else:
        running = targets()
        for service in chosen:
            print(f"  {service:<13} {running.get(service, 'not running')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
