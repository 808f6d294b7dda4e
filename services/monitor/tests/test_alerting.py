"""Acceptance 3: alerts reach a real Alertmanager (API v2) and, through its dev routing, a webhook
receiver, with model / version / feature / rule labels; repeated evaluations post nothing new;
resolutions are delivered; ``WatchAlerts`` streams the same changes."""

from __future__ import annotations

import threading
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest
import yaml

from finpredict.api.monitor.v1 import monitor_pb2 as pb
from finpredict.demo import replay as rp
from finpredict.monitor.config import DEFAULT_RULES_FILE
from finpredict.monitor.service import dt_to_ts
from finpredict.testkit.monitor import MODEL, StartMonitor, stub
from finpredict.testkit.monitoring import Daemon, WebhookReceiver, start_alertmanager
from finpredict.testkit.process import ServiceProcess, wait_for

INFRA = Path(__file__).resolve().parents[3] / "infra"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    receiver = WebhookReceiver().start()
    yield receiver
    receiver.stop()


@pytest.fixture
def alertmanager(tmp_path: Path, webhook: WebhookReceiver) -> Iterator[Daemon]:
    config = (INFRA / "alertmanager" / "alertmanager.dev.yml").read_text()
    assert "http://127.0.0.1:9095/alerts" in config
    daemon = start_alertmanager(tmp_path / "am", config.replace("http://127.0.0.1:9095/alerts", webhook.url))
    yield daemon
    daemon.stop()


def _posts(proc: ServiceProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("finpredict_monitor_alertmanager_posts_total{")]
    assert not [ln for ln in lines if 'result="error"' in ln and not ln.endswith(" 0.0")], lines
    return sum(float(ln.rsplit(" ", 1)[1]) for ln in lines if 'result="ok"' in ln)


def _eval_time(a: pb.Alert) -> object:
    return (a.resolved_at if a.state == pb.ALERT_STATE_RESOLVED else a.started_at).ToDatetime()


def test_alerts_reach_alertmanager_and_webhook_once(
    tmp_path: Path,
    start_monitor: StartMonitor,
    channel_for: Callable[[ServiceProcess], grpc.Channel],
    alertmanager: Daemon,
    webhook: WebhookReceiver,
) -> None:
    # the shipped rules, with the PSI rule on one day (so a short replay fires and resolves it)
    rules = yaml.safe_load(DEFAULT_RULES_FILE.read_text())
    for rule in rules["rules"]:
        if rule["name"] == "feature_psi_3d":
            rule["consecutive"] = 1
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rules))
    proc = start_monitor(
        env={
            "FINPREDICT_MONITOR_ALERTMANAGER_URL": alertmanager.url,
            "FINPREDICT_MONITOR_ALERT_RESEND_S": "3600",
            "FINPREDICT_MONITOR_RULES_FILE": str(tmp_path / "rules.yaml"),
        }
    )
    ch = channel_for(proc)
    watched: list[pb.Alert] = []
    watch = stub(ch).WatchAlerts(pb.WatchAlertsRequest(model=MODEL))

    def read() -> None:
        try:
            watched.extend(r.alert for r in watch)
        except grpc.RpcError as err:  # cancelled by the test at the end
            if err.code() != grpc.StatusCode.CANCELLED:
                raise

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    drift = rp.Scenario(days=2, per_hour=200, drift="new_segment", shift_day=1, seed=51)
    first = rp.replay(ch, rp.generate(drift), MODEL, 1)
    psi = first.firing("feature_psi_3d")
    assert psi, [a.rule for a in first.changes]
    assert first.firing("score_kl_1h")

    def in_alertmanager() -> list[dict[str, object]] | None:
        found = [
            a for a in alertmanager.get_json("/api/v2/alerts") if a["labels"].get("service") == "monitor"
        ]
        rules = {a["labels"]["rule"] for a in found}
        return found if {"feature_psi_3d", "score_kl_1h"} <= rules else None

    am_alerts = wait_for(in_alertmanager, 30, "monitor alerts in Alertmanager")
    psi_labels = [a["labels"] for a in am_alerts if a["labels"]["rule"] == "feature_psi_3d"]  # type: ignore[index]
    assert {lab["feature"] for lab in psi_labels} == {f for a in psi for f in a.features}
    for lab in psi_labels:
        assert lab["alertname"] == "FinpredictModelFeaturePsi3d"
        assert (lab["model"], lab["version"], lab["severity"]) == (MODEL, "1", "warning")
    fingerprints = [a["fingerprint"] for a in am_alerts]  # type: ignore[index]
    assert len(fingerprints) == len(set(fingerprints))

    def webhook_firing() -> set[str] | None:
        got = {a["labels"].get("feature", "") for a in webhook.alerts() if a["status"] == "firing"}
        return got if {lab["feature"] for lab in psi_labels} <= got else None

    wait_for(webhook_firing, 30, "firing PSI alerts at the webhook")

    # a repeated evaluation (and a replayed, all-duplicate hour) changes and posts nothing
    posts = _posts(proc)
    end = rp.START + timedelta(days=2)
    again = stub(ch).EvaluateRules(pb.EvaluateRulesRequest(now=dt_to_ts(end)), timeout=10)
    assert list(again.changed) == []
    last_hour = rp.generate(drift).tail(200)
    dup = stub(ch).IngestPredictions(
        iter([pb.IngestPredictionsRequest(records=rp.to_records(last_hour, MODEL, 1))]), timeout=30
    )
    assert (dup.accepted, dup.duplicates) == (0, 200)

    # recovery: a day without drift resolves the PSI alerts; exactly one post per changed evaluation
    calm = rp.Scenario(days=1, per_hour=200, seed=52, start=end)
    second = rp.replay(ch, rp.generate(calm), MODEL, 1)
    assert {f for a in second.resolved("feature_psi_3d") for f in a.features} == {
        f for a in psi for f in a.features
    }
    evaluations_with_changes = len({_eval_time(a) for a in second.changes})
    wait_for(lambda: _posts(proc) >= posts + evaluations_with_changes, 30, "the resolutions posted")
    assert _posts(proc) == posts + evaluations_with_changes

    def webhook_resolved() -> bool:
        resolved = {a["labels"].get("feature") for a in webhook.alerts() if a["status"] == "resolved"}
        return {lab["feature"] for lab in psi_labels} <= resolved

    wait_for(webhook_resolved, 30, "resolved PSI alerts at the webhook")
    # the stream saw every change, in order
    wait_for(lambda: len(watched) >= len(first.changes) + len(second.changes), 10, "WatchAlerts")
    assert [(a.id, a.state) for a in watched] == [(a.id, a.state) for a in [*first.changes, *second.changes]]
    watch.cancel()
    reader.join(timeout=10)
