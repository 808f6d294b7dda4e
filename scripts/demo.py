"""The main job (``task demo``): start the platform on embedded defaults and walk through it.

Each step prints what it does and what it measured; the run ends with a summary table.
By default the stack is stopped at the end; ``--keep`` leaves it running for exploration
(stop it with ``task down``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import polars as pl
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rich.console import Console
from rich.table import Table

import drift_core
from finpredict.api.common.v1 import types_pb2
from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.api.registry.v1 import registry_pb2, registry_pb2_grpc
from finpredict.api.serving.v1 import model_server_pb2, model_server_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack

console = Console()
ROOT = Path(__file__).resolve().parent.parent
MODEL = "credit-default"
Ctx = dict[str, str]


def _admin(ctx: Ctx) -> tuple[tuple[str, str | bytes], ...]:
    return (("authorization", f"Bearer {ctx['admin_token']}"),)


def _registry(ctx: Ctx) -> registry_pb2_grpc.RegistryServiceStub:
    return registry_pb2_grpc.RegistryServiceStub(grpc.insecure_channel(ctx["registry"]))


@dataclass
class Summary:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, step: str, outcome: str, measured: str = "") -> None:
        self.rows.append((step, outcome, measured))


def step_start_stack(summary: Summary, ctx: Ctx) -> None:
    t0 = time.perf_counter()
    console.print("  (the model server starts a local Ray and deploys its Serve app: about a minute)")
    # The demo replays into a monitor of its own, so earlier runs' logs and alerts do not mix in.
    demo_monitor = stack.RUN_DIR / "demo" / "monitor"
    stack.stop("monitor")
    shutil.rmtree(demo_monitor, ignore_errors=True)
    ctx["profiles_dir"] = str(demo_monitor / "profiles")
    monitor_env = {
        "FINPREDICT_MONITOR_DATA_DIR": str(demo_monitor),
        "FINPREDICT_MONITOR_PROFILES_DIR": ctx["profiles_dir"],
    }
    for service in stack.SERVICES:
        stack.start(service, env=monitor_env if service == "monitor" else None)
    ctx.update(stack.targets())
    ready = json.loads((stack.RUN_DIR / "model-server.ready.json").read_text())
    ctx["serve"] = f"127.0.0.1:{ready['serve_grpc_port']}"
    ctx["admin_token"] = stack.local_secrets()["FINPREDICT_TOKEN"]
    ctx["writer_token"] = stack.local_secrets()["FINPREDICT_REGISTRY_TOKEN"]
    summary.add(
        "start the stack", f"{len(stack.SERVICES)} services healthy", f"{time.perf_counter() - t0:.1f} s"
    )


def step_discover(summary: Summary, ctx: Ctx) -> None:
    table = Table("service", "address", "gRPC services (reflection)")
    for service, target in ((s, ctx[s]) for s in stack.SERVICES):
        with grpc.insecure_channel(target) as channel:
            names = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
        table.add_row(service, target, "\n".join(names))
    console.print(table)
    summary.add("discover services", "health SERVING, reflection lists every API")


def step_open_inference_protocol(summary: Summary, ctx: Ctx) -> None:
    with grpc.insecure_channel(ctx["gateway"]) as channel:
        stub = oip_grpc.GRPCInferenceServiceStub(channel)
        t0 = time.perf_counter()
        live = stub.ServerLive(oip.ServerLiveRequest(), timeout=5).live
        rtt_ms = (time.perf_counter() - t0) * 1000
        ready = stub.ServerReady(oip.ServerReadyRequest(), timeout=5).ready
        meta = stub.ServerMetadata(oip.ServerMetadataRequest(), timeout=5)
        try:
            stub.ModelInfer(oip.ModelInferRequest(model_name="credit-risk"), timeout=5)
            infer = "answered"
        except grpc.RpcError as err:
            infer = f"{err.code().name}: {err.details()}"
    console.print(f"  Open Inference Protocol: live={live} ready={ready} server={meta.name} {meta.version}")
    console.print(f"  ModelInfer: {infer}")
    summary.add(
        "Open Inference Protocol on the gateway", f"live={live}, ready={ready}", f"{rtt_ms:.1f} ms RTT"
    )


def step_drift_histogram(summary: Summary, ctx: Ctx) -> None:
    rng = np.random.default_rng(7)
    reference = rng.lognormal(mean=11.0, sigma=0.6, size=200_000)  # e.g. annual revenue
    edges = np.quantile(reference, np.linspace(0.1, 0.9, 9))
    current = reference * 0.8  # a recession: revenue down 20%
    current[rng.random(current.size) < 0.05] = np.nan  # an upstream feed starts dropping values
    t0 = time.perf_counter()
    ref_counts, _ = drift_core.histogram_counts(reference, edges)
    cur_counts, missing = drift_core.histogram_counts(current, edges)
    ms = (time.perf_counter() - t0) * 1000
    e = np.append(ref_counts, 0) / reference.size
    a = np.append(cur_counts, missing) / current.size
    eps = 1e-4
    psi = float(
        np.sum((np.maximum(a, eps) - np.maximum(e, eps)) * np.log(np.maximum(a, eps) / np.maximum(e, eps)))
    )
    console.print(
        f"  reference deciles vs a recession batch: PSI={psi:.3f} (alert threshold 0.25), "
        f"{missing} missing values counted in their own bucket"
    )
    summary.add("drift_core histogram (Rust)", f"PSI {psi:.3f}", f"{ms:.1f} ms for 2 x 200k values")


def step_train(summary: Summary, ctx: Ctx) -> None:
    """Trains through the DVC pipeline (W&B offline) and registers the version in the stack's registry."""
    stub = _registry(ctx)
    try:
        stub.CreateModel(
            registry_pb2.CreateModelRequest(name=MODEL, description="SME credit default"),
            metadata=_admin(ctx),
            timeout=10,
        )
    except grpc.RpcError as err:
        if err.code() != grpc.StatusCode.ALREADY_EXISTS:
            raise
    env = {
        **os.environ,
        "FINPREDICT_REGISTRY_TARGET": ctx["registry"],
        "FINPREDICT_REGISTRY_TOKEN": ctx["writer_token"],
        "WANDB_MODE": os.environ.get("WANDB_MODE", "offline"),
    }
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "scripts" / "train.py")], env=env, cwd=ROOT, check=True)
    registration = json.loads((ROOT / "reports" / "registration.json").read_text())
    version = int(registration["version"])
    try:
        stub.GetVersion(
            registry_pb2.GetVersionRequest(model=MODEL, version=version), metadata=_admin(ctx), timeout=10
        )
    except grpc.RpcError as err:  # the DVC cache is warm but this registry is new: register again
        if err.code() != grpc.StatusCode.NOT_FOUND:
            raise
        subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "train.py"), "--force", "--single-item", "register"],
            env=env,
            cwd=ROOT,
            check=True,
        )
        version = int(json.loads((ROOT / "reports" / "registration.json").read_text())["version"])
    ctx["version"] = str(version)
    summary.add(
        "train v1 (DVC, W&B offline, gates)",
        f"{MODEL} v{version} registered",
        f"{time.perf_counter() - t0:.0f} s",
    )


