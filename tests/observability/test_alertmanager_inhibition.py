"""The inhibition rules of infra/alertmanager on a real Alertmanager: an alert the monitor posts
itself silences the Prometheus early warning for the same model version (and feature) only; a
variant's 100 ms p99 page silences its 50 ms p99 SLO ticket only."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from finpredict.testkit.monitoring import Daemon, WebhookReceiver, start_alertmanager
from finpredict.testkit.process import wait_for

INFRA = Path(__file__).resolve().parents[2] / "infra"


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Daemon]:
    """One Alertmanager per test: each test sees only the alerts it posted."""
    receiver = WebhookReceiver().start()
    config = (INFRA / "alertmanager" / "alertmanager.dev.yml").read_text()
    daemon = start_alertmanager(tmp_path / "am", config.replace("http://127.0.0.1:9095/alerts", receiver.url))
    yield daemon
    daemon.stop()
    receiver.stop()


def _post(am: Daemon, alerts: list[dict[str, str]]) -> None:
    now = datetime.now(UTC)
    body = [
        {
            "labels": labels,
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(minutes=10)).isoformat(),
        }
        for labels in alerts
    ]
    req = urllib.request.Request(
        f"{am.url}/api/v2/alerts",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200


def _states(am: Daemon) -> dict[tuple[str, ...], dict[str, Any]]:
    key = ("alertname", "model", "version", "feature")
    return {tuple(a["labels"].get(k, "") for k in key): a["status"] for a in am.get_json("/api/v2/alerts")}


def test_the_monitors_own_alert_inhibits_the_prometheus_backstop_of_the_same_version(
    alertmanager: Daemon,
) -> None:
    mv = {"model": "credit-default", "version": "3", "severity": "warning", "team": "ml"}
    _post(
        alertmanager,
        [
            # posted by the monitor (rules.yaml defaults)
            {**mv, "alertname": "FinpredictModelFeaturePsi3d", "rule": "feature_psi_3d", "feature": "debt",
             "service": "monitor"},
            {**mv, "alertname": "FinpredictModelAccuracy1d", "rule": "accuracy_1d", "service": "monitor",
             "severity": "critical"},
            # evaluated by Prometheus on the monitor's gauges
            {**mv, "alertname": "FinpredictFeatureDrift", "feature": "debt"},
            {**mv, "alertname": "FinpredictFeatureDrift", "feature": "sector"},
            {**mv, "alertname": "FinpredictAccuracyDrop", "severity": "critical"},
            {**mv, "alertname": "FinpredictAccuracyDrop", "version": "2", "severity": "critical"},
            {**mv, "alertname": "FinpredictScoreDrift"},
        ],
    )  # fmt: skip

    def all_listed() -> dict[tuple[str, ...], dict[str, Any]] | None:
        listed = _states(alertmanager)
        return listed if len(listed) == 7 else None

    states = wait_for(all_listed, 30, "the 7 alerts listed by Alertmanager")

    def inhibited(*key: str) -> bool:
        return bool(states[key]["inhibitedBy"])

    assert inhibited("FinpredictFeatureDrift", "credit-default", "3", "debt")
    assert inhibited("FinpredictAccuracyDrop", "credit-default", "3", "")
    # another feature, another version, a statistic the monitor has not alerted on: notified
    assert not inhibited("FinpredictFeatureDrift", "credit-default", "3", "sector")
    assert not inhibited("FinpredictAccuracyDrop", "credit-default", "2", "")
    assert not inhibited("FinpredictScoreDrift", "credit-default", "3", "")
    assert not inhibited("FinpredictModelFeaturePsi3d", "credit-default", "3", "debt")


def test_a_variants_p99_page_inhibits_its_slo_ticket_only(alertmanager: Daemon) -> None:
    serving = {"severity": "warning", "slo": "latency", "team": "serving"}
    page = {**serving, "alertname": "FinpredictVariantP99LatencyHigh", "severity": "critical"}
    ticket = {**serving, "alertname": "FinpredictVariantP99AboveSlo"}
    _post(
        alertmanager,
        [
            {**page, "model": "credit-default", "variant": "canary"},
            {**ticket, "model": "credit-default", "variant": "canary"},
            {**ticket, "model": "credit-default", "variant": "stable"},
            {**ticket, "model": "fraud", "variant": "canary"},
        ],
    )
    expected = {
        ("FinpredictVariantP99LatencyHigh", "credit-default", "canary"): False,
        ("FinpredictVariantP99AboveSlo", "credit-default", "canary"): True,
        # another variant of the model, the same variant of another model: notified
        ("FinpredictVariantP99AboveSlo", "credit-default", "stable"): False,
        ("FinpredictVariantP99AboveSlo", "fraud", "canary"): False,
    }

    def inhibited() -> dict[tuple[str, ...], bool] | None:
        got = {
            tuple(a["labels"][k] for k in ("alertname", "model", "variant")): bool(a["status"]["inhibitedBy"])
            for a in alertmanager.get_json("/api/v2/alerts")
        }
        return got if got == expected else None

    wait_for(inhibited, 30, f"Alertmanager to list and inhibit the alerts as {expected}")
