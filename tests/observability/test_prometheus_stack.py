"""A real Prometheus scrapes a real gateway; its SLIs match what the client measured, latency
buckets carry trace exemplars, and a real Alertmanager delivers the resulting alert."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import yaml

from finpredict.api.inference import grpc_predict_v2_pb2 as pb
from finpredict.api.inference import grpc_predict_v2_pb2_grpc as pb_grpc
from finpredict.common.interceptors import TRACE_ID_KEY
from finpredict.common.metrics import LATENCY_BUCKETS
from finpredict.testkit.monitoring import (
    Daemon,
    WebhookReceiver,
    start_alertmanager,
    start_prometheus,
)
from finpredict.testkit.process import ServiceProcess, start_service, wait_for

INFRA = Path(__file__).resolve().parents[2] / "infra"
METHOD = "/inference.GRPCInferenceService/ServerMetadata"
REQUESTS = 300


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    proc = start_service("gateway", tmp_path_factory.mktemp("gateway"))
    yield proc
    proc.stop()


@pytest.fixture(scope="module")
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture(scope="module")
def alertmanager(tmp_path_factory: pytest.TempPathFactory, webhook: WebhookReceiver) -> Iterator[Daemon]:
    config = (INFRA / "alertmanager" / "alertmanager.dev.yml").read_text()
    config = config.replace("http://127.0.0.1:9095/alerts", webhook.url)
    daemon = start_alertmanager(tmp_path_factory.mktemp("alertmanager"), config)
    yield daemon
    daemon.stop()


def _fast_rules() -> dict[str, str]:
    """The project's rule files, evaluated every second, with the p99 alert's threshold made tiny
    (and no `for`) so that real traffic on a healthy gateway fires it within seconds."""
    recording = yaml.safe_load((INFRA / "prometheus" / "rules" / "recording.yml").read_text())
    for group in recording["groups"]:
        group["interval"] = "1s"
    alerts = yaml.safe_load((INFRA / "prometheus" / "rules" / "alerts.yml").read_text())
    (p99,) = [r for g in alerts["groups"] for r in g["rules"] if r.get("alert") == "FinpredictP99LatencyHigh"]
    assert "p99_5m > 0.1" in p99["expr"], "the test rewrites the real rule's threshold"
    p99["expr"] = p99["expr"].replace("p99_5m > 0.1", "p99_5m > 0.000001")
    p99["for"] = "0s"
    alerts["groups"] = [{"name": "test", "interval": "1s", "rules": [p99]}]
    return {"recording.yml": yaml.safe_dump(recording), "alerts.yml": yaml.safe_dump(alerts)}


@pytest.fixture(scope="module")
def prometheus(
    tmp_path_factory: pytest.TempPathFactory, gateway: ServiceProcess, alertmanager: Daemon
) -> Iterator[Daemon]:
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": ["recording.yml", "alerts.yml"],
        "alerting": {
            "alertmanagers": [{"static_configs": [{"targets": [f"127.0.0.1:{alertmanager.port}"]}]}]
        },
        "scrape_configs": [
            {
                "job_name": "finpredict-gateway",
                "static_configs": [{"targets": [f"127.0.0.1:{gateway.metrics_port}"]}],
            },
        ],
    }
    daemon = start_prometheus(tmp_path_factory.mktemp("prometheus"), config, _fast_rules())
    yield daemon
    daemon.stop()


@pytest.fixture(scope="module")
def traffic(gateway: ServiceProcess, prometheus: Daemon) -> dict[str, Any]:
    """Sequential ServerMetadata calls: client-side latencies and the trace ids returned."""
    latencies, trace_ids = [], []
    with grpc.insecure_channel(gateway.target) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5)  # warm the connection (counted too)
        # rate() needs a sample from before the traffic: wait until the first call was scraped.
        wait_for(
            lambda: _query(prometheus, f'finpredict_grpc_server_handled_total{{grpc_method="{METHOD}"}}'),
            30,
            "the first scrape of the gateway",
        )
        for _ in range(REQUESTS - 1):
            t0 = time.perf_counter()
            _, call = stub.ServerMetadata.with_call(pb.ServerMetadataRequest(), timeout=5)
            latencies.append(time.perf_counter() - t0)
            trace_ids.append(dict(call.trailing_metadata())[TRACE_ID_KEY])
    return {"latencies": np.array(latencies), "trace_ids": trace_ids}


def _query(prometheus: Daemon, expr: str) -> list[dict[str, Any]]:
    body = prometheus.get_json("/api/v1/query", query=expr)
    assert body["status"] == "success", body
    return body["data"]["result"]  # type: ignore[no-any-return]


def test_scraped_count_and_p99_match_the_client(prometheus: Daemon, traffic: dict[str, Any]) -> None:
    count_expr = f'sum(finpredict_grpc_server_handled_total{{service="gateway",grpc_method="{METHOD}"}})'
    wait_for(
        lambda: (r := _query(prometheus, count_expr)) and float(r[0]["value"][1]) == REQUESTS,
        30,
        f"Prometheus to scrape all {REQUESTS} requests",
    )

    p99_expr = (
        "histogram_quantile(0.99, sum by (le) (rate(finpredict_grpc_server_handling_seconds_bucket"
        f'{{service="gateway",grpc_method="{METHOD}"}}[5m])))'
    )
    server_p99 = float(_query(prometheus, p99_expr)[0]["value"][1])
    client_p99 = float(np.quantile(traffic["latencies"], 0.99))
    # Server time is part of client time; the histogram interpolates inside a bucket, so the
    # server's p99 can exceed the client's only up to the upper bound of the client's bucket.
    bound = next(b for b in LATENCY_BUCKETS if b >= client_p99)
    assert 0 < server_p99 <= bound, (server_p99, client_p99, bound)

    # The recording rule for the SLI agrees with the raw query.
    wait_for(
        lambda: _query(prometheus, 'finpredict:grpc_server_latency_seconds:p99_5m{service="gateway"}'),
        30,
        "the p99 recording rule to be evaluated",
    )
    sli = _query(prometheus, 'finpredict:grpc_server_latency_seconds:p99_5m{service="gateway"}')
    assert 0 < float(sli[0]["value"][1]) <= bound


def test_latency_buckets_carry_trace_exemplars(prometheus: Daemon, traffic: dict[str, Any]) -> None:
    def exemplar_trace_ids() -> set[str]:
        end = time.time()
        body = prometheus.get_json(
            "/api/v1/query_exemplars",
            query=f'finpredict_grpc_server_handling_seconds_bucket{{service="gateway",grpc_method="{METHOD}"}}',
            start=str(end - 600),
            end=str(end),
        )
        return {e["labels"]["trace_id"] for series in body["data"] for e in series["exemplars"]}

    found = wait_for(lambda: exemplar_trace_ids() & set(traffic["trace_ids"]), 30, "exemplars in Prometheus")
    assert found <= set(traffic["trace_ids"])


def test_alert_reaches_the_webhook_through_alertmanager(
    prometheus: Daemon, alertmanager: Daemon, webhook: WebhookReceiver, traffic: dict[str, Any]
) -> None:
    def delivered() -> list[dict[str, Any]]:
        return [
            a
            for a in webhook.alerts()
            if a["labels"].get("alertname") == "FinpredictP99LatencyHigh" and a["status"] == "firing"
        ]

    alerts = wait_for(delivered, 60, "the p99 alert at the webhook receiver")
    assert alerts[0]["labels"]["service"] == "gateway"
    assert alerts[0]["labels"]["severity"] == "critical"
    assert "gateway p99 latency is" in alerts[0]["annotations"]["summary"]
    # Alertmanager itself lists it as active.
    active = alertmanager.get_json("/api/v2/alerts")
    assert any(a["labels"]["alertname"] == "FinpredictP99LatencyHigh" for a in active)


# The dashboards whose every query this stack (a gateway serving gRPC calls) answers: the service
# SLOs. The canary dashboard needs scored applications and joins once a test here scores through
# the gateway; the model-quality one is checked on a real monitor in test_dashboards.py, and every
# dashboard's metric names are checked against the services' real /metrics there too.
DASHBOARDS = [INFRA / "grafana" / "dashboards" / "finpredict-slo.json"]


def _panel_queries() -> list[tuple[str, str]]:
    import json

    out = []
    for path in DASHBOARDS:
        for panel in json.loads(path.read_text())["panels"]:
            out.extend((f"{path.name}: {panel['title']}", t["expr"]) for t in panel.get("targets", []))
    return out


def test_every_dashboard_query_returns_data_from_the_running_stack(
    prometheus: Daemon, traffic: dict[str, Any]
) -> None:
    queries = _panel_queries()
    assert queries, "no dashboard panels found"
    # Recording rules are evaluated every second here; give every one a first evaluation.
    for panel, expr in queries:
        wait_for(lambda expr=expr: _query(prometheus, expr), 30, f"data for panel {panel!r}: {expr}")