def step_promote(summary: Summary, ctx: Ctx) -> None:
    stub, version = _registry(ctx), int(ctx["version"])
    lineage = stub.GetLineage(
        registry_pb2.GetLineageRequest(model=MODEL, version=version), metadata=_admin(ctx), timeout=10
    )
    table = Table("gate", "value", "threshold", "passed", title=f"{MODEL} v{version}: gates and lineage")
    for g in lineage.gate_results:
        table.add_row(g.name, f"{g.value:.4f}", f"{g.threshold:g}", "yes" if g.passed else "NO")
    console.print(table)
    lin = lineage.lineage
    console.print(
        f"  git {lin.git_commit[:12]}, data md5 {dict(lin.data_md5)}, dvc.lock sha256 "
        f"{lin.dvc_lock_sha256[:12]}, W&B run {lin.wandb_run_path} ({lin.wandb_link_status or 'n/a'})"
    )
    current = stub.GetModel(registry_pb2.GetModelRequest(name=MODEL), metadata=_admin(ctx), timeout=10)
    expected = current.model.aliases.get("production", 0)
    if expected != version:
        stub.SetAlias(
            registry_pb2.SetAliasRequest(
                model=MODEL,
                alias="production",
                version=version,
                expected_version=expected,
                reason="demo: all gates passed",
            ),
            metadata=_admin(ctx),
            timeout=10,
        )
    summary.add(
        "promote to production",
        f"production -> v{version} (compare-and-set, audited)",
        ", ".join(f"{g.name}={g.value:.3f}" for g in lineage.gate_results),
    )


