"""The main job (``task demo``): start the platform on embedded defaults and walk through it.

Each step prints what it does and what it measured; the run ends with a summary table.
By default the stack is stopped at the end; ``--keep`` leaves it running for exploration
(stop it with ``task down``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rich.console import Console
from rich.table import Table

import drift_core
from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import stack

console = Console()


@dataclass
class Summary:
    rows: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, step: str, outcome: str, measured: str = "") -> None:
        self.rows.append((step, outcome, measured))


def step_start_stack(summary: Summary, ctx: dict[str, str]) -> None:
    t0 = time.perf_counter()
    for service in stack.SERVICES:
        stack.start(service)
    ctx.update(stack.targets())
    summary.add("start the stack", f"{len(ctx)} services healthy", f"{time.perf_counter() - t0:.1f} s")


def step_discover(summary: Summary, ctx: dict[str, str]) -> None:
    table = Table("service", "address", "gRPC services (reflection)")
    for service, target in ctx.items():
        with grpc.insecure_channel(target) as channel:
            names = sorted(ProtoReflectionDescriptorDatabase(channel).get_services())
        table.add_row(service, target, "\n".join(names))
    console.print(table)
    summary.add("discover services", "health SERVING, reflection lists every API")


def step_open_inference_protocol(summary: Summary, ctx: dict[str, str]) -> None:
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


def step_drift_histogram(summary: Summary, ctx: dict[str, str]) -> None:
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


STEPS: list[tuple[str, Callable[[Summary, dict[str, str]], None]]] = [
    ("Start the stack on embedded defaults", step_start_stack),
    ("Discover the services", step_discover),
    ("Call the gateway with the Open Inference Protocol", step_open_inference_protocol),
    ("Score drift with the Rust core", step_drift_histogram),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", action="store_true", help="leave the stack running (stop with `task down`)")
    args = parser.parse_args()
    summary = Summary()
    ctx: dict[str, str] = {}
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
