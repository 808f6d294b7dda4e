"""``task train``: runs the training pipeline (``dvc repro``) against a reachable registry.

* When ``FINPREDICT_REGISTRY_TARGET`` names a registry that answers its health check, the
  pipeline registers there (with the token in ``FINPREDICT_REGISTRY_TOKEN``).
* Otherwise a local registry is started for the run (``python -m finpredict.registry`` on a
  free loopback port, data in ``.run/train-registry``, a fresh admin token for this run) and
  stopped afterwards by its pid.

Then ``dvc repro`` runs (extra arguments are passed on, e.g. ``task train -- --force``), the
DVC-tracked data and model are pushed to the default DVC remote (``.dvc-remote/`` unless
configured otherwise), and a summary is printed: which stages ran, the gate table and the
version registered. The exit status is ``dvc repro``'s.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent
RUN_DIR = ROOT / ".run"
TARGET_ENV = "FINPREDICT_REGISTRY_TARGET"
TOKEN_ENV = "FINPREDICT_REGISTRY_TOKEN"


def healthy(target: str, timeout: float = 2.0) -> bool:
    try:
        with grpc.insecure_channel(target) as channel:
            resp = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
        return bool(resp.status == health_pb2.HealthCheckResponse.SERVING)
    except grpc.RpcError:
        return False


def start_registry(token: str) -> tuple[subprocess.Popen[bytes], str]:
    """Starts a local registry; waits (with a deadline) for its ready file and health check."""
    RUN_DIR.mkdir(exist_ok=True)
    ready = RUN_DIR / "train-registry.ready.json"
    ready.unlink(missing_ok=True)
    log = RUN_DIR / "train-registry.log"
    env = {
        **os.environ,
        "FINPREDICT_REGISTRY_HOST": "127.0.0.1",
        "FINPREDICT_REGISTRY_PORT": "0",
        "FINPREDICT_REGISTRY_METRICS_PORT": "-1",
        "FINPREDICT_REGISTRY_READY_FILE": str(ready),
        "FINPREDICT_REGISTRY_DATA_DIR": str(RUN_DIR / "train-registry"),
        "FINPREDICT_REGISTRY_TOKENS": f"{token}=train-pipeline:admin",
        "FINPREDICT_REGISTRY_LOG_FORMAT": "text",
    }
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "finpredict.registry"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the registry exited with {proc.returncode}; see {log}")
        if ready.exists():
            try:
                target = f"127.0.0.1:{json.loads(ready.read_text())['port']}"
            except (ValueError, KeyError):
                target = ""
            if target and healthy(target):
                return proc, target
        time.sleep(0.1)  # polling a condition with a deadline, not waiting blindly
    stop(proc)
    raise RuntimeError(f"the registry did not become healthy within 60s; see {log}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(stages: list[str], rc: int) -> str:
    lines = ["", "== finpredict training pipeline =="]
    lines.append(
        "stages run: " + (", ".join(stages) if stages else "none (everything up to date, DVC cache)")
    )
    gates = read_json(ROOT / "reports" / "gates.json")
    if gates:
        lines.append(f"{'gate':<26}{'value':>12}  {'rule':<12}{'margin':>12}  result")
        for g in gates["gates"]:
            rule = f"{g['comparator']} {g['threshold']:g}"
            lines.append(
                f"{g['name']:<26}{g['value']:>12.4f}  {rule:<12}{g['margin']:>+12.4f}  "
                + ("PASS" if g["passed"] else "FAIL")
            )
    reg = read_json(ROOT / "reports" / "registration.json")
    if rc == 0 and reg:
        lines.append(
            f"registered: {reg['model']} version {reg['version']} (gates passed: {reg['gates_passed']}), "
            f"W&B run {reg['lineage']['wandb_run_path']}"
        )
    elif rc != 0:
        lines.append(f"pipeline FAILED (exit {rc}); nothing new was registered")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("WANDB_MODE", "offline")
    proc: subprocess.Popen[bytes] | None = None
    target = env.get(TARGET_ENV, "").strip()
    try:
        if target and healthy(target):
            print(f"[train] using the registry at {target}")
        else:
            if target:
                print(f"[train] {TARGET_ENV}={target} is not reachable; starting a local registry")
            token = secrets.token_urlsafe(24)
            proc, target = start_registry(token)
            env[TARGET_ENV], env[TOKEN_ENV] = target, token
            print(f"[train] started a local registry at {target} (pid {proc.pid})")
        repro = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", *argv],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sys.stdout.write(repro.stdout)
        stages = re.findall(r"Running stage '([^']+)'", repro.stdout)
        if repro.returncode == 0:
            push = subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=ROOT, env=env)
            if push.returncode != 0:
                print("[train] warning: dvc push to the default remote failed", file=sys.stderr)
        print(summary(stages, repro.returncode))
        return repro.returncode
    finally:
        if proc is not None:
            stop(proc)
            print(f"[train] stopped the local registry (pid {proc.pid})")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