def _feature_rows(frame: object, version: int) -> list[model_server_pb2.FeatureRow]:
    from finpredict.monitor import replay

    records = replay.to_records(frame, MODEL, version)  # type: ignore[arg-type]
    return [model_server_pb2.FeatureRow(features=r.features) for r in records]


def step_score(summary: Summary, ctx: Ctx) -> None:
    """Scores applications on the Ray Serve model server, with adverse-action reason codes."""
    from finpredict.monitor import replay

    version = int(ctx["version"])
    stream = replay.generate(replay.Scenario(days=1, per_hour=10, seed=5))
    rows = _feature_rows(stream, version)
    stub = model_server_pb2_grpc.ModelServerServiceStub(grpc.insecure_channel(ctx["serve"]))
    metadata: tuple[tuple[str, str | bytes], ...] = (
        ("application", "model-server"),
        ("multiplexed_model_id", f"{MODEL}:{version}"),
    )
    ref = types_pb2.ModelRef(name=MODEL, version=version)
    latencies = []
    for row in rows[:200]:
        t0 = time.perf_counter()
        stub.Predict(model_server_pb2.PredictRequest(model=ref, rows=[row]), metadata=metadata, timeout=10)
        latencies.append((time.perf_counter() - t0) * 1000)
    batch = stub.Predict(
        model_server_pb2.PredictRequest(model=ref, rows=rows, explain=True, top_k=3),
        metadata=metadata,
        timeout=30,
    )
    worst = max(range(len(rows)), key=lambda i: batch.predictions[i].score)
    console.print(
        f"  {len(rows)} applications scored by v{batch.model.version}; the riskiest "
        f"(P(default)={batch.predictions[worst].score:.2f}, threshold {batch.threshold:g}) "
        "is declined because:"
    )
    for rc in batch.predictions[worst].reason_codes:
        console.print(f"    {rc.code} {rc.description} (contribution {rc.contribution:+.2f} log-odds)")
    p50, p99 = np.percentile(latencies, [50, 99])
    ctx["p50_ms"], ctx["p99_ms"] = f"{p50:.1f}", f"{p99:.1f}"
    summary.add(
        "score on Ray Serve (gRPC ingress)",
        f"{len(rows)} scored, reason codes for declines",
        f"single-row p50 {p50:.1f} ms, p99 {p99:.1f} ms",
    )


