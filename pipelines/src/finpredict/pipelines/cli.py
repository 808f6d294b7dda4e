"""``finpredict train`` (``task train``): runs the training pipeline (``dvc repro``) in the project
checkout against a reachable registry (mounted at the root of the ``finpredict`` command line).

* When ``FINPREDICT_REGISTRY_TARGET`` names a registry that answers its health check, the
  pipeline registers there (with the token in ``FINPREDICT_REGISTRY_TOKEN``).
* Otherwise a local registry is started for the run (``python -m finpredict.registry`` on a
  free loopback port, data in ``<run dir>/train-registry``, a fresh admin token for this run)
  and stopped afterwards by its pid.

Then ``dvc repro`` runs (extra arguments are passed on, e.g. ``finpredict train --force``), the
DVC-tracked data and model are pushed to the default DVC remote (``.dvc-remote/`` unless
configured otherwise), and a summary is printed: which stages ran, the gate table and the
version registered (or the earlier run it reused). The exit status is ``dvc repro``'s.
:func:`pipeline_registry` (that choice of registry) serves ``finpredict experiments`` too.
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
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer

from finpredict.common.addresses import LOCALHOST
from finpredict.common.config import ClientSettings, ConfigError, env_var_name, load_settings
from finpredict.stack.components import grpc_healthy
from finpredict.stack.settings import StackSettings

TARGET_ENV = env_var_name(ClientSettings, "registry_target")
TOKEN_ENV = "FINPREDICT_REGISTRY_TOKEN"  # what the register stage sends (finpredict.pipelines.register)

app = typer.Typer(help="The training pipeline.", no_args_is_help=True)


def start_registry(token: str, run_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """Starts a local registry; waits (with a deadline) for its ready file and health check."""
    run_dir.mkdir(parents=True, exist_ok=True)
    ready = run_dir / "train-registry.ready.json"
    ready.unlink(missing_ok=True)
    log = run_dir / "train-registry.log"
    env = {
        **os.environ,
        "FINPREDICT_REGISTRY_HOST": LOCALHOST,
        "FINPREDICT_REGISTRY_PORT": "0",
        "FINPREDICT_REGISTRY_METRICS_PORT": "-1",
        "FINPREDICT_REGISTRY_READY_FILE": str(ready),
        "FINPREDICT_REGISTRY_DATA_DIR": str(run_dir / "train-registry"),
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
                target = f"{LOCALHOST}:{json.loads(ready.read_text())['port']}"
            except (ValueError, KeyError):
                target = ""
            if target and grpc_healthy(target, timeout=2.0):
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


@contextmanager
def pipeline_registry(
    settings: StackSettings, target: str, say: Callable[[str], None] = print, prefix: str = "[train]"
) -> Iterator[tuple[str, str]]:
    """The registry the pipeline registers into, for the duration of the block: ``target`` when it
    answers its health check (yields ``(target, "")``: the caller's token applies), else a local
    registry started for the block (data in ``<run dir>/train-registry``, a fresh admin token:
    yields ``(its address, that token)``), stopped by its pid afterwards."""
    if target and grpc_healthy(target, timeout=2.0):
        say(f"{prefix} using the registry at {target}")
        yield target, ""
        return
    if target:
        say(f"{prefix} {TARGET_ENV}={target} is not reachable; starting a local registry")
    token = secrets.token_urlsafe(24)
    proc, local = start_registry(token, settings.run_dir)
    say(f"{prefix} started a local registry at {local} (pid {proc.pid})")
    try:
        yield local, token
    finally:
        stop(proc)
        say(f"{prefix} stopped the local registry (pid {proc.pid})")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summary(root: Path, stages: list[str], rc: int) -> str:
    lines = ["", "== finpredict training pipeline =="]
    lines.append(
        "stages run: " + (", ".join(stages) if stages else "none (everything up to date, DVC cache)")
    )
    gates = read_json(root / "reports" / "gates.json")
    if gates:
        lines.append(f"{'gate':<26}{'value':>12}  {'rule':<12}{'margin':>12}  result")
        for g in gates["gates"]:
            rule = f"{g['comparator']} {g['threshold']:g}"
            lines.append(
                f"{g['name']:<26}{g['value']:>12.4f}  {rule:<12}{g['margin']:>+12.4f}  "
                + ("PASS" if g["passed"] else "FAIL")
            )
    reg = read_json(root / "reports" / "registration.json")
    if rc == 0 and reg and reg.get("reused"):
        lines.append(
            f"reused run {reg['run_id']} ({reg['model']} version {reg['version']}): same params, data "
            "and code as that run; nothing new was registered"
        )
    elif rc == 0 and reg:
        lines.append(
            f"registered: {reg['model']} version {reg['version']} (gates passed: {reg['gates_passed']}), "
            f"W&B run {reg['lineage']['wandb_run_path']}"
        )
    elif rc != 0:
        lines.append(f"pipeline FAILED (exit {rc}); nothing new was registered")
    return "\n".join(lines)


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def train(ctx: typer.Context) -> None:
    """Run the training pipeline (dvc repro; extra arguments go to it, e.g. --force), push, summarise."""
    try:
        settings, client = load_settings(StackSettings), load_settings(ClientSettings)
    except ConfigError as exc:
        raise typer.BadParameter(str(exc)) from None
    raise typer.Exit(run(ctx.args, settings, client))


def run(argv: list[str], settings: StackSettings, client: ClientSettings) -> int:
    """Runs ``dvc repro *argv`` in the project; returns its exit status."""
    root = settings.project_root
    env = dict(os.environ)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("WANDB_MODE", "offline")
    configured = client.registry_target if "registry_target" in client.model_fields_set else ""
    with pipeline_registry(settings, configured) as (target, token):
        if token:  # a registry started for this run
            env[TARGET_ENV], env[TOKEN_ENV] = target, token
        repro = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", *argv],
            cwd=root,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        sys.stdout.write(repro.stdout)
        stages = re.findall(r"Running stage '([^']+)'", repro.stdout)
        if repro.returncode == 0:
            push = subprocess.run([sys.executable, "-m", "dvc", "push", "-q"], cwd=root, env=env)
            if push.returncode != 0:
                print("[train] warning: dvc push to the default remote failed", file=sys.stderr)
        print(summary(root, stages, repro.returncode))
        return repro.returncode
