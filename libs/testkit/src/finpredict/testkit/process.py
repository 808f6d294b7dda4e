"""Helpers for tests that start real finpredict services as subprocesses on loopback.

A service is started with ``port=0`` and a ready file; the launcher waits (with a deadline,
never a blind sleep) until the ready file appears and the health check answers SERVING.
Processes are stopped by their own pid only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

T = TypeVar("T")


class ServiceExitedError(RuntimeError):
    """A service process ended while the test was waiting for it."""


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, interval: float = 0.05) -> T:
    """Polls ``predicate`` until it returns a truthy value or ``timeout`` seconds pass.

    Exceptions from ``predicate`` count as "not yet", except :class:`ServiceExitedError`, which
    ends the wait at once.
    """
    deadline = time.monotonic() + timeout
    last_exc: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except ServiceExitedError:
            raise
        except Exception as exc:  # the condition may not be observable yet
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}"
        + (f" (last error: {last_exc})" if last_exc else "")
    )


@dataclass
class ServiceProcess:
    """A finpredict service running as a subprocess."""

    name: str
    proc: subprocess.Popen[bytes]
    ready: dict[str, object]
    log_path: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def port(self) -> int:
        return int(str(self.ready["port"]))

    @property
    def metrics_port(self) -> int:
        return int(str(self.ready["metrics_port"]))

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def health(self, service: str = "", timeout: float = 2.0) -> int:
        with grpc.insecure_channel(self.target) as ch:
            resp = health_pb2_grpc.HealthStub(ch).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout
            )
            return int(resp.status)

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def terminate(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()

    def wait(self, timeout: float = 30.0) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        self.terminate()
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.wait(timeout=10)


def start_service(
    name: str,
    tmp_dir: Path,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
    wait_healthy: bool = True,
) -> ServiceProcess:
    """Starts ``python -m finpredict.<name>`` on an ephemeral loopback port and waits until serving."""
    package = name.replace("-", "_")
    prefix = f"FINPREDICT_{package.upper()}_"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    ready_file = tmp_dir / f"{name}.ready.json"
    ready_file.unlink(missing_ok=True)
    log_path = tmp_dir / f"{name}.log"
    full_env = {
        **os.environ,
        f"{prefix}HOST": "127.0.0.1",
        f"{prefix}PORT": "0",
        f"{prefix}METRICS_PORT": "0",
        f"{prefix}READY_FILE": str(ready_file),
        **(env or {}),
    }
    with log_path.open("ab") as log_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", f"finpredict.{package}"],
            env=full_env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )

    def ready() -> dict[str, object] | None:
        if proc.poll() is not None:
            raise ServiceExitedError(
                f"{name} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
            )
        if ready_file.exists():
            return json.loads(ready_file.read_text())  # type: ignore[no-any-return]
        return None

    try:
        info = wait_for(ready, timeout, f"{name} to start")
    except BaseException:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        raise
    service = ServiceProcess(name, proc, info, log_path, dict(env or {}))
    if wait_healthy:

        def healthy() -> bool:
            if proc.poll() is not None:  # a dead service fails at once, not after the timeout
                raise ServiceExitedError(
                    f"{name} exited with {proc.returncode}:\n{log_path.read_text(errors='replace')}"
                )
            return bool(service.health() == health_pb2.HealthCheckResponse.SERVING)

        try:
            wait_for(healthy, timeout, f"{name} healthy")
        except BaseException:
            service.stop(timeout=30)  # never leave a half-started service behind
            raise
    return service