def step_monitor_recession(summary: Summary, ctx: Ctx) -> None:
    """Replays days 7-14 with a recession from day 10 through the monitor, scored by the real model."""
    from finpredict.api.monitor.v1 import monitor_pb2
    from finpredict.monitor import replay

    version = int(ctx["version"])
    mv = (
        _registry(ctx)
        .GetVersion(
            registry_pb2.GetVersionRequest(model=MODEL, version=version), metadata=_admin(ctx), timeout=10
        )
        .version
    )
    profiles = Path(ctx["profiles_dir"]) / MODEL
    profiles.mkdir(parents=True, exist_ok=True)
    (profiles / f"{version}.bin").write_bytes(mv.reference_profile)  # the monitor compares with it
    sc = replay.Scenario(
        days=14, first_day=7, per_hour=200, drift="recession", shift_day=10, threshold=mv.threshold, seed=21
    )
    stream = replay.generate(sc)
    rows = _feature_rows(stream, version)
    stub = model_server_pb2_grpc.ModelServerServiceStub(grpc.insecure_channel(ctx["serve"]))
    metadata: tuple[tuple[str, str | bytes], ...] = (
        ("application", "model-server"),
        ("multiplexed_model_id", f"{MODEL}:{version}"),
    )
    ref = types_pb2.ModelRef(name=MODEL, version=version)
    scores: list[float] = []
    t0 = time.perf_counter()
    for i in range(0, len(rows), 500):  # the real model scores the replayed traffic, 500 rows a call
        resp = stub.Predict(
            model_server_pb2.PredictRequest(model=ref, rows=rows[i : i + 500]), metadata=metadata, timeout=60
        )
        scores.extend(p.score for p in resp.predictions)
    stream = stream.with_columns(pl.Series("score", scores))
    console.print(
        f"  {len(rows)} predictions over {sc.days - sc.first_day} simulated days scored in "
        f"{time.perf_counter() - t0:.0f} s; replaying them through the monitor ..."
    )
    with grpc.insecure_channel(ctx["monitor"]) as channel:
        result = replay.replay(channel, stream, MODEL, version)
    firings = [a for a in result.changes if a.state == monitor_pb2.ALERT_STATE_FIRING]
    table = Table("rule", "fired (simulated)", "after the shift", "features", "value")
    first_alert_h = None
    for alert in firings:
        started = alert.started_at.ToDatetime().replace(tzinfo=sc.shift_time.tzinfo)
        hours = (started - sc.shift_time).total_seconds() / 3600
        first_alert_h = hours if first_alert_h is None else min(first_alert_h, hours)
        table.add_row(
            alert.rule,
            started.strftime("%b %d %H:%M"),
            f"{hours:.0f} h",
            ", ".join(alert.features) or "-",
            f"{alert.value:.3f}",
        )
    console.print(table)
    ctx["time_to_detect_h"] = f"{first_alert_h:.0f}" if first_alert_h is not None else "never"
    summary.add(
        "recession replay through the monitor",
        f"{len(firings)} alert firings ({', '.join(sorted({a.rule for a in firings}))})",
        f"first alert {ctx['time_to_detect_h']} h after the shift (seed case study: 3 weeks)",
    )


STEPS: list[tuple[str, Callable[[Summary, Ctx], None]]] = [
    ("Start the stack on embedded defaults", step_start_stack),
    ("Discover the services", step_discover),
    ("Train v1 through the DVC pipeline and register it", step_train),
    ("Check the gates and lineage, promote to production", step_promote),
    ("Score applications on the Ray Serve model server", step_score),
    ("Replay a recession through the monitor", step_monitor_recession),
    ("Call the gateway with the Open Inference Protocol", step_open_inference_protocol),
    ("Score drift with the Rust core", step_drift_histogram),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the stack running (stop with `task down`)")
    args = parser.parse_args()
    summary = Summary()
    ctx: Ctx = {}
    t0 = time.perf_counter()
    ok = True
    try:
        for number, (title, step) in enumerate(STEPS, 1):
            console.rule(f"[bold]{number}. {title}")
            step(summary, ctx)
    except Exception as exc:
        ok = False
        console.print(f"[red]demo step failed: {exc}")
        raise
    finally:
        if not args.keep:
            console.rule("stopping the stack")
            for service in reversed(stack.SERVICES):
                stack.stop(service)
        table = Table("step", "outcome", "measured", title="finpredict demo summary")
        for row in summary.rows:
            table.add_row(*row)
        console.print(table)
        console.print(f"total {time.perf_counter() - t0:.1f} s" + ("" if ok else " (failed)"))
        if args.keep:
            console.print("the stack is still running: `task down` stops it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
