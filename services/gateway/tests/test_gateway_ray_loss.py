"""The gateway when its whole Ray instance dies under load.

Destructive (nothing restarts Ray), so it has a module and therefore a stack of its own
(conftest's module-scoped ``stack``); test_gateway_e2e.py covers the faults the stack survives.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from finpredict.api.inference import grpc_predict_v2_pb2 as oip
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as oip_grpc
from finpredict.api.rollout.v1 import rollout_pb2 as rpb
from finpredict.testkit.gateway import (
    CLIENT,
    Stack,
    TimedTraffic,
    cluster_pids,
    gateway_counts,
    median_s,
    production_version,
    report_fault,
)
from finpredict.testkit.process import wait_for
from finpredict.testkit.scrape import metric_value

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_whole_ray_killed_under_load_clients_get_unavailable(stack: Stack) -> None:
    """kill -9 of the whole Ray instance (the `ray start --head --block` process group: GCS,
    raylet, Serve controller, proxy, replicas). Every client call ends before its deadline with
    UNAVAILABLE (never another code, never a hang); the gateway's circuit opens and calls fail
    fast; ModelReady says false.

    The gateway's gRPC health stays SERVING on purpose: it reports whether the gateway process
    can take calls, which it can (the rollout API, reads and clean UNAVAILABLE answers all
    work). Marking it NOT_SERVING because its one backend is down would make a load balancer
    drop every gateway replica at once and turn a fast, explained UNAVAILABLE into connection
    errors, with nothing gained; the backend's state is reported by ModelReady (Open Inference
    Protocol) and finpredict_gateway_circuit_open, which the alerts use.

    Nothing restarts Ray, so this test has a module (and a stack) of its own; the stack's
    teardown must still work without Ray (it does: the model-server driver has ended by itself,
    see below, and the other stops are by pid)."""
    gw = stack.gateway
    version = str(production_version(stack))
    ready_file = stack.tmp / "model-server" / "model-server.ready.json"
    ms_control = f"127.0.0.1:{json.loads(ready_file.read_text())['port']}"
    rollouts_before = [
        r.id
        for r in stack.client.rollouts.ListRollouts(
            rpb.ListRolloutsRequest(), metadata=CLIENT, timeout=10
        ).rollouts
    ]
    before = gateway_counts(gw.metrics_port, stack.model)
    with TimedTraffic(gw.target, stack.model) as traffic:
        traffic.wait_ok(time.monotonic(), 5, 60, "traffic before the fault")
        killed_at = time.monotonic()
        os.killpg(stack.ray.proc.pid, signal.SIGKILL)
        stack.ray.proc.wait(timeout=30)
        wait_for(lambda: not cluster_pids(stack.ray), 30, "every process of the Ray instance to exit")
        wait_for(
            lambda: (
                metric_value(
                    gw.metrics_port, "finpredict_gateway_circuit_open", model=stack.model, version=version
                )
                == 1
            ),
            30,
            "the circuit to open",
        )
        opened_s = time.monotonic() - killed_at
        wait_for(
            lambda: sum("circuit" in r.details for r in traffic.errors_after(killed_at)) >= 10,
            30,
            "calls to fail fast",
        )
    after_kill = [r for r in traffic.snapshot() if r.ended >= killed_at]
    codes_after = Counter(r.code for r in after_kill)
    counted = wait_for(
        lambda: (d := gateway_counts(gw.metrics_port, stack.model) - before).handled == traffic.codes and d,
        30,
        "the gateway's counts to match the clients'",
    )
    stub = oip_grpc.GRPCInferenceServiceStub(stack.client.channel)
    ready = stub.ModelReady(oip.ModelReadyRequest(name=stack.model), metadata=CLIENT, timeout=10).ready
    fast = [r.ended - r.started for r in after_kill if "circuit" in r.details]
    report_fault(
        "whole Ray kill -9",
        client_codes_after_kill=dict(codes_after),
        circuit_opened_after_s=round(opened_s, 2),
        longest_call_s=round(traffic.longest_call_s(), 3),
        fail_fast_median_s=median_s(fast),
        retries=counted.retries,
        handled=dict(counted.handled),
    )
    assert set(codes_after) - {"OK"} == {"UNAVAILABLE"}, codes_after  # OK: answered just before the kill
    assert traffic.longest_call_s() < traffic.timeout / 2, traffic.longest_call_s()  # never a hang
    assert ready is False
    assert gw.health() == health_pb2.HealthCheckResponse.SERVING
    assert stub.ServerLive(oip.ServerLiveRequest(), timeout=10).live
    listed = stack.client.rollouts.ListRollouts(rpb.ListRolloutsRequest(), metadata=CLIENT, timeout=10)
    assert [r.id for r in listed.rollouts] == rollouts_before  # the gateway's own API still answers

    # The model server's control plane: its health follows the Serve app only as long as Ray's
    # GCS answers; with Ray gone, `serve.status()` blocks and the driver process ends itself once
    # Ray's GCS reconnect timeout (60 s by default) has passed. Waiting for that here costs no
    # more than the teardown would (stopping the driver waits for the same timeout).
    def ms_serving() -> bool:
        try:
            with grpc.insecure_channel(ms_control) as ch:
                status = (
                    health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=5).status
                )
        except grpc.RpcError:
            return False  # the process is gone
        return bool(status == health_pb2.HealthCheckResponse.SERVING)

    wait_for(lambda: not ms_serving(), 90, "the model server to stop serving")
    print(
        f"[fault] whole Ray kill -9: model server stopped serving after {time.monotonic() - killed_at:.1f} s"
    )
